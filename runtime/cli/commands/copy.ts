/**
 * `cp`: files between host and guest, like `limactl copy` / `multipass transfer`.
 *   sandboxvm cp ./local dev:/path     host -> guest (atomic in the guest)
 *   sandboxvm cp dev:/path ./local     guest -> host (atomic on the host)
 * A destination that is a directory receives the source's base name.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import { GuestFiles } from '../../client/guestFiles';
import type { CommandContext } from '../context';
import { ProgressBar } from '../progress';

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

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

export async function copy(ctx: CommandContext): Promise<number> {
  const [srcArg, dstArg] = ctx.positionals;
  if (!srcArg || !dstArg || ctx.positionals.length > 2) throw new SandboxError(ErrorCode.BadArgument, 'usage: sandboxvm cp <src> <dst>, one of them <vm>:<path>');
  const src = parseLocation(srcArg);
  const dst = parseLocation(dstArg);
  if (!!src.vm === !!dst.vm) throw new SandboxError(ErrorCode.BadArgument, 'exactly one of source and destination must be in a VM (<vm>:<path>)');
  const vm = (src.vm ?? dst.vm)!;
  const sessions = await (await ctx.client()).attach(vm);
  const files = new GuestFiles(sessions);
  const bar = ctx.options.quiet ? { update: () => undefined, done: () => undefined } : new ProgressBar('Copying');
  const t0 = Date.now();
  let bytes: number;
  try {
    if (dst.vm) {
      const st = fs.statSync(src.path, { throwIfNoEntry: false });
      if (!st?.isFile()) throw new SandboxError(ErrorCode.BadArgument, `${src.path} is not a file on the host`);
      let target = dst.path;
      const existing = await files.stat(target).catch(() => undefined);
      if (existing?.type === 'dir' || target.endsWith('/')) target = path.posix.join(target, path.basename(src.path));
      bytes = await files.write(target, fs.createReadStream(src.path, { highWaterMark: 256 * 1024 }), {
        mode: st.mode & 0o777,
        onProgress: (n) => bar.update(n, st.size, `${mib(n)} of ${mib(st.size)}`),
      });
    } else {
      const remote = await files.stat(src.path);
      if (remote.type !== 'file') throw new SandboxError(ErrorCode.BadArgument, `${vm}:${src.path} is not a file (${remote.type})`);
      let target = dst.path;
      if (fs.statSync(target, { throwIfNoEntry: false })?.isDirectory()) target = path.join(target, path.posix.basename(src.path));
      bytes = await files.download(src.path, target, (n) => bar.update(n, remote.size, `${mib(n)} of ${mib(remote.size)}`));
    }
  } finally {
    bar.done();
    sessions.dispose();
  }
  const seconds = (Date.now() - t0) / 1000;
  if (!ctx.options.quiet) process.stderr.write(`${mib(bytes)} in ${seconds.toFixed(2)} s (${(bytes / 1e6 / Math.max(seconds, 0.001)).toFixed(1)} MB/s)\n`);
  return 0;
}
