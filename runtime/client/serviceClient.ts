/**
 * The typed client of the service's API, used by the CLI and (later) the extension. Connects to the
 * service's socket, starting the service on demand as a detached daemon.
 */
import { randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import type { CreateParams, SetParams } from '../service/vmManager';
import type { HostStatus } from '../service/hostStatus';
import type { AppliedCheckpoint, CheckpointList, CreatedCheckpoint } from '../service/checkpoints';
import type { CheckpointView } from '../service/checkpointTree';
import type { CloneParams, CloneResult } from '../service/clones';
import { ErrorCode, SandboxError } from '../common/errors';
import { SERVICE_FILES, dataHome } from '../common/paths';
import { call, connectSocket } from '../common/rpc';
import type { VmInfo } from '../common/status';
import type { ForwardStatus } from '../common/ports';
import type { PortList } from '../service/portApi';
import type { CompactResult } from '../service/compact';
import type { GcResult } from '../image/imageGc';
import { SessionClient } from './sessionClient';
import { SerialClient, type SerialClientOptions } from './serialClient';
import type { VmMetrics } from '../worker/metrics';
import { meetService } from './serviceVersion';
import type { ServiceIdentity } from '../common/version';
import type { ExportedVm, ImportedVm } from '../transfer/transfers';

/** A metrics sample of one VM, as the service forwards it. */
export type VmMetricsEvent = VmMetrics & { name: string };
import { spawnDetached } from '../common/readiness';

export type ProgressListener = (step: number, total: number, message: string) => void;

export interface ConnectOptions {
  home?: string;
  /** Start the service when none answers (default true). */
  autoStart?: boolean;
  /** Where the service's bundle is (default: next to this bundle). */
  serviceScript?: string;
  /**
   * Compare versions with a running service (default true): replace an older one, refuse a newer
   * one (serviceVersion.ts). Off for commands that only inspect or stop the service.
   */
  checkVersion?: boolean;
  /** Extra environment for a service this call starts (SANDBOXVM_QEMU, SANDBOXVM_GUEST_NODE). */
  env?: NodeJS.ProcessEnv;
}

export class ServiceClient {
  private readonly progress = new Map<string, ProgressListener>();
  private readonly metricsListeners = new Set<(m: VmMetricsEvent) => void>();
  /** Set when connecting replaced an older service (its identity), which running VMs outlived. */
  replacedService?: ServiceIdentity;

  private constructor(readonly connection: MessageConnection, readonly home: string) {
    connection.onNotification('progress', (p: { token: string; step: number; total: number; message: string }) => {
      this.progress.get(p.token)?.(p.step, p.total, p.message);
    });
    connection.onNotification('vm.metrics', (m: VmMetricsEvent) => this.metricsListeners.forEach((l) => l(m)));
  }

  static async connect(options: ConnectOptions = {}): Promise<ServiceClient> {
    const home = options.home ?? dataHome();
    const socket = path.join(home, SERVICE_FILES.socket);
    let connection: MessageConnection | undefined;
    try {
      connection = await connectSocket(socket, 5000);
    } catch (err) {
      if (options.autoStart === false) {
        throw new SandboxError(ErrorCode.ServiceUnavailable, `the service is not running (${(err as Error).message})`);
      }
    }
    let replaced: ServiceIdentity | undefined;
    if (connection) {
      if (options.checkVersion === false) return new ServiceClient(connection, home);
      const meeting = await meetService(connection).catch((err) => {
        connection!.dispose();
        throw err;
      });
      if (meeting.use) return new ServiceClient(connection, home);
      replaced = meeting.replaced;
    }
    await startService(home, options.serviceScript ?? path.join(__dirname, 'service.js'), options.env);
    try {
      const client = new ServiceClient(await connectSocket(socket, 5000), home);
      client.replacedService = replaced;
      return client;
    } catch (err) {
      throw new SandboxError(ErrorCode.ServiceUnavailable, `the service started but does not answer (${(err as Error).message}); see ${path.join(home, SERVICE_FILES.log)}`);
    }
  }

  private async withProgress<T>(method: string, params: Record<string, unknown>, onProgress?: ProgressListener): Promise<T> {
    const token = randomUUID();
    if (onProgress) this.progress.set(token, onProgress);
    try {
      return await call<T>(this.connection, method, { ...params, progressToken: token });
    } finally {
      this.progress.delete(token);
    }
  }

  create(params: CreateParams, onProgress?: ProgressListener): Promise<VmInfo> {
    return this.withProgress('vm.create', { ...params }, onProgress);
  }
  /** Changes a stopped VM's configuration (vm.set); refused with WrongState otherwise. */
  set(params: SetParams): Promise<VmInfo> {
    return call(this.connection, 'vm.set', { ...params });
  }
  start(name: string, onProgress?: ProgressListener, bootTimeoutMs?: number): Promise<VmInfo> {
    return this.withProgress('vm.start', { name, bootTimeoutMs }, onProgress);
  }
  restart(name: string, onProgress?: ProgressListener): Promise<VmInfo> {
    return this.withProgress('vm.restart', { name }, onProgress);
  }
  stop(name: string, force = false, stepMs?: number): Promise<VmInfo> {
    return call(this.connection, 'vm.stop', { name, force, stepMs });
  }
  pause(name: string): Promise<VmInfo> {
    return call(this.connection, 'vm.pause', { name });
  }
  resume(name: string): Promise<VmInfo> {
    return call(this.connection, 'vm.resume', { name });
  }
  save(name: string): Promise<VmInfo> {
    return call(this.connection, 'vm.save', { name });
  }
  remove(name: string, force = false): Promise<void> {
    return call(this.connection, 'vm.remove', { name, force });
  }
  list(): Promise<VmInfo[]> {
    return call(this.connection, 'vm.list');
  }
  info(name: string): Promise<VmInfo> {
    return call(this.connection, 'vm.info', { name });
  }
  /** Forwards host `address`:`hostPort` (default: 127.0.0.1, the guest's port) to `guestPort`; kept in the VM's configuration. */
  addPort(name: string, guestPort: number, options: { hostPort?: number; address?: string } = {}): Promise<ForwardStatus> {
    return call(this.connection, 'vm.port.add', { name, guestPort, ...options });
  }
  removePort(name: string, hostPort: number): Promise<VmInfo> {
    return call(this.connection, 'vm.port.remove', { name, hostPort });
  }
  /** Turns automatic forwarding of the guest's listening ports on or off for `name`. */
  setAutoForward(name: string, on: boolean): Promise<VmInfo> {
    return call(this.connection, 'vm.port.auto', { name, on });
  }
  /** Every VM's forwards (or one VM's) with their state. */
  listPorts(name?: string): Promise<PortList[]> {
    return call(this.connection, 'vm.port.list', { name });
  }
  /** Checkpoints (service/checkpoints.ts): create of a running, paused, saved or stopped VM. */
  createCheckpoint(name: string, checkpoint?: string, options: { undo?: boolean; undoMaxCount?: number; undoMaxDiskMiB?: number } = {}): Promise<CreatedCheckpoint> {
    return call(this.connection, 'vm.checkpoint.create', { name, checkpoint, undo: options.undo, undoMaxCount: options.undoMaxCount, undoMaxDiskMiB: options.undoMaxDiskMiB });
  }
  listCheckpoints(name: string): Promise<CheckpointList> {
    return call(this.connection, 'vm.checkpoint.list', { name });
  }
  /** Returns the VM to `checkpoint` (name or id); the state left is checkpointed first unless `discardCurrent`. */
  applyCheckpoint(name: string, checkpoint: string, options: { discardCurrent?: boolean } = {}): Promise<AppliedCheckpoint> {
    return call(this.connection, 'vm.checkpoint.apply', { name, checkpoint, discardCurrent: options.discardCurrent });
  }
  renameCheckpoint(name: string, checkpoint: string, newName: string): Promise<CheckpointView> {
    return call(this.connection, 'vm.checkpoint.rename', { name, checkpoint, newName });
  }
  deleteCheckpoint(name: string, checkpoint: string): Promise<{ id: string; name: string; reclaimedBytes: number }> {
    return call(this.connection, 'vm.checkpoint.delete', { name, checkpoint });
  }
  /** A linked (default) or full clone of `name`'s current state or of one of its checkpoints (service/clones.ts). */
  clone(params: Omit<CloneParams, 'name' | 'newName'> & { name: string; newName: string }, onProgress?: ProgressListener): Promise<CloneResult> {
    return this.withProgress('vm.clone', { ...params }, onProgress);
  }
  /** The default configuration's template for instant create, built now if missing (service/templates.ts). */
  ensureTemplate(onProgress?: ProgressListener): Promise<{ dir: string; bootMs?: number } | undefined> {
    return this.withProgress('template.ensure', {}, onProgress);
  }
  /** Applies the newest undo point (exec --undo-point), discarding what happened since. */
  undo(name: string): Promise<AppliedCheckpoint & { checkpoint: string }> {
    return call(this.connection, 'vm.undo', { name });
  }
  /**
   * Writes the archive of a VM (vm.export; a running one through a checkpoint) to `target.path` (absolute; the service
   * writes it) or `target.socket` (a streamSocket.ts socket). `signal` cancels it (Cancelled).
   */
  exportVm(name: string, target: { path?: string; socket?: string }, onProgress?: ProgressListener, signal?: AbortSignal): Promise<ExportedVm> {
    return this.cancellable('vm.export', { name, ...target }, onProgress, signal);
  }
  /** Makes a new VM from an archive (vm.import) at `source.path` or streamed through `source.socket`; `name` renames it. */
  importVm(source: { path?: string; socket?: string }, name?: string, onProgress?: ProgressListener, signal?: AbortSignal): Promise<ImportedVm> {
    return this.cancellable('vm.import', { ...source, name }, onProgress, signal);
  }
  private async cancellable<T>(method: string, params: Record<string, unknown>, onProgress?: ProgressListener, signal?: AbortSignal): Promise<T> {
    const token = randomUUID();
    if (onProgress) this.progress.set(token, onProgress);
    const cancel = () => void call(this.connection, 'vm.transfer.cancel', { progressToken: token }).catch(() => undefined);
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      if (signal?.aborted) throw new SandboxError(ErrorCode.Cancelled, `${method} was cancelled`);
      return await call<T>(this.connection, method, { ...params, progressToken: token });
    } finally {
      signal?.removeEventListener('abort', cancel);
      this.progress.delete(token);
    }
  }
  /** Gives back the host space the VM's disk no longer uses (vm.compact): fstrim when running, a rewrite when stopped or saved. */
  compact(name: string, onProgress?: ProgressListener): Promise<CompactResult> {
    return this.withProgress('vm.compact', { name }, onProgress);
  }
  ensureImage(onProgress?: ProgressListener): Promise<{ hash: string; kernel: string; initrd: string; disk: string }> {
    return this.withProgress('image.ensure', {}, onProgress);
  }
  /** Removes base images, templates and stage-1 folders nothing uses (image.prune; imageGc.ts). */
  pruneImages(options: { dryRun?: boolean; explicit?: boolean } = {}): Promise<GcResult> {
    return call(this.connection, 'image.prune', { ...options });
  }
  /** QEMU, the base image and what building it needs (host.status; builds nothing). */
  hostStatus(): Promise<HostStatus> {
    return call(this.connection, 'host.status');
  }
  /** Builds the base image if missing; `signal` cancels the build (it then fails with Cancelled). */
  async buildImage(onProgress?: ProgressListener, signal?: AbortSignal): Promise<{ hash: string; kernel: string; initrd: string; disk: string }> {
    const token = randomUUID();
    if (onProgress) this.progress.set(token, onProgress);
    const cancel = () => void call(this.connection, 'image.cancel', { progressToken: token }).catch(() => undefined);
    signal?.addEventListener('abort', cancel, { once: true });
    try {
      if (signal?.aborted) throw new SandboxError(ErrorCode.Cancelled, 'building the base image was cancelled');
      return await call(this.connection, 'image.build', { progressToken: token });
    } finally {
      signal?.removeEventListener('abort', cancel);
      this.progress.delete(token);
    }
  }
  serviceInfo(): Promise<ServiceIdentity> {
    return call(this.connection, 'service.info');
  }
  shutdownService(): Promise<void> {
    return call(this.connection, 'service.shutdown');
  }

  /** Status snapshots of every VM as they change. */
  async subscribe(onStatus: (info: VmInfo) => void, onRemoved?: (name: string) => void): Promise<void> {
    this.connection.onNotification('vm.status', onStatus);
    if (onRemoved) this.connection.onNotification('vm.removed', (p: { name: string }) => onRemoved(p.name));
    await call(this.connection, 'service.subscribe');
  }

  /**
   * Live figures of `name` (CPU %, memory, disk; see worker/metrics.ts) to `listener` about once a
   * second, until the returned function is called. The VM's worker samples only while someone
   * watches; a VM that is not running sends nothing until it runs.
   */
  async onMetrics(name: string, listener: (m: VmMetricsEvent) => void): Promise<() => Promise<void>> {
    const mine = Object.assign((m: VmMetricsEvent) => m.name === name && listener(m), { vm: name });
    const watchingIt = () => [...this.metricsListeners].some((l) => (l as typeof mine).vm === name);
    this.metricsListeners.add(mine);
    try {
      await call(this.connection, 'vm.metrics.watch', { name, on: true });
    } catch (err) {
      this.metricsListeners.delete(mine);
      throw err;
    }
    return async () => {
      if (!this.metricsListeners.delete(mine) || watchingIt()) return;
      await call(this.connection, 'vm.metrics.watch', { name, on: false }).catch(() => undefined);
    };
  }

  /** A direct connection to the VM's worker for exec and terminal sessions (hot bytes skip the service). */
  async attach(name: string): Promise<SessionClient> {
    const { socket } = await call<{ socket: string }>(this.connection, 'vm.attach', { name });
    return SessionClient.connect(socket);
  }

  /** The VM's serial console (worker/serialConsole.ts): works while the agent is dead; rejects when the VM is not running. */
  async console(name: string, options?: SerialClientOptions): Promise<SerialClient> {
    return SerialClient.connect((await this.info(name)).paths.dir, options);
  }

  dispose(): void {
    this.connection.dispose();
  }
}

/** Spawns the service detached and waits for its readiness report. */
async function startService(home: string, script: string, env?: NodeJS.ProcessEnv): Promise<void> {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  const logPath = path.join(home, SERVICE_FILES.log);
  const result = await spawnDetached(script, [], logPath, { ...process.env, ...env, SANDBOXVM_HOME: home });
  if (!result.ok) {
    throw new SandboxError(ErrorCode.ServiceUnavailable, result.error?.message ?? `the service did not start; see ${logPath}`);
  }
}
