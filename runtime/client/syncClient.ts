/**
 * The service's workspace syncs from a client (CLI, extension): start, stop, list, and follow
 * their status. A thin typed layer over `sync.*` (service/syncManager.ts) on a ServiceClient's
 * connection.
 */
import { call } from '../common/rpc';
import type { SyncStatus } from '../sync/types';
import type { ServiceClient } from './serviceClient';

export interface AddSyncParams {
  hostDir: string;
  /** Absolute guest folder; default /root/<basename of hostDir>. */
  guestPath?: string;
  ignore?: string[];
  /** Honour .gitignore files (default true). */
  gitignore?: boolean;
}

/** One per ServiceClient: it takes the connection's `sync.status` and `sync.removed` notifications. */
export class SyncClient {
  private readonly listeners = new Set<(s: SyncStatus) => void>();
  private readonly removedListeners = new Set<(vm: string, id: string) => void>();
  private subscribed?: Promise<void>;

  constructor(private readonly service: ServiceClient) {}

  /** Starts syncing `hostDir` into the running VM `name` (the same pair again answers the sync there). */
  add(name: string, params: AddSyncParams): Promise<SyncStatus> {
    return call(this.service.connection, 'sync.add', { name, ...params });
  }

  /** Stops the VM's sync `which` (its id or host folder), or all of them; the guest keeps its files. */
  remove(name: string, which?: { id?: string; hostDir?: string }): Promise<{ removed: string[] }> {
    return call(this.service.connection, 'sync.remove', { name, ...which });
  }

  /** Every sync (of one VM when `name` is given), with its status now. */
  list(name?: string): Promise<SyncStatus[]> {
    return call(this.service.connection, 'sync.list', name === undefined ? {} : { name });
  }

  /** Status snapshots of every sync as they change, until the returned function is called. */
  async onStatus(listener: (s: SyncStatus) => void, onRemoved?: (vm: string, id: string) => void): Promise<() => void> {
    this.listeners.add(listener);
    if (onRemoved) this.removedListeners.add(onRemoved);
    this.subscribed ??= (async () => {
      this.service.connection.onNotification('sync.status', (s: SyncStatus) => this.listeners.forEach((l) => l(s)));
      this.service.connection.onNotification('sync.removed', (p: { vm: string; id: string }) => this.removedListeners.forEach((l) => l(p.vm, p.id)));
      await call(this.service.connection, 'service.subscribe');
    })();
    await this.subscribed;
    return () => {
      this.listeners.delete(listener);
      if (onRemoved) this.removedListeners.delete(onRemoved);
    };
  }
}
