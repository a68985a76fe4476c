/**
 * The service's workspace syncs as this window knows them: fed by `sync.status` and `sync.removed`
 * notifications (and one `sync.list` on each new service connection), never by polling. The tree
 * and the status bar render it; commands wait on it.
 */
import * as vscode from 'vscode';
import type { ServiceClient } from '../../runtime/client/serviceClient';
import { SyncClient } from '../../runtime/client/syncClient';
import type { SyncStatus } from '../../runtime/sync/types';
import type { ServiceConnection } from '../model/serviceConnection';

export interface SyncChange {
  vm: string;
  id: string;
  /** 'added' and 'removed' change a VM's children; 'changed' only the sync's own item. */
  kind: 'added' | 'changed' | 'removed';
}

export class SyncModel implements vscode.Disposable {
  private readonly syncs = new Map<string, SyncStatus>();
  private readonly errors = new Map<string, { message: string; at: number }>();
  private readonly changed = new vscode.EventEmitter<SyncChange | undefined>();
  /** One change, or undefined when the whole list was read again. */
  readonly onDidChange = this.changed.event;
  private readonly subscriptions: vscode.Disposable[] = [];
  private following?: { client: ServiceClient; sync: SyncClient; ready: Promise<void> };

  constructor(private readonly connection: ServiceConnection<ServiceClient>, private readonly log: (m: string) => void) {
    this.subscriptions.push(connection.onDidChangeState((state) => {
      if (state === 'connected') void this.ready().catch((err) => log(`sync status: ${(err as Error).message}`));
    }));
    if (connection.state === 'connected') void this.ready().catch((err) => log(`sync status: ${(err as Error).message}`));
  }

  /** Resolves once this window follows the current service connection's syncs. */
  async ready(): Promise<void> {
    const client = await this.connection.client();
    if (this.following?.client !== client) {
      const sync = new SyncClient(client);
      const ready = this.follow(sync).catch((err) => {
        if (this.following?.sync === sync) this.following = undefined;
        throw err;
      });
      this.following = { client, sync, ready };
    }
    return this.following.ready;
  }

  /** The `sync.*` calls of the current connection, once this window follows its syncs. */
  async client(): Promise<SyncClient> {
    await this.ready();
    return this.following!.sync;
  }

  private async follow(sync: SyncClient): Promise<void> {
    await sync.onStatus(
      (s) => {
        const key = `${s.vm}/${s.id}`;
        const known = this.syncs.has(key);
        this.syncs.set(key, s);
        if (s.state === 'error') this.errors.set(key, { message: s.message, at: Date.now() });
        this.changed.fire({ vm: s.vm, id: s.id, kind: known ? 'changed' : 'added' });
      },
      (vm, id) => {
        this.errors.delete(`${vm}/${id}`);
        if (this.syncs.delete(`${vm}/${id}`)) this.changed.fire({ vm, id, kind: 'removed' });
      },
    );
    const all = await sync.list();
    this.syncs.clear();
    for (const s of all) {
      this.syncs.set(`${s.vm}/${s.id}`, s);
      if (s.state === 'error') this.errors.set(`${s.vm}/${s.id}`, { message: s.message, at: Date.now() });
    }
    this.changed.fire(undefined);
  }

  get(vm: string, id: string): SyncStatus | undefined {
    return this.syncs.get(`${vm}/${id}`);
  }

  /** The last error this window saw from the sync (it may have recovered since). */
  lastError(vm: string, id: string): { message: string; at: number } | undefined {
    return this.errors.get(`${vm}/${id}`);
  }

  /** Every sync, or one VM's, in the order they were first seen. */
  list(vm?: string): SyncStatus[] {
    const all = [...this.syncs.values()];
    return vm === undefined ? all : all.filter((s) => s.vm === vm);
  }

  dispose(): void {
    this.subscriptions.forEach((s) => s.dispose());
    this.changed.dispose();
  }
}
