/**
 * Live metrics through the service: clients watch a VM with `vm.metrics.watch {name, on}` and get
 * `vm.metrics` notifications ({name, ...VmMetrics}, about once a second). The hub asks a VM's
 * worker to sample only while at least one client watches that VM, and asks again when the VM gets
 * a new worker (a start, a takeover). A client that disconnects stops watching.
 */
import type { HandlerTable, RpcPeer } from '../common/rpc';
import { validateVmName } from '../common/names';
import type { VmMetrics } from '../worker/metrics';
import type { WorkerHandle } from './workerHandle';

export interface MetricsWorkers {
  /** The VM's live worker, if it has one. Throws UnknownVm for a name with no VM. */
  workerOf(name: string): WorkerHandle | undefined;
  onDidChangeVm(listener: (info: { name: string }) => void): void;
  onDidRemoveVm(listener: (name: string) => void): void;
}

export class MetricsHub {
  private readonly watchers = new Map<string, Set<RpcPeer>>();
  /** The worker asked to sample for each watched VM. */
  private readonly sampling = new Map<string, WorkerHandle>();
  private readonly listening = new WeakSet<WorkerHandle>();

  constructor(private readonly workers: MetricsWorkers, private readonly log: (m: string) => void) {
    workers.onDidChangeVm((info) => this.sync(info.name));
    workers.onDidRemoveVm((name) => {
      this.watchers.delete(name);
      this.sync(name);
    });
  }

  handlers(): HandlerTable {
    return {
      'vm.metrics.watch': (p: { name?: unknown; on?: unknown }, peer: RpcPeer) => {
        const name = validateVmName(p?.name);
        this.workers.workerOf(name); // UnknownVm for a VM that does not exist
        if (p.on === false) return this.unwatch(peer, name);
        let set = this.watchers.get(name);
        if (!set) this.watchers.set(name, (set = new Set()));
        if (!set.has(peer)) {
          set.add(peer);
          peer.onClose(() => this.unwatch(peer, name));
        }
        this.sync(name);
      },
    };
  }

  private unwatch(peer: RpcPeer, name: string): void {
    const set = this.watchers.get(name);
    set?.delete(peer);
    if (set && set.size === 0) this.watchers.delete(name);
    this.sync(name);
  }

  /** Makes the sampling worker match: the VM's current worker while watched, none otherwise. */
  private sync(name: string): void {
    const wanted = this.watchers.has(name) ? safe(() => this.workers.workerOf(name)) : undefined;
    const current = this.sampling.get(name);
    if (current === wanted) return;
    if (current && !current.isClosed) current.call('worker.metrics.watch', { on: false }).catch(() => undefined);
    this.sampling.delete(name);
    if (!wanted) return;
    this.sampling.set(name, wanted);
    if (!this.listening.has(wanted)) {
      this.listening.add(wanted);
      wanted.connection.onNotification('worker.metrics', (m: VmMetrics) => {
        if (this.sampling.get(name) === wanted) this.forward(name, m);
      });
    }
    wanted.call('worker.metrics.watch', { on: true }).catch((err) => this.log(`${name}: cannot watch metrics: ${(err as Error).message}`));
  }

  private forward(name: string, m: VmMetrics): void {
    for (const peer of this.watchers.get(name) ?? []) peer.notify('vm.metrics', { ...m, name });
  }
}

function safe<T>(f: () => T): T | undefined {
  try {
    return f();
  } catch {
    return undefined;
  }
}
