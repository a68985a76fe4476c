/**
 * The foreign layer of an export: what a VM's disk sits on that is neither its own layers nor the
 * base image (an instant-created VM's template disk, a linked clone's source layers, and whatever
 * those sit on), collected into one qcow2 on the base image so the archive is complete.
 *
 * Made as an empty overlay on the foreign file, then `qemu-img rebase` (safe mode) onto the base
 * image: QEMU reads, for every cluster allocated anywhere above the base in the foreign chain, the
 * old view and the base's, and writes the ones that differ. (`qemu-img convert -B` is not used: in
 * QEMU 7.2 it copies only the clusters allocated in the source's top file, so the layers below it
 * would be lost; measured, see the tests.) Guest-visible content of the result equals the foreign
 * file's, and it holds only what differs from the base. `foreign` may also be a standalone disk
 * (a full clone's): then every cluster is compared with the base's.
 */
import { execFile, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import { ErrorCode, SandboxError } from '../common/errors';

/** The files of `file`'s backing chain from the top down to (not including) `base`, with their sizes. */
export async function chainAbove(qemuImg: string, file: string, base: string): Promise<{ files: string[]; bytes: number }> {
  const out = await new Promise<string>((resolve, reject) =>
    execFile(qemuImg, ['info', '-U', '--backing-chain', '--output=json', '-f', 'qcow2', file], { timeout: 60_000, maxBuffer: 16 * 2 ** 20 }, (err, stdout, stderr) =>
      err ? reject(new SandboxError(ErrorCode.Internal, `cannot read the backing chain of ${file}: ${stderr.trim() || err.message}`)) : resolve(stdout),
    ),
  );
  const chain = JSON.parse(out) as { filename: string }[];
  const files: string[] = [];
  let bytes = 0;
  for (const c of chain) {
    if (c.filename === base) break;
    files.push(c.filename);
    bytes += (await fs.stat(c.filename)).size;
  }
  return { files, bytes };
}

/**
 * Writes `to`: a qcow2 backed by `base` (its header names `base` as given) whose guest-visible
 * content is `foreign`'s. `onPercent` gets qemu-img's progress; `signal` kills it. `to` is left for
 * the caller to remove, also on failure.
 */
export async function makeForeignLayer(qemuImg: string, foreign: string, base: string, to: string, onPercent: (pct: number) => void, signal?: AbortSignal): Promise<void> {
  await emptyOverlay(qemuImg, foreign, to, signal);
  await run(qemuImg, ['rebase', '-p', '-f', 'qcow2', '-F', 'qcow2', '-b', base, to], onPercent, signal);
}

/** Writes `to`: an empty qcow2 overlay on `backing` (its header names `backing` as given). */
export function emptyOverlay(qemuImg: string, backing: string, to: string, signal?: AbortSignal): Promise<void> {
  return run(qemuImg, ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, to], () => undefined, signal);
}

function run(qemuImg: string, args: string[], onPercent: (pct: number) => void, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled());
    const child = spawn(qemuImg, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let last = -1;
    const abort = () => child.kill('SIGKILL');
    signal?.addEventListener('abort', abort, { once: true });
    child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    child.stdout.on('data', (d: Buffer) => {
      const m = /\((\d+(?:\.\d+)?)\/100%\)\s*$/.exec(d.toString().trimEnd());
      const pct = m ? Number(m[1]) : NaN;
      if (pct >= last + 1) onPercent((last = pct));
    });
    child.on('error', (err) => reject(new SandboxError(ErrorCode.Internal, `qemu-img ${args[0]} failed: ${err.message}`)));
    child.on('close', (code) => {
      signal?.removeEventListener('abort', abort);
      if (signal?.aborted) return reject(cancelled());
      if (code === 0) return resolve();
      if (/No space left/i.test(stderr)) return reject(Object.assign(new Error(stderr.trim()), { code: 'ENOSPC' }));
      reject(new SandboxError(ErrorCode.Internal, `qemu-img ${args[0]} failed while collecting the disk's shared layers: ${stderr.trim() || `exit ${code}`}`));
    });
  });
}

function cancelled(): SandboxError {
  return new SandboxError(ErrorCode.Cancelled, 'the export was cancelled');
}
