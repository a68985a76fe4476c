/**
 * `sync`: keep a host folder copied into a VM, in the background (the service runs it):
 *   sandboxvm sync <vm> [host-dir] [--to <guest-path>] [--ignore <pattern>]... [--no-gitignore] [--no-wait]
 *       starts a sync (host-dir: the current folder; guest path: /root/<basename>), shows the
 *       first copy's progress and returns once the guest matches (--no-wait: at once)
 *   sandboxvm sync list [vm] [--json]
 *   sandboxvm sync stop <vm> [id|host-dir]    stops one sync, or every sync of the VM
 * `list` and `stop` are words here, not VM names.
 */
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import { SyncClient } from '../../client/syncClient';
import type { SyncStatus } from '../../sync/types';
import type { CommandContext } from '../context';
import { ProgressBar, formatBytes } from '../progress';

/** How long the first copy may keep failing before the command stops waiting (the sync goes on). */
const GIVE_UP_MS = 30_000;

export async function sync(ctx: CommandContext): Promise<number> {
  const [first, ...rest] = ctx.positionals;
  if (first === 'list') return list(ctx, rest);
  if (first === 'stop') return stop(ctx, rest);
  if (first === undefined) throw new SandboxError(ErrorCode.BadArgument, 'sync needs a VM name: sandboxvm sync <vm> [host-dir] [--to <guest-path>]');
  const vm = validateVmName(first);
  if (rest.length > 1) throw new SandboxError(ErrorCode.BadArgument, `sync takes one host folder; unexpected ${JSON.stringify(rest[1])}`);
  const hostDir = path.resolve(rest[0] ?? process.cwd());
  const to = ctx.options.to;
  if (to !== undefined && (typeof to !== 'string' || !to.startsWith('/'))) throw new SandboxError(ErrorCode.BadArgument, '--to needs an absolute guest path, e.g. --to /root/project');
  const ignore = (ctx.options.ignore as string[] | undefined) ?? [];
  const syncs = new SyncClient(await ctx.client());
  const statuses: SyncStatus[] = [];
  let wake: (() => void) | undefined;
  let id: string | undefined;
  const unsubscribe = await syncs.onStatus((s) => {
    if (s.vm !== vm || (id !== undefined && s.id !== id)) return;
    statuses.push(s);
    wake?.();
  });
  const added = await syncs.add(vm, { hostDir, guestPath: to as string | undefined, ignore, gitignore: ctx.options['no-gitignore'] !== true });
  id = added.id;
  const where = `${hostDir} to ${vm}:${added.guestPath}`;
  if (ctx.options['no-wait'] === true) {
    unsubscribe();
    ctx.out(`Syncing ${where} (sync ${id}); \`sandboxvm sync list ${vm}\` shows how it goes.`);
    return 0;
  }
  const bar = new ProgressBar('Syncing', process.stderr, { bytes: true });
  let last: SyncStatus = added;
  let failingSince: number | undefined;
  let said = '';
  try {
    for (;;) {
      const mine = statuses.splice(0).filter((s) => s.id === id);
      if (mine.length) last = mine[mine.length - 1];
      if (last.state === 'in-sync' && last.lastSyncAt !== undefined) break;
      // The service retries what fails (an agent busy or restarting); a failure that lasts is told and ends the wait.
      if (last.state === 'error') {
        failingSince ??= Date.now();
        if (last.message !== said) {
          bar.done();
          process.stderr.write(`sandboxvm: ${last.message}\n`);
          said = last.message;
        }
        if (Date.now() - failingSince > GIVE_UP_MS) break;
      } else failingSince = undefined;
      if (last.state === 'syncing' && last.totalBytes > 0) bar.update(last.bytes, last.totalBytes, `${last.files}/${last.totalFiles} files`);
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 1000);
      });
      wake = undefined;
    }
  } finally {
    bar.done();
    unsubscribe();
  }
  for (const w of last.warnings) process.stderr.write(`sandboxvm: warning: ${w}\n`);
  if (last.state === 'error') {
    process.stderr.write(`sandboxvm: sync ${id} of ${where} has failed for ${GIVE_UP_MS / 1000} s: ${last.message}; it keeps retrying in the background (\`sandboxvm sync stop ${vm} ${id}\` ends it)\n`);
    return 1;
  }
  const seconds = ((last.firstSyncMs ?? 0) / 1000).toFixed(2);
  const equal = last.equal ? `, ${last.equal} already there` : '';
  ctx.out(`${vm}:${added.guestPath} matches ${hostDir} (${last.files} file(s), ${formatBytes(last.bytes)} sent in ${seconds} s${equal}); changes follow in the background (sync ${id}; \`sandboxvm sync stop ${vm} ${id}\` ends it).`);
  return 0;
}

async function list(ctx: CommandContext, args: string[]): Promise<number> {
  if (args.length > 1) throw new SandboxError(ErrorCode.BadArgument, 'usage: sandboxvm sync list [vm] [--json]');
  const vm = args[0] === undefined ? undefined : validateVmName(args[0]);
  const all = await new SyncClient(await ctx.client()).list(vm);
  if (ctx.options.json) {
    ctx.out(JSON.stringify(all, null, 2));
    return 0;
  }
  if (all.length === 0) {
    ctx.out(vm ? `${vm} has no syncs.` : 'No syncs.');
    return 0;
  }
  for (const s of all) ctx.out(`${s.id}  ${s.vm}  ${s.hostDir} -> ${s.guestPath}  ${s.message}`);
  return 0;
}

async function stop(ctx: CommandContext, args: string[]): Promise<number> {
  if (args.length === 0 || args.length > 2) throw new SandboxError(ErrorCode.BadArgument, 'usage: sandboxvm sync stop <vm> [id|host-dir]');
  const vm = validateVmName(args[0]);
  const which = args[1] === undefined ? undefined : /^[0-9a-f]{8}$/.test(args[1]) ? { id: args[1] } : { hostDir: path.resolve(args[1]) };
  const { removed } = await new SyncClient(await ctx.client()).remove(vm, which);
  ctx.out(removed.length ? `Stopped ${removed.length} sync(s) of ${vm}: ${removed.join(', ')}; the guest keeps its files.` : `${vm} has no syncs.`);
  return 0;
}
