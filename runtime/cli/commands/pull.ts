/**
 * `sandboxvm pull <vm> <guest-folder> [host-folder]`: a one-shot pull of a guest folder into a host
 * folder (default: the current directory; made if missing, its parent must exist), safe against a
 * hostile guest (runtime/sync/pull/). Progress on stderr, then a summary: files written, unchanged,
 * removed, held back (with where the quarantine keeps them), conflicts (both versions kept) and
 * refused entries with their reasons. `--json` prints the summary as one JSON object on stdout.
 *
 *   --allow <path>        write a held-back path (or everything under a folder) anyway; repeatable
 *   --max-file-size 1G    --max-total 8G    --max-files 50000    --min-free 1G    (limits.ts)
 *
 * Exit codes: 0 everything landed; 3 the pull ran but something was held back, refused or in
 * conflict (see the summary); 1 the pull failed (nothing, or only part, was written: the message
 * says which); 2 bad usage; 130 cancelled (Ctrl-C; the files written before it are kept).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../../common/errors';
import { GuestFiles } from '../../client/guestFiles';
import { printable } from '../../sync/pull/hostPath';
import { guestPullSource } from '../../sync/pull/guestSource';
import { EXIT_NEEDS_ATTENTION, pull, type PullSummary } from '../../sync/pull/pullEngine';
import type { PullLimits } from '../../sync/pull/limits';
import type { CommandContext } from '../context';
import { ProgressBar, formatBytes } from '../progress';

export const PULL_OPTIONS = {
  allow: { type: 'string', multiple: true },
  json: { type: 'boolean' },
  quiet: { type: 'boolean', short: 'q' },
  'max-file-size': { type: 'string' },
  'max-total': { type: 'string' },
  'max-files': { type: 'string' },
  'min-free': { type: 'string' },
} as const;

export async function pullCommand(ctx: CommandContext): Promise<number> {
  const vm = ctx.name();
  const guestPath = ctx.positionals[1];
  if (!guestPath || !guestPath.startsWith('/')) throw new SandboxError(ErrorCode.BadArgument, 'give the guest folder as an absolute path: sandboxvm pull <vm> /root/project [host-folder]');
  const hostRoot = path.resolve(ctx.positionals[2] ?? '.');
  const limits = parseLimits(ctx.options);
  const json = ctx.options.json === true;
  const sessions = await (await ctx.client()).attach(vm);
  const root = await new GuestFiles(sessions).stat(guestPath, true).catch((err: Error) => {
    sessions.dispose();
    throw new SandboxError(ErrorCode.BadArgument, `${vm}:${guestPath}: ${/ENOENT/.test(err.message) ? 'no such folder in the guest' : printable(err.message)}`);
  });
  if (root.type !== 'dir') {
    sessions.dispose();
    throw new SandboxError(ErrorCode.BadArgument, `${vm}:${guestPath} is not a folder in the guest`);
  }
  // Made only once the VM and its folder are known to be there: a bad argument leaves nothing.
  if (!fs.existsSync(hostRoot)) {
    try {
      fs.mkdirSync(hostRoot, { mode: 0o755 });
    } catch (err) {
      sessions.dispose();
      throw new SandboxError(ErrorCode.BadArgument, `cannot make the folder ${hostRoot}: ${(err as NodeJS.ErrnoException).code ?? err}`);
    }
  }
  const bar = json || ctx.options.quiet ? undefined : new ProgressBar('Pulling', process.stderr);
  const cancel = new AbortController();
  let signals = 0;
  const onSignal = () => {
    if (++signals === 1) cancel.abort();
    else process.exit(130);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let summary: PullSummary;
  try {
    summary = await pull(guestPullSource(sessions), {
      vm,
      guestPath,
      hostRoot,
      allow: (ctx.options.allow as string[] | undefined) ?? [],
      limits,
      signal: cancel.signal,
      onProgress: (p) => bar?.update(p.files, p.totalFiles, `${formatBytes(p.bytes)} ${printable(p.current, 200).slice(-50)}`),
    });
  } catch (err) {
    if (err instanceof SandboxError && err.code === ErrorCode.Cancelled) {
      bar?.done();
      process.stderr.write(`sandboxvm: ${err.message}\n`);
      return 130;
    }
    throw err;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    bar?.done();
    sessions.dispose();
  }
  const attention = summary.heldBack.length + summary.refused.length + summary.conflicts.length;
  if (json) ctx.out(JSON.stringify(summary));
  else printSummary(ctx, vm, summary);
  return attention > 0 ? EXIT_NEEDS_ATTENTION : 0;
}

function printSummary(ctx: CommandContext, vm: string, s: PullSummary): void {
  const rate = s.seconds > 0 ? ` (${formatBytes(s.bytes / s.seconds)}/s)` : '';
  ctx.out(`Pulled ${vm}:${s.guestPath} into ${s.hostRoot} in ${s.seconds.toFixed(2)} s: ${s.written} written (${formatBytes(s.bytes)}${rate}), ${s.unchanged} unchanged, ${s.removed} removed, ${s.folders} new folders`);
  if (s.heldBack.length > 0) {
    ctx.out(`Held back ${s.heldBack.length} (they could run programs on this host; kept in ${s.quarantine}; pull again with --allow <path> to write one):`);
    for (const h of s.heldBack) ctx.out(`  ${h.path}: ${h.reason}`);
  }
  if (s.conflicts.length > 0) {
    ctx.out(`Conflicts ${s.conflicts.length} (the host's version is kept):`);
    for (const c of s.conflicts) ctx.out(`  ${c.path}: ${c.reason}${c.guestCopy ? `; the guest's version is ${c.guestCopy}` : ''}`);
  }
  if (s.refused.length > 0) {
    ctx.out(`Refused ${s.refused.length}:`);
    for (const r of s.refused.slice(0, 200)) ctx.out(`  ${r.path}: ${r.reason}`);
    if (s.refused.length > 200) ctx.out(`  ... and ${s.refused.length - 200} more (--json lists them all)`);
  }
}

function parseLimits(options: Record<string, unknown>): Partial<PullLimits> {
  const limits: Partial<PullLimits> = {};
  const size = (key: string) => (typeof options[key] === 'string' ? parseBytes(options[key] as string, `--${key}`) : undefined);
  const set = <K extends keyof PullLimits>(k: K, v: PullLimits[K] | undefined) => v !== undefined && (limits[k] = v);
  set('maxFileBytes', size('max-file-size'));
  set('maxTotalBytes', size('max-total'));
  set('minFreeBytes', size('min-free'));
  if (typeof options['max-files'] === 'string') {
    const n = Number(options['max-files']);
    if (!Number.isInteger(n) || n < 1 || n > 10_000_000) throw new SandboxError(ErrorCode.BadArgument, `--max-files takes a whole number from 1 to 10000000, not ${JSON.stringify(options['max-files'])}`);
    limits.maxEntries = n;
  }
  return limits;
}

/** `512`, `64K`, `1.5M`, `8G`, `1T` (binary units; an optional `iB`/`B`). */
export function parseBytes(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?$/i.exec(text.trim());
  if (!m) throw new SandboxError(ErrorCode.BadArgument, `${what} takes a size such as 512M or 8G, not ${JSON.stringify(text)}`);
  const n = Math.floor(Number(m[1]) * 1024 ** ' KMGT'.indexOf(m[2].toUpperCase() || ' '));
  if (!Number.isSafeInteger(n)) throw new SandboxError(ErrorCode.BadArgument, `${what} is too large`);
  return n;
}
