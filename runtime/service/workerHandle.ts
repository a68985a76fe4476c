/**
 * The service's handle on one VM's worker: spawning it, adopting one a previous service left
 * running, and calling it. The worker is detached: it survives this service.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { ErrorCode, SandboxError, type WireError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { call, connectSocket } from '../common/rpc';
import type { WorkerRecord, WorkerStatus } from '../common/status';
import { isAlive, isProcessOf } from './processes';
import { spawnDetached } from '../common/readiness';

export const WORKER_SCRIPT = path.join(__dirname, 'worker.js');

export class WorkerHandle {
  status: WorkerStatus;
  exitError?: string;
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  private constructor(readonly connection: MessageConnection, readonly record: WorkerRecord, initial: WorkerStatus, onStatus: (s: WorkerStatus) => void) {
    this.status = initial;
    connection.onNotification('worker.status', (s: WorkerStatus) => {
      this.status = s;
      onStatus(s);
    });
    connection.onNotification('worker.exit', (s: WorkerStatus & { exitError?: string }) => {
      this.status = s;
      this.exitError = s.exitError;
    });
    connection.onClose(() => {
      this.closed = true;
      for (const l of this.closeListeners) l();
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  onClose(listener: () => void): void {
    if (this.closed) listener();
    else this.closeListeners.push(listener);
  }

  call<T>(method: string, params?: unknown): Promise<T> {
    if (this.closed) return Promise.reject(new SandboxError(ErrorCode.WorkerLost, 'the VM worker is gone'));
    return call<T>(this.connection, method, params);
  }

  /** Resolves when the worker's connection closes (it exits when QEMU does). */
  waitClosed(): Promise<void> {
    return new Promise((resolve) => this.onClose(resolve));
  }

  dispose(): void {
    this.connection.dispose();
  }

  /**
   * Spawns a worker for the VM in `dir` and resolves once its agent answers (or rejects with the
   * worker's own error). The worker is detached and unref'd: it outlives this process. With
   * `adoptQemuPid`, the worker takes over that running QEMU (its previous worker died). `onSpawn`
   * gets the worker's pid at once (it leads a process group that holds the QEMU it starts).
   */
  static async spawn(dir: string, restore: boolean, onStatus: (s: WorkerStatus) => void, bootTimeoutMs?: number, adoptQemuPid?: number, onSpawn?: (pid: number) => void): Promise<WorkerHandle> {
    const args = ['--dir', dir];
    if (restore) args.push('--restore');
    if (adoptQemuPid !== undefined) args.push('--adopt', String(adoptQemuPid));
    if (bootTimeoutMs) args.push('--boot-timeout-ms', String(bootTimeoutMs));
    const result = await spawnDetached(WORKER_SCRIPT, args, path.join(dir, VM_FILES.workerLog), process.env, onSpawn);
    if (result.error) throw SandboxError.fromWire(result.error as WireError);
    if (!result.ok) {
      throw new SandboxError(ErrorCode.BootFailed, `the VM's worker exited before the VM was up; see ${path.join(dir, VM_FILES.workerLog)}`);
    }
    const record = readWorkerRecord(dir);
    if (!record) throw new SandboxError(ErrorCode.WorkerLost, `the worker started but left no ${VM_FILES.worker}; see ${path.join(dir, VM_FILES.workerLog)}`);
    return WorkerHandle.connect(record, onStatus);
  }

  /**
   * Adopts the worker recorded in `dir`'s worker.json, after checking that the record is sane, its
   * pid is a live worker of this very directory, and the socket answers with the expected VM id.
   * Returns undefined when there is nothing to adopt.
   */
  static async adopt(dir: string, vmId: string, onStatus: (s: WorkerStatus) => void): Promise<WorkerHandle | undefined> {
    const record = readWorkerRecord(dir);
    if (!record || record.vmId !== vmId) return undefined;
    if (!isProcessOf(record.workerPid, [WORKER_SCRIPT_NAME, dir])) return undefined;
    const handle = await WorkerHandle.connect(record, onStatus).catch(() => undefined);
    if (!handle) return undefined;
    const identity = await handle.call<{ vmId: string }>('worker.identify').catch(() => undefined);
    if (identity?.vmId !== vmId) {
      handle.dispose();
      return undefined;
    }
    return handle;
  }

  private static async connect(record: WorkerRecord, onStatus: (s: WorkerStatus) => void): Promise<WorkerHandle> {
    const connection = await connectSocket(record.socket, 5000);
    const status = await call<WorkerStatus>(connection, 'worker.status');
    return new WorkerHandle(connection, record, status, onStatus);
  }
}

export const WORKER_SCRIPT_NAME = 'worker.js';

/** Reads and validates worker.json; undefined when missing or malformed. */
export function readWorkerRecord(dir: string): WorkerRecord | undefined {
  try {
    const r = JSON.parse(fs.readFileSync(path.join(dir, VM_FILES.worker), 'utf8')) as WorkerRecord;
    const socketOk = typeof r.socket === 'string' && path.resolve(r.socket) === path.join(dir, VM_FILES.workerSocket);
    if (!Number.isInteger(r.workerPid) || !Number.isInteger(r.qemuPid) || typeof r.vmId !== 'string' || !socketOk) return undefined;
    return r;
  } catch {
    return undefined;
  }
}

export { isAlive };
