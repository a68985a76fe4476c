/** `sandboxvm checkpoint create|list|apply|rename|delete` and `sandboxvm undo`: thin calls into the service. */
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import type { CheckpointList } from '../../service/checkpoints';
import type { CheckpointView } from '../../service/checkpointTree';
import type { CommandContext } from '../context';

const ACTIONS = ['create', 'list', 'apply', 'rename', 'delete'] as const;

export async function checkpoint(ctx: CommandContext): Promise<number> {
  const [action, vm, ...rest] = ctx.positionals;
  if (!ACTIONS.includes(action as (typeof ACTIONS)[number])) {
    throw new SandboxError(ErrorCode.BadArgument, `${action === undefined ? 'checkpoint needs an action' : `unknown checkpoint action ${JSON.stringify(action)}`}: use ${ACTIONS.join(', ')} (e.g. sandboxvm checkpoint list <vm>)`);
  }
  if (vm === undefined) throw new SandboxError(ErrorCode.BadArgument, `checkpoint ${action} needs a VM name: sandboxvm checkpoint ${action} <vm>${action === 'list' || action === 'create' ? '' : ' <checkpoint>'}`);
  const name = validateVmName(vm);
  const need = (n: number, what: string) => {
    if (rest.length < n) throw new SandboxError(ErrorCode.BadArgument, `checkpoint ${action} needs ${what}: sandboxvm checkpoint ${action} ${name} ${what}`);
    if (rest.length > n) throw new SandboxError(ErrorCode.BadArgument, `checkpoint ${action} takes ${what}; unexpected ${rest.slice(n).map((a) => JSON.stringify(a)).join(' ')} (quote a name with spaces)`);
  };
  const client = await ctx.client();
  const json = !!ctx.options.json;
  switch (action) {
    case 'create': {
      if (rest.length > 1) need(1, '[name]');
      const c = await client.createCheckpoint(name, rest[0]);
      if (json) return out(ctx, c);
      const paused = c.pausedMs !== undefined ? `, guest paused ${c.pausedMs} ms` : '';
      ctx.out(`Checkpoint ${JSON.stringify(c.name)} (${c.id}) of ${name} (${c.state}): ${formatBytes(c.sizeBytes)}, ${c.elapsedMs} ms${paused}.`);
      return 0;
    }
    case 'list': {
      need(0, '');
      const list = await client.listCheckpoints(name);
      if (json) return out(ctx, list);
      ctx.out(treeText(list));
      return 0;
    }
    case 'apply': {
      need(1, '<checkpoint>');
      const r = await client.applyCheckpoint(name, rest[0], { discardCurrent: !!ctx.options['discard-current'] });
      if (json) return out(ctx, r);
      if (r.saved) ctx.out(`Checkpointed the state left as ${JSON.stringify(r.saved.name)} (${r.saved.id}).`);
      ctx.out(`Applied ${JSON.stringify(rest[0])}: ${name} is ${r.info.state} (${r.elapsedMs} ms).`);
      return 0;
    }
    case 'rename': {
      need(2, '<checkpoint> <new name>');
      const v = await client.renameCheckpoint(name, rest[0], rest[1]);
      if (json) return out(ctx, v);
      ctx.out(`Renamed checkpoint ${v.id} to ${JSON.stringify(v.name)}.`);
      return 0;
    }
    case 'delete': {
      need(1, '<checkpoint>');
      const d = await client.deleteCheckpoint(name, rest[0]);
      if (json) return out(ctx, d);
      ctx.out(`Deleted checkpoint ${JSON.stringify(d.name)} (${d.id}); ${formatBytes(d.reclaimedBytes)} freed.`);
      return 0;
    }
  }
  return 2;
}

export async function undo(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const r = await (await ctx.client()).undo(name);
  ctx.out(`Undone: ${name} is back at ${JSON.stringify(r.checkpoint)} and ${r.info.state} (${r.elapsedMs} ms).`);
  return 0;
}

function out(ctx: CommandContext, value: unknown): number {
  ctx.out(JSON.stringify(value, null, 2));
  return 0;
}

/** The tree, one checkpoint a line, the VM's position marked with `now` under the checkpoint it sits on. */
export function treeText(list: CheckpointList): string {
  const lines = [`${list.vm} (${list.state}): ${count(list.tree)} checkpoint${count(list.tree) === 1 ? '' : 's'}, ${formatBytes(list.totalBytes)}`];
  const now = `▶ now (${list.state})`;
  if (list.position === undefined) lines.push(`${list.tree.length ? '├─ ' : '└─ '}${now}`);
  const walk = (nodes: CheckpointView[], prefix: string, nowHere: boolean) => {
    const items: (CheckpointView | 'now')[] = [...nodes];
    if (nowHere) items.push('now');
    items.forEach((item, i) => {
      const last = i === items.length - 1;
      const branch = prefix + (last ? '└─ ' : '├─ ');
      if (item === 'now') {
        lines.push(branch + now);
        return;
      }
      const extra = [item.state, formatBytes(item.sizeBytes), item.createdAt.replace('T', ' ').slice(0, 19), item.id];
      if (item.pausedMs !== undefined) extra.push(`paused ${item.pausedMs} ms`);
      if (item.note) extra.push(item.note);
      lines.push(`${branch}${item.name}  (${extra.join(', ')})`);
      walk(item.children, prefix + (last ? '   ' : '│  '), item.current);
    });
  };
  walk(list.tree, '', false);
  return lines.join('\n');
}

function count(tree: CheckpointView[]): number {
  return tree.reduce((n, v) => n + 1 + count(v.children), 0);
}

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 2 ** 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 2 ** 30) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}
