/**
 * A VM's checkpoint tree as the Sandbox VMs view shows it, as plain data (no vscode import,
 * unit-tested in test/unit/checkpoint-items.test.ts): the service's CheckpointList turned into
 * nested items, Hyper-V's way: each checkpoint under the one it was taken after, and "Now" as the
 * last child of the checkpoint the VM sits on. Runs of undo points are folded so a task run ten
 * times does not bury the named checkpoints: a chain of undo points is shown as one collapsed
 * "N undo points" item (a single one as a plain leaf), followed at the same level by what came after
 * the chain. Also each item's look: codicon, label, description and Markdown tooltip.
 */
import type { CheckpointList } from '../../runtime/service/checkpoints';
import type { CheckpointView } from '../../runtime/service/checkpointTree';
import type { VmState } from '../../runtime/common/status';
import { ItemContext } from '../ids';

export type CheckpointItem =
  | { kind: 'checkpoint'; key: string; view: CheckpointView; children: CheckpointItem[] }
  /** A folded chain of undo points, newest first; `key` stays the same while the chain grows and is pruned. */
  | { kind: 'undoGroup'; key: string; points: CheckpointView[] }
  | { kind: 'now'; key: string };

/** The items under the VM's "Checkpoints" item; empty when the VM has no checkpoint. */
export function checkpointItems(list: Pick<CheckpointList, 'tree' | 'position'>): CheckpointItem[] {
  if (list.tree.length === 0) return [];
  return level(list.tree, list.position === undefined, 'root');
}

function level(children: CheckpointView[], nowHere: boolean, parentKey: string): CheckpointItem[] {
  const out: CheckpointItem[] = [];
  let now = nowHere;
  for (const c of children) {
    if (!c.undo) {
      out.push({ kind: 'checkpoint', key: c.id, view: c, children: level(c.children, c.current, c.id) });
      continue;
    }
    const chain = [c];
    let end = c;
    while (!end.current && end.children.length === 1 && end.children[0].undo) {
      end = end.children[0];
      chain.push(end);
    }
    if (chain.length === 1) out.push({ kind: 'checkpoint', key: c.id, view: { ...c, children: [] }, children: [] });
    else out.push({ kind: 'undoGroup', key: `undo-${parentKey}-${out.length}`, points: chain.reverse() });
    out.push(...level(end.children, false, end.id));
    now ||= end.current;
  }
  if (now) out.push({ kind: 'now', key: 'now' });
  return out;
}

/** Every item of `items` and below, with its parent's key (undefined at the top), depth first. */
export function flatten(items: CheckpointItem[], parent?: string): { item: CheckpointItem; parent?: string }[] {
  const out: { item: CheckpointItem; parent?: string }[] = [];
  for (const item of items) {
    out.push({ item, parent });
    if (item.kind === 'checkpoint') out.push(...flatten(item.children, item.key));
    if (item.kind === 'undoGroup') for (const p of item.points) out.push({ item: { kind: 'checkpoint', key: p.id, view: { ...p, children: [] }, children: [] }, parent: item.key });
  }
  return out;
}

/** How many named checkpoints and undo points the tree holds. */
export function countCheckpoints(tree: CheckpointView[]): { named: number; undo: number } {
  const n = { named: 0, undo: 0 };
  const walk = (vs: CheckpointView[]) => {
    for (const v of vs) {
      if (v.undo) n.undo++;
      else n.named++;
      walk(v.children);
    }
  };
  walk(tree);
  return n;
}

export interface ItemLook {
  icon: string;
  /** A theme colour id, or undefined for the default foreground. */
  color?: string;
  label: string;
  description: string;
  /** Markdown. */
  tooltip: string;
  contextValue: string;
}

const STATE_WORD: Record<CheckpointView['state'], string> = { running: 'running', paused: 'paused', saved: 'saved', stopped: 'off' };
const STATE_MEANING: Record<CheckpointView['state'], string> = {
  running: 'disk and memory: applying it brings the VM back running',
  paused: 'disk and memory: applying it brings the VM back paused',
  saved: 'disk and saved state: applying it leaves the VM saved, Start restores it',
  stopped: 'disk only: applying it leaves the VM off',
};

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 2 ** 20) return `${Math.round(bytes / 1024)} KiB`;
  if (bytes < 100 * 2 ** 20) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  if (bytes < 2 ** 30) return `${Math.round(bytes / 2 ** 20)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number) => String(n).padStart(2, '0');

/** When a checkpoint was taken, short (local time): "14:05" today, "Nov 29 14:05" before. */
export function formatWhen(iso: string, now: Date): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return 'unknown time';
  const time = `${two(d.getHours())}:${two(d.getMinutes())}`;
  const sameDay = d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  return sameDay ? time : `${MONTHS[d.getMonth()]} ${d.getDate()}${d.getFullYear() === now.getFullYear() ? '' : ` ${d.getFullYear()}`} ${time}`;
}

/** Markdown-escapes text that came from a user or the disk. */
function md(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, (c) => `\\${c}`);
}

export function checkpointLook(v: CheckpointView, now = new Date()): ItemLook {
  const when = formatWhen(v.createdAt, now);
  const lines = [`**${md(v.name)}**${v.undo ? ' (undo point)' : ''}`, ''];
  lines.push(`- Taken ${md(new Date(v.createdAt).toLocaleString())}${v.pausedMs !== undefined ? `, the guest paused ${v.pausedMs} ms` : ''}`);
  lines.push(`- ${STATE_WORD[v.state][0].toUpperCase()}${STATE_WORD[v.state].slice(1)}: ${STATE_MEANING[v.state]}`);
  lines.push(`- ${formatBytes(v.sizeBytes)} on disk`);
  if (v.note) lines.push(`- ${md(v.note)}`);
  if (v.current) lines.push('- The VM sits on this checkpoint (Now is below it)');
  lines.push(`- Id ${md(v.id)}`);
  return {
    icon: v.undo ? 'debug-step-back' : 'history',
    color: v.state === 'running' ? 'charts.green' : v.state === 'paused' ? 'charts.yellow' : v.state === 'saved' ? 'charts.blue' : undefined,
    label: v.name,
    description: [when, STATE_WORD[v.state], formatBytes(v.sizeBytes)].join(' · '),
    tooltip: lines.join('\n'),
    contextValue: v.undo ? ItemContext.undoPoint : ItemContext.checkpoint,
  };
}

export function undoGroupLook(points: CheckpointView[], now = new Date()): ItemLook {
  const newest = points[0];
  const bytes = points.reduce((s, p) => s + p.sizeBytes, 0);
  return {
    icon: 'debug-step-back',
    // Muted: the named checkpoints stand out (the debug icon would be blue otherwise).
    color: 'descriptionForeground',
    label: `${points.length} undo points`,
    description: `newest ${formatWhen(newest.createdAt, now)} · ${formatBytes(bytes)}`,
    tooltip: [`**${points.length} undo points**, newest first`, '', ...points.map((p) => `- ${md(p.name)}: ${md(formatWhen(p.createdAt, now))}, ${formatBytes(p.sizeBytes)}`), '', 'Undo returns the VM to the newest.'].join('\n'),
    contextValue: ItemContext.undoPoints,
  };
}

export function nowLook(vm: string, state: VmState | undefined): ItemLook {
  const word = state === 'stopped' ? 'off' : state ?? 'unknown';
  return {
    icon: 'circle-filled',
    color: state === 'running' ? 'charts.green' : state === 'paused' ? 'charts.yellow' : state === 'saved' ? 'charts.blue' : undefined,
    label: 'Now',
    description: word,
    tooltip: `**Now**: where ${md(vm)} is (${md(word)}), the changes since the checkpoint above. Applying a checkpoint checkpoints this state first unless you choose otherwise.`,
    contextValue: ItemContext.now,
  };
}

export function groupLook(list: Pick<CheckpointList, 'tree' | 'totalBytes'>): ItemLook {
  const { named, undo } = countCheckpoints(list.tree);
  const parts = [`${named} checkpoint${named === 1 ? '' : 's'}`];
  if (undo > 0) parts.push(`${undo} undo point${undo === 1 ? '' : 's'}`);
  return {
    icon: 'versions',
    label: 'Checkpoints',
    description: `${parts.join(', ')} · ${formatBytes(list.totalBytes)}`,
    tooltip: `${parts.join(' and ')}, ${formatBytes(list.totalBytes)} together. Apply one to return the VM to it.`,
    contextValue: ItemContext.checkpoints,
  };
}

/** "checkpoint N" with N one more than the highest in use (the service's default, offered to edit). */
export function suggestedName(views: { name: string }[]): string {
  let max = 0;
  for (const v of views) {
    const m = /^checkpoint (\d+)$/.exec(v.name);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return `checkpoint ${max + 1}`;
}
