/**
 * `vm.compact`: gives the host back the space a VM's disk no longer uses.
 *
 *  - running: `fstrim -v /` in the guest (an exec through the agent); the drive's discard=unmap
 *    makes QEMU drop the freed qcow2 clusters, so the disk file shrinks while the VM runs.
 *  - stopped or saved (no QEMU has the disk open): the writable disk is rewritten with
 *    `qemu-img convert` onto the same backing file (only its own clusters are copied, unused and
 *    fragmented space goes), to `<disk>.compact` beside it, checked, then renamed over the disk.
 *    qemu-img takes the image's lock, so it refuses a disk some QEMU still has open. A kill at
 *    any point leaves the old disk whole (the rename is the one step that changes it); a
 *    `<disk>.compact` left by a kill is removed by the next compact. The guest sees the same
 *    bytes, so a saved state stays valid.
 *  - paused: refused (the guest cannot trim; resume or stop it first).
 * Frozen checkpoint layers are not rewritten. Runs in the VM's queue.
 */
import { spawn, execFile } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import { activeDisk } from '../common/activeDisk';
import { ErrorCode, SandboxError } from '../common/errors';
import { wrongStateMessage } from '../common/stateMessages';
import type { VmState } from '../common/status';
import { SessionClient } from '../client/sessionClient';
import { locateQemu } from '../qemu/locate';
import { measure } from './diskUsage';
import type { Progress, VmManager } from './vmManager';

export interface CompactResult {
  vm: string;
  /** What was done: `trim` (running: fstrim in the guest) or `rewrite` (stopped or saved: qemu-img convert). */
  method: 'trim' | 'rewrite';
  /** The VM's files on the host before and after (VmInfo.disk.totalBytes). */
  beforeBytes: number;
  afterBytes: number;
  reclaimedBytes: number;
  /** What fstrim said it trimmed in the guest (bytes of free space handed to the drive; not all of it was allocated). */
  trimmedBytes?: number;
  elapsedMs: number;
}

/** What compact needs of the manager (its queue, and a VM's directory, state and base image). */
export type CompactHost = Pick<VmManager, 'queued' | 'stateOf' | 'snapshot' | 'attachInfo' | 'checkpoints' | 'publishVm' | 'configOf'>;

const FSTRIM_TIMEOUT_MS = 10 * 60_000;

export function compactVm(host: CompactHost, name: string, progress: Progress): Promise<CompactResult> {
  return host.queued(name, async () => {
    const t0 = Date.now();
    const state: VmState = host.stateOf(name);
    if (state === 'paused') {
      throw new SandboxError(ErrorCode.WrongState, `cannot compact ${name} while it is paused: its guest cannot trim, and QEMU has the disk open; resume it (\`sandboxvm resume ${name}\`) or stop it first`);
    }
    if (state !== 'running' && state !== 'stopped' && state !== 'saved') {
      throw new SandboxError(ErrorCode.WrongState, wrongStateMessage(name, state, 'compact', ['running', 'stopped', 'saved']));
    }
    const dir = host.snapshot(name).paths.dir;
    const total = () => measure(dir, host.configOf(name).image.disk).totalBytes;
    const beforeBytes = total();
    let trimmedBytes: number | undefined;
    if (state === 'running') {
      progress(1, 1, 'trimming the guest filesystem (fstrim)');
      trimmedBytes = await fstrim(host.attachInfo(name).socket, name);
    } else {
      await host.checkpoints.recoverBeforeBoot(name);
      await rewrite(activeDisk(dir), progress);
    }
    const afterBytes = total();
    host.publishVm(name);
    return { vm: name, method: state === 'running' ? 'trim' : 'rewrite', beforeBytes, afterBytes, reclaimedBytes: Math.max(0, beforeBytes - afterBytes), trimmedBytes, elapsedMs: Date.now() - t0 };
  });
}

/** Runs `fstrim -v /` in the guest; returns the bytes it reports trimmed. */
async function fstrim(socket: string, name: string): Promise<number | undefined> {
  const sessions = await SessionClient.connect(socket);
  try {
    let out = '';
    const exit = await new Promise<{ code: number | null; error?: string }>((resolve, reject) => {
      sessions
        .open(
          { kind: 'exec', argv: ['fstrim', '-v', '/'], timeoutMs: FSTRIM_TIMEOUT_MS },
          {
            onData: (_s, data) => {
              if (out.length < 4096) out += data.toString('utf8');
            },
            onExit: (r) => resolve(r),
          },
        )
        .catch(reject);
    });
    if (exit.error || exit.code !== 0) {
      throw new SandboxError(ErrorCode.Internal, `fstrim in ${name} failed (${exit.error ?? `exit ${exit.code}`}${out.trim() ? `: ${out.trim().slice(0, 200)}` : ''}); see \`sandboxvm exec ${name} -- fstrim -v /\``);
    }
    return parseFstrim(out);
  } finally {
    sessions.dispose();
  }
}

/** From fstrim -v's "/: 9.5 GiB (10222325760 bytes) trimmed": the bytes; undefined when it says otherwise. */
export function parseFstrim(out: string): number | undefined {
  const m = /\((\d+) bytes\) trimmed/.exec(out);
  return m ? Number(m[1]) : undefined;
}

/** qemu-img convert's `-p` lines: "    (42.17/100%)". */
export function parseConvertProgress(text: string): number | undefined {
  const all = [...text.matchAll(/\((\d+(?:\.\d+)?)\/100%\)/g)];
  return all.length ? Number(all[all.length - 1][1]) : undefined;
}

/** The temporary a rewrite of `disk` goes to (removed when a kill left it). */
export function compactTemp(disk: string): string {
  return `${disk}.compact`;
}

/** Rewrites `disk` (no QEMU may have it open: qemu-img's lock checks) onto its own backing file. */
async function rewrite(disk: string, progress: Progress): Promise<void> {
  const qemuImg = (await locateQemu()).img;
  const tmp = compactTemp(disk);
  await fs.rm(tmp, { force: true });
  const info = JSON.parse(await output(qemuImg, ['info', '--output=json', disk])) as { 'full-backing-filename'?: string; 'backing-filename'?: string; 'backing-filename-format'?: string };
  const backing = info['full-backing-filename'] ?? info['backing-filename'];
  const args = ['convert', '-p', '-O', 'qcow2'];
  if (backing) args.push('-B', backing, '-F', info['backing-filename-format'] ?? 'qcow2');
  progress(0, 100, 'compacting the disk');
  try {
    await convert(qemuImg, [...args, disk, tmp], (pct) => progress(Math.min(99, Math.floor(pct)), 100, 'compacting the disk'));
    await output(qemuImg, ['check', '-q', tmp]);
    const h = await fs.open(tmp, 'r+');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
    await fs.rename(tmp, disk);
  } catch (err) {
    await fs.rm(tmp, { force: true });
    throw err;
  }
  progress(100, 100, 'compacted');
}

function output(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { timeout: 120_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      reject(imgError(args, stderr || err.message));
    }),
  );
}

/**
 * Where util-linux's setpriv is, qemu-img runs under `setpriv --pdeathsig KILL`: killed with the
 * service, it cannot hold the disk's lock (and so block the VM's start) after a kill -9 of it.
 */
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((f) => existsSync(f));

function convert(file: string, args: string[], onPercent: (pct: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = SETPRIV ? spawn(SETPRIV, ['--pdeathsig', 'KILL', '--', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawn(file, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => {
      const pct = parseConvertProgress(chunk);
      if (pct !== undefined) onPercent(pct);
    });
    child.stderr.on('data', (d) => {
      if (stderr.length < 4096) stderr += d;
    });
    child.on('error', reject);
    child.on('close', (code, sig) => (code === 0 ? resolve() : reject(imgError(args, stderr || `exit ${code ?? sig}`))));
  });
}

function imgError(args: string[], stderr: string): SandboxError {
  if (/No space left/i.test(stderr)) return new SandboxError(ErrorCode.DiskFull, `compacting needs room for a copy of the disk and the host's disk is full; free some space and try again`);
  if (/lock/i.test(stderr)) return new SandboxError(ErrorCode.WrongState, `the disk is in use by a QEMU process (${stderr.trim().split('\n')[0]}); stop the VM and try again`);
  return new SandboxError(ErrorCode.Internal, `qemu-img ${args[0]} failed: ${stderr.trim().slice(0, 300)}`);
}
