/**
 * The one picture of the VMs the extension has: whole VmInfo snapshots from the service's
 * `vm.status` / `vm.removed` events and `vm.list` answers go in; `onDidChange` comes out. Views,
 * status items and pickers read it; nothing else asks the service for state.
 */
import type { VmInfo } from '../../runtime/common/status';
import { Emitter } from './event';

/** What changed: one VM by name, or undefined for the whole list (added, removed, replaced). */
export type ModelChange = { name: string } | undefined;

export class VmModel {
  private readonly vms = new Map<string, VmInfo>();
  private readonly changed = new Emitter<ModelChange>();
  readonly onDidChange = this.changed.event;

  /** Sorted by name. */
  list(): VmInfo[] {
    return [...this.vms.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  get(name: string): VmInfo | undefined {
    return this.vms.get(name);
  }

  get size(): number {
    return this.vms.size;
  }

  /** A status snapshot: replaces what was known of that VM. */
  update(info: VmInfo): void {
    const known = this.vms.has(info.name);
    this.vms.set(info.name, info);
    this.changed.fire(known ? { name: info.name } : undefined);
  }

  remove(name: string): void {
    if (this.vms.delete(name)) this.changed.fire(undefined);
  }

  /** The whole list (after a connect): VMs not in it are gone. */
  replaceAll(infos: VmInfo[]): void {
    this.vms.clear();
    for (const info of infos) this.vms.set(info.name, info);
    this.changed.fire(undefined);
  }

  /**
   * Resolves with the VM's snapshot once `predicate` holds (at once if it already does); rejects
   * after `timeoutMs`. Waits on events, never polls.
   */
  waitFor(name: string, predicate: (info: VmInfo | undefined) => boolean, timeoutMs: number): Promise<VmInfo | undefined> {
    if (predicate(this.vms.get(name))) return Promise.resolve(this.vms.get(name));
    return new Promise((resolve, reject) => {
      const sub = this.onDidChange(() => {
        const info = this.vms.get(name);
        if (!predicate(info)) return;
        clearTimeout(timer);
        sub.dispose();
        resolve(info);
      });
      const timer = setTimeout(() => {
        sub.dispose();
        reject(new Error(`${name}: the expected state did not come within ${timeoutMs} ms (now ${this.vms.get(name)?.state ?? 'absent'})`));
      }, timeoutMs);
    });
  }

  dispose(): void {
    this.changed.dispose();
  }
}
