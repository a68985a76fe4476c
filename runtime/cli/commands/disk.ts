/** compact and image prune: giving disk space back to the host. */
import { ErrorCode, SandboxError } from '../../common/errors';
import type { CommandContext } from '../context';
import { ProgressBar, formatBytes } from '../progress';

/** `compact <vm> [--json]`: fstrim in a running guest, a rewrite of a stopped or saved VM's disk. */
export async function compact(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const bar = new ProgressBar(`Compacting ${name}`);
  let r;
  try {
    r = await (await ctx.client()).compact(name, (s, t, m) => bar.update(s, t, m));
  } finally {
    bar.done();
  }
  if (ctx.options.json) {
    ctx.out(JSON.stringify(r, null, 2));
    return 0;
  }
  const how = r.method === 'trim' ? 'trimmed in the guest (fstrim)' : 'disk rewritten';
  const hint = r.method === 'rewrite' ? `; blocks the guest freed without discard come back when it is compacted while running (fstrim)` : '';
  ctx.out(`${name}: ${how}; reclaimed ${formatBytes(r.reclaimedBytes)} (${formatBytes(r.beforeBytes)} -> ${formatBytes(r.afterBytes)} on the host) in ${(r.elapsedMs / 1000).toFixed(1)} s${hint}`);
  return 0;
}

/** `image prune [--dry-run] [--json]`: base images and templates nothing uses any more, removed. */
export async function imagePrune(ctx: CommandContext): Promise<number> {
  const dryRun = !!ctx.options['dry-run'];
  const r = await (await ctx.client()).pruneImages({ dryRun, explicit: true });
  if (ctx.options.json) {
    ctx.out(JSON.stringify(r, null, 2));
    return 0;
  }
  const verb = dryRun ? 'would remove' : 'removed';
  for (const item of r.removed) ctx.out(`${verb} ${item.path} (${formatBytes(item.bytes)}): ${item.reason}`);
  for (const item of r.kept) ctx.out(`kept ${item.path}: ${item.reason}`);
  ctx.out(`${dryRun ? 'Would free' : 'Freed'} ${formatBytes(r.freedBytes)} (${r.removed.length} removed, ${r.kept.length} kept).`);
  return 0;
}

export function unknownImageAction(action: string): never {
  throw new SandboxError(ErrorCode.BadArgument, `unknown image action ${action}: use build or prune`);
}
