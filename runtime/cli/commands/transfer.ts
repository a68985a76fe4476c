/**
 * `sandboxvm export <vm> <file|->` and `sandboxvm import <file|-> [--name <new>]`: calls into the
 * service (runtime/transfer/transfers.ts). `-` streams the archive through stdout or stdin
 * (a socket the service connects to), so it composes: `sandboxvm export dev - | zstd > dev.tar.zst`.
 */
import * as path from 'node:path';
import type { Socket } from 'node:net';
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import { listenTransferSocket } from '../../transfer/streamSocket';
import type { CommandContext } from '../context';
import { ProgressBar, formatBytes } from '../progress';

export async function exportCommand(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const target = ctx.positionals[1];
  if (target === undefined) throw new SandboxError(ErrorCode.BadArgument, `export needs a file to write: sandboxvm export ${name} <file> (or - for stdout)`);
  if (target === '-' && process.stdout.isTTY) throw new SandboxError(ErrorCode.BadArgument, 'refusing to write an archive to a terminal: redirect stdout (sandboxvm export <vm> - > file) or name a file');
  const client = await ctx.client();
  const bar = new ProgressBar(`Export ${name}`, process.stderr, { bytes: true });
  const progress = (step: number, total: number, message: string) => bar.update(step, total, message);
  let r;
  try {
    if (target !== '-') {
      r = await client.exportVm(name, { path: path.resolve(target) }, progress);
    } else {
      const socket = await listenTransferSocket(client.home);
      try {
        const piped = socket.accepted.then((s) => pipeInto(s, process.stdout));
        r = await client.exportVm(name, { socket: socket.path }, progress);
        await piped;
      } finally {
        socket.close();
      }
    }
  } finally {
    bar.done();
  }
  const where = r.path ?? 'stdout';
  process.stderr.write(`Exported ${name} to ${where}: ${formatBytes(r.bytes)}, ${r.entries} entries, ${(r.elapsedMs / 1000).toFixed(1)} s.\n`);
  return 0;
}

export async function importCommand(ctx: CommandContext): Promise<number> {
  const source = ctx.positionals[0];
  if (source === undefined) throw new SandboxError(ErrorCode.BadArgument, 'import needs an archive: sandboxvm import <file> [--name <new name>] (or - for stdin)');
  const rename = typeof ctx.options.name === 'string' ? validateVmName(ctx.options.name) : undefined;
  const client = await ctx.client();
  const bar = new ProgressBar('Import', process.stderr, { bytes: true });
  const progress = (step: number, total: number, message: string) => bar.update(step, total, message);
  let r;
  try {
    if (source !== '-') {
      r = await client.importVm({ path: path.resolve(source) }, rename, progress);
    } else {
      const socket = await listenTransferSocket(client.home);
      let conn: Socket | undefined;
      void socket.accepted.then((s) => {
        conn = s;
        s.on('error', () => undefined);
        process.stdin.pipe(s);
      });
      try {
        r = await client.importVm({ socket: socket.path }, rename, progress);
      } finally {
        process.stdin.unpipe();
        process.stdin.pause();
        conn?.destroy();
        socket.close();
      }
    }
  } finally {
    bar.done();
  }
  const vm = r.info.name;
  const from = r.archiveName !== vm ? ` (exported as ${r.archiveName})` : '';
  const image = r.reusedImage ? '; the local base image was reused' : '; it keeps its own copy of its base image';
  ctx.out(`Imported ${vm}${from}: ${r.info.state}, ${formatBytes(r.bytesWritten)} written${image}, ${(r.elapsedMs / 1000).toFixed(1)} s. \`sandboxvm start ${vm}\` ${r.info.state === 'saved' ? 'restores' : 'boots'} it.`);
  if (r.info.config.network === 'host') ctx.out(`Note: ${vm}'s network policy is host: its guest reaches this host's loopback services (\`sandboxvm set ${vm} --network internet\` when stopped).`);
  return 0;
}

/** Copies `from` into `to` until `from` ends; `to` stays open. */
function pipeInto(from: Socket, to: NodeJS.WritableStream): Promise<void> {
  return new Promise((resolve, reject) => {
    from.on('error', reject);
    from.on('end', resolve);
    from.pipe(to, { end: false });
  });
}
