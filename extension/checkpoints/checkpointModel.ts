/**
 * Every VM's checkpoint tree as this window knows it: read with `vm.checkpoint.list` once per VM
 * on each service connection and again when the service says a VM's checkpoints changed (the
 * `vm.checkpoints` notification), never polled. `onDidChange` fires only when a VM's list really
 * differs from what was shown, so the tree is not re-rendered (and hovers dropped) for nothing.
 */
import * as vscode from 'vscode';
import type { ServiceClient } from '../../runtime/client/serviceClient';
import { call } from '../../runtime/common/rpc';
import type { CheckpointList } from '../../runtime/service/checkpoints';
import type { ServiceConnection } from '../model/serviceConnection';
import type { VmModel } from '../model/vmModel';

interface Known {
  /** The VM's id when listed: a VM deleted and made again under the same name is listed afresh. */
  vmId: string;
  list?: CheckpointList;
  text?: string;
  /** A read under way, and whether another is wanted after it. */
  reading?: Promise<void>;
  again?: boolean;
}

export class CheckpointModel implements vscode.Disposable {
  private readonly known = new Map<string, Known>();
  private readonly changed = new vscode.EventEmitter<string>();
  /** A VM's checkpoint list changed (its name). */
  readonly onDidChange = this.changed.event;
  private readonly subscriptions: { dispose(): void }[] = [];
  private following?: ServiceClient;

  constructor(private readonly connection: ServiceConnection<ServiceClient>, private readonly model: VmModel, private readonly log: (m: string) => void) {
    this.subscriptions.push(
      connection.onDidChangeState((state) => {
        if (state === 'connected') void this.follow();
      }),
      model.onDidChange(() => this.reconcile()),
    );
    if (connection.state === 'connected') void this.follow();
  }

  /** What is known of `vm`'s checkpoints (undefined until its first read answers). */
  get(vm: string): CheckpointList | undefined {
    return this.known.get(vm)?.list;
  }

  /** Reads `vm`'s list now (commands call it after acting, so tests and the tree need not wait for the event). */
  async refresh(vm: string): Promise<CheckpointList | undefined> {
    await this.read(vm);
    return this.get(vm);
  }

  private async follow(): Promise<void> {
    try {
      const client = await this.connection.client();
      if (this.following !== client) {
        this.following = client;
        client.connection.onNotification('vm.checkpoints', (p: { name?: unknown }) => {
          if (typeof p?.name === 'string' && this.model.get(p.name)) void this.read(p.name);
        });
        await call(client.connection, 'service.subscribe');
      }
      for (const info of this.model.list()) void this.read(info.name);
    } catch (err) {
      this.log(`checkpoints: ${(err as Error).message}`);
    }
  }

  /** VMs that appeared get their first read; VMs that went are forgotten. */
  private reconcile(): void {
    const names = new Set(this.model.list().map((i) => i.name));
    for (const [name, k] of this.known) {
      if (names.has(name) && this.model.get(name)?.config.id === k.vmId) continue;
      this.known.delete(name);
      if (k.list) this.changed.fire(name);
    }
    if (this.connection.state !== 'connected') return;
    for (const name of names) if (!this.known.has(name)) void this.read(name);
  }

  private read(vm: string): Promise<void> {
    const vmId = this.model.get(vm)?.config.id ?? '';
    let k = this.known.get(vm);
    if (!k || k.vmId !== vmId) this.known.set(vm, (k = { vmId }));
    if (k.reading) {
      k.again = true;
      return k.reading;
    }
    const entry = k;
    entry.reading = (async () => {
      do {
        entry.again = false;
        try {
          const list = await (await this.connection.client()).listCheckpoints(vm);
          if (this.known.get(vm) !== entry) return;
          const text = JSON.stringify({ ...list, state: undefined });
          if (text === entry.text) continue;
          entry.list = list;
          entry.text = text;
          this.changed.fire(vm);
        } catch (err) {
          this.log(`checkpoints of ${vm}: ${(err as Error).message}`);
        }
      } while (entry.again);
    })().finally(() => (entry.reading = undefined));
    return entry.reading;
  }

  dispose(): void {
    for (const s of this.subscriptions) s.dispose();
    this.changed.dispose();
  }
}
