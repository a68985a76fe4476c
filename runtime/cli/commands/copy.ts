/**
 * `cp`: files and folders between host and guest, like `limactl copy` / `multipass transfer`.
 *   sandboxvm cp ./local dev:/path        host -> guest (atomic in the guest)
 *   sandboxvm cp dev:/path ./local        guest -> host (atomic on the host)
 *   sandboxvm cp -r ./dir dev:/path       folders, both ways
 * The copy itself is runtime/client/copyFiles.ts (shared with the extension). Ctrl-C (SIGINT,
 * SIGTERM) cancels: the file in progress is removed on both sides.
 */
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import { GuestCopy } from '../../client/copyFiles';
import { GuestFiles } from '../../client/guestFiles';
import type { CommandContext } from '../context';
import { ProgressBar, formatBytes } from '../progress';

interface Location {
  vm?: string;
  path: string;
}

/** `name:/path` is in a VM; anything else (including `./a:b`) is on the host. */
export function parseLocation(arg: string): Location {
  const m = /^([a-z0-9][a-z0-9-]*):(.*)$/.exec(arg);
  if (!m) return { path: arg };
  if (!m[2]) throw new SandboxError(ErrorCode.BadArgument, `${arg}: give a guest path after the colon, e.g. ${m[1]}:/root/file`);
  return { vm: validateVmName(m[1]), path: m[2] };
}

/** How long a cancelled copy may take to clean up before the CLI removes what it can and exits. */
const CANCEL_GRACE_MS = 5000;

export async function copy(ctx: CommandContext): Promise<number> {
  const [srcArg, dstArg] = ctx.positionals;
  if (!srcArg || !dstArg || ctx.positionals.length > 2) throw new SandboxError(ErrorCode.BadArgument, 'usage: sandboxvm cp [-r] <src> <dst>, one of them <vm>:<path>');
  const src = parseLocation(srcArg);
  const dst = parseLocation(dstArg);
  if (!!src.vm === !!dst.vm) throw new SandboxError(ErrorCode.BadArgument, 'exactly one of source and destination must be in a VM (<vm>:<path>)');
  const recursive = ctx.options.recursive === true;
  const vm = (src.vm ?? dst.vm)!;
  const sessions = await (await ctx.client()).attach(vm);
  const bar = ctx.options.quiet ? undefined : new ProgressBar('Copying', process.stderr, { bytes: true });
  const cancel = new AbortController();
  const t = new GuestCopy(vm, new GuestFiles(sessions), {
    recursive,
    signal: cancel.signal,
    onProgress: (bytes, total, current) => bar?.update(bytes, total, current),
    onWarning: (message) => {
      bar?.done();
      process.stderr.write(`sandboxvm: warning: ${message}\n`);
    },
  });
  let signals = 0;
  const onSignal = () => {
    if (++signals === 1) {
      cancel.abort();
      setTimeout(() => (t.removeTemporaries(), process.exit(130)), CANCEL_GRACE_MS).unref();
    } else {
      t.removeTemporaries();
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  try {
    if (dst.vm) await t.upload(src.path, dst.path);
    else await t.download(src.path, dst.path);
  } catch (err) {
    if (!(err instanceof SandboxError && err.code === ErrorCode.Cancelled)) throw err;
    bar?.done();
    const kept = t.files > 0 ? `; the ${t.files} file(s) copied before it are kept` : '';
    process.stderr.write(`sandboxvm: the copy was cancelled; the file in progress was removed${kept}\n`);
    return 130;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    bar?.done();
    sessions.dispose();
  }
  const seconds = Math.max((Date.now() - t0) / 1000, 0.001);
  if (!ctx.options.quiet) {
    const what = recursive ? `${t.files} file(s), ` : '';
    process.stderr.write(`Copied ${what}${formatBytes(t.bytes)} in ${seconds.toFixed(2)} s (${formatBytes(t.bytes / seconds)}/s)\n`);
  }
  if (t.skipped > 0) {
    process.stderr.write(`sandboxvm: ${t.skipped} entr${t.skipped === 1 ? 'y was' : 'ies were'} skipped (see the warnings above)\n`);
    return 1;
  }
  return 0;
}

