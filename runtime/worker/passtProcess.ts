/**
 * The passt process of a VM under the `internet` policy: part of the VM, as QEMU is. The worker
 * spawns it just before QEMU, as the worker's own user (never asked to be root: run as root, passt
 * drops to `nobody` by itself), on one end of a socketpair whose other end QEMU inherits. So there
 * is no socket path and no readiness to wait for, and passt ends by itself when QEMU closes its
 * end (`--fd` implies `--one-off`): when the VM stops, is saved or is killed. A worker that dies leaves it running
 * beside QEMU (the guest's network with it); the next worker learns its pid from worker.json and
 * kills it only after checking its command line names this VM's directory.
 */
import { spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import * as path from 'node:path';
import { VM_FILES } from '../common/paths';
import { buildPasstArgv } from '../qemu/passt';
import { isProcessOf } from '../service/processes';

export interface PasstExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedPasst {
  pid: number;
  /** The socket end to hand to QEMU (a stdio slot); call `handedOver` once QEMU is spawned. */
  qemuEnd: Socket;
  /** Closes the worker's copy of QEMU's end (QEMU holds its own). */
  handedOver(): void;
  /** Settles when passt exits. */
  exited: Promise<PasstExit>;
}

/** Spawns passt for the VM in `dir`; its output goes to `logFd` (worker.log), its log to passt.log. */
export function spawnPasst(binary: string, dir: string, logFd: number): SpawnedPasst {
  const child = spawn(binary, buildPasstArgv({ fd: 3, logFile: path.join(dir, VM_FILES.passtLog) }), { stdio: ['ignore', logFd, logFd, 'pipe'] });
  const exited = new Promise<PasstExit>((resolve) => {
    child.once('exit', (code, signal) => resolve({ code, signal }));
    child.once('error', () => resolve({ code: null, signal: null }));
  });
  if (child.pid === undefined) throw new Error(`cannot run ${binary}`);
  const qemuEnd = child.stdio[3] as Socket;
  // Not a byte may be read here: every frame is the guest's. The end is closed in this same tick,
  // before the event loop could read from it.
  qemuEnd.pause();
  return { pid: child.pid, qemuEnd, handedOver: () => qemuEnd.destroy(), exited };
}

/** True when `pid` is the passt of the VM in `dir` (its command line names the VM's passt.log). */
export function isPasstOf(pid: number, dir: string): boolean {
  return isProcessOf(pid, ['passt', path.join(dir, VM_FILES.passtLog)]);
}

/** Ends the passt of the VM in `dir` if `pid` still is it; returns whether it was killed. */
export function killPasst(pid: number | undefined, dir: string): boolean {
  if (pid === undefined || !isPasstOf(pid, dir)) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}
