/**
 * One session connection per VM for the guest file system, made on first need and dropped when
 * the VM leaves `running` (stopped, saved, paused, gone) so nothing waits on a worker that is not
 * coming back. `onDidRun` fires when a VM becomes reachable again (running with its agent
 * connected) so watches are opened again and views re-read.
 */
import * as vscode from 'vscode';
import type { SessionClient } from '../../runtime/client/sessionClient';
import type { VmInfo } from '../../runtime/common/status';
import type { VmModel } from '../model/vmModel';
import { notRunningMessage } from './guestFsErrors';

export function isReachable(info: VmInfo | undefined): boolean {
  return info?.state === 'running' && info.runtime?.agent.connected === true;
}

export class GuestConnections implements vscode.Disposable {
  private readonly clients = new Map<string, Promise<SessionClient>>();
  private readonly reachable = new Set<string>();
  private readonly ran = new vscode.EventEmitter<string>();
  /** A VM became reachable (again): its name. */
  readonly onDidRun = this.ran.event;
  private readonly subscription: { dispose(): void };

  /**
   * `ready`: resolves once the service is connected and the model holds its VMs (the first call of
   * a window opened on a guest folder comes before anything else asked for them).
   */
  constructor(private readonly model: VmModel, private readonly ready: () => Promise<unknown>, private readonly attach: (vm: string) => Promise<SessionClient>) {
    for (const info of model.list()) if (isReachable(info)) this.reachable.add(info.name);
    this.subscription = model.onDidChange(() => this.refresh());
  }

  private refresh(): void {
    const now = new Set(this.model.list().filter(isReachable).map((i) => i.name));
    for (const vm of [...this.reachable]) {
      if (now.has(vm)) continue;
      this.reachable.delete(vm);
      this.drop(vm);
    }
    for (const vm of now) {
      if (this.reachable.has(vm)) continue;
      this.reachable.add(vm);
      this.ran.fire(vm);
    }
  }

  /** The sentence a call on `vm` fails with while it is not reachable. */
  unavailableMessage(vm: string): string {
    const info = this.model.get(vm);
    if (info?.state === 'running') return `the guest agent of sandbox VM ${vm} is not connected yet; try again in a moment`;
    return notRunningMessage(vm, info?.state);
  }

  /** The VM's session connection; FileSystemError.Unavailable (one sentence) when it is not running. */
  async sessions(vm: string): Promise<SessionClient> {
    if (!isReachable(this.model.get(vm))) {
      await this.ready();
      if (!isReachable(this.model.get(vm))) throw vscode.FileSystemError.Unavailable(this.unavailableMessage(vm));
    }
    let client = this.clients.get(vm);
    if (!client) {
      client = this.attach(vm);
      this.clients.set(vm, client);
      client.catch(() => {
        if (this.clients.get(vm) === client) this.clients.delete(vm);
      });
    }
    return client;
  }

  /**
   * Waits up to `timeoutMs` for `vm`'s agent to answer again (running, connected, heartbeats
   * coming); false when it does not. A guest busy with a bulk transfer under a loaded host can miss
   * heartbeats for a few seconds, and calls are refused meanwhile.
   */
  async settled(vm: string, timeoutMs: number): Promise<boolean> {
    const ok = (i: VmInfo | undefined) => isReachable(i) && i!.runtime!.agent.responding !== false;
    return this.model.waitFor(vm, ok, timeoutMs).then(() => true, () => false);
  }

  /** Forgets `vm`'s connection (its VM stopped, or a call found it broken); the next call makes a new one. */
  drop(vm: string): void {
    const client = this.clients.get(vm);
    this.clients.delete(vm);
    void client?.then((c) => c.dispose(), () => undefined);
  }

  dispose(): void {
    this.subscription.dispose();
    for (const vm of [...this.clients.keys()]) this.drop(vm);
    this.ran.dispose();
  }
}
