/**
 * How workspace syncs look in the status bar: a pure function of their status snapshots
 * (runtime/sync/types.ts), so it is tested without VS Code. The syncs of the window's folders
 * come first; errors win over syncing, syncing over in sync.
 */
import { formatBytes } from '../../runtime/cli/progress';
import type { PullSummary } from '../../runtime/sync/pull/pullEngine';
import type { SyncStatus } from '../../runtime/sync/types';

export interface SyncLook {
  text: string;
  tooltip: string;
}

const RANK: Record<SyncStatus['state'], number> = { error: 0, syncing: 1, scanning: 2, connecting: 3, waiting: 4, 'in-sync': 5 };

/** The status bar's text and tooltip for `syncs`, or undefined when there is nothing to show. */
export function syncLook(syncs: readonly SyncStatus[], folders: readonly string[]): SyncLook | undefined {
  const mine = syncs.filter((s) => folders.some((f) => s.hostDir === f || s.hostDir.startsWith(`${f}/`)));
  const shown = mine.length > 0 ? mine : syncs;
  if (shown.length === 0) return undefined;
  const worst = [...shown].sort((a, b) => RANK[a.state] - RANK[b.state])[0];
  const icon = worst.state === 'error' ? 'warning' : worst.state === 'in-sync' ? 'check' : worst.state === 'waiting' ? 'debug-pause' : 'sync~spin';
  const progress = worst.state === 'syncing' && worst.totalFiles > 0 ? ` ${worst.files}/${worst.totalFiles}` : '';
  const word = worst.state === 'in-sync' ? 'in sync' : worst.state === 'syncing' ? `syncing${progress}` : worst.state === 'error' ? 'sync error' : worst.state;
  const more = shown.length > 1 ? ` (+${shown.length - 1})` : '';
  return {
    text: `$(${icon}) ${worst.vm}: ${word}${more}`,
    tooltip: shown.map((s) => `${s.hostDir} → ${s.vm}:${s.guestPath}: ${s.message}`).join('\n'),
  };
}

/** How one sync reads as a child of its VM in the tree. */
export interface SyncItemLook {
  label: string;
  description: string;
  icon: string;
  /** Codicon colour id, for errors. */
  color?: string;
  tooltip: string;
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** What a sync is doing, in a few words: 'in sync', 'syncing 12 files', 'comparing', or its error (the tooltip has the full message). */
export function syncWords(s: SyncStatus): string {
  if (s.state === 'in-sync') return 'in sync';
  if (s.state === 'syncing') return s.totalFiles > 0 ? `syncing ${plural(Math.max(0, s.totalFiles - s.files), 'file')}` : 'syncing';
  if (s.state === 'scanning') return 'comparing';
  if (s.state === 'connecting') return 'connecting';
  if (s.state === 'waiting') return 'waiting for the VM';
  return s.message.replace(/; retrying$/, '');
}

/**
 * The tree item of `s`: the host folder's name, `<state> → <guest path>` (the state first: a narrow
 * view cuts the end off), an icon by state, and a
 * tooltip with both paths, the state and the last error seen (`lastError`, which may be older than
 * the current state).
 */
export function syncItemLook(s: SyncStatus, lastError?: { message: string; at: number }, now = Date.now()): SyncItemLook {
  const icon = s.state === 'error' ? 'warning' : s.state === 'in-sync' ? 'check' : s.state === 'waiting' ? 'debug-pause' : 'sync~spin';
  const lines = [`Host folder: ${s.hostDir}`, `In ${s.vm}: ${s.guestPath}`, `Now: ${s.state === 'syncing' || s.state === 'in-sync' ? syncWords(s) : s.message.replace(/; retrying$/, '')}${s.state === 'error' ? ' (it retries by itself)' : ''}`];
  if (s.state === 'syncing' && s.totalBytes > 0) lines.push(`Progress: ${s.files} of ${plural(s.totalFiles, 'file')}, ${formatBytes(s.bytes)} of ${formatBytes(s.totalBytes)}`);
  if (s.lastSyncAt !== undefined) lines.push(`Last in sync: ${ago(now - s.lastSyncAt)}`);
  if (lastError && s.state !== 'error') lines.push(`Last error (${ago(now - lastError.at)}): ${lastError.message.replace(/; retrying$/, '')}`);
  for (const w of s.warnings.slice(0, 5)) lines.push(`Skipped: ${w}`);
  return {
    label: baseName(s.hostDir),
    description: `${syncWords(s)} → ${s.guestPath}`,
    icon,
    color: s.state === 'error' ? 'problemsWarningIcon.foreground' : undefined,
    tooltip: lines.join('\n'),
  };
}

function baseName(p: string): string {
  return p.replace(/[\\/]+$/, '').split(/[\\/]/).pop() || p;
}

function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 5) return 'just now';
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** The outcome of a pull as one notification's text: written, held back, conflicts, refused. */
export function pullSentence(vm: string, s: PullSummary): string {
  const names = (items: { path: string }[]) => items.slice(0, 3).map((i) => i.path).join(', ') + (items.length > 3 ? ` and ${items.length - 3} more` : '');
  const parts = [`${plural(s.written, 'file')} written`];
  if (s.unchanged > 0) parts.push(`${s.unchanged} unchanged`);
  if (s.removed > 0) parts.push(`${s.removed} removed`);
  let text = `Pulled ${vm}:${s.guestPath} into ${baseName(s.hostRoot)}: ${parts.join(', ')}.`;
  if (s.heldBack.length > 0) text += ` Held back ${plural(s.heldBack.length, 'file')} that could run programs on this machine (${names(s.heldBack)}); review ${s.heldBack.length === 1 ? 'it' : 'them'} to allow.`;
  if (s.conflicts.length > 0) text += ` ${s.conflicts.length} conflict${s.conflicts.length === 1 ? '' : 's'} (${names(s.conflicts)}): your version is kept, the guest's is beside it.`;
  if (s.refused.length > 0) text += ` Refused ${s.refused.length} (${names(s.refused)}); see the details.`;
  return text;
}
