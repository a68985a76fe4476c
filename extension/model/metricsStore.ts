/**
 * Live figures of the VMs someone looks at (the details panel, the visible tree): the service's
 * `vm.metrics` samples (about one a second per watched VM), kept for the last HISTORY_MS. Watching
 * is counted per VM: the service is asked to watch a VM while at least one `watch` of it is open,
 * and asked again after a reconnect (a new service knows nothing of the old connection's watches).
 * Nothing polls; a VM no one watches is not sampled. No vscode import (unit-tested in plain Node).
 */
import type { VmMetricsEvent } from '../../runtime/client/serviceClient';
import type { GuestSummary } from '../../runtime/worker/metrics';
import { Emitter, type Disposable, type Event } from './event';
import type { ConnectionState } from './serviceConnection';

/** Samples older than this are dropped (the details panel plots this span). */
export const HISTORY_MS = 5 * 60_000;

export interface MetricsClient {
  onMetrics(name: string, listener: (m: VmMetricsEvent) => void): Promise<() => Promise<void>>;
}

export interface MetricsConnection {
  client(): Promise<MetricsClient>;
  readonly state: ConnectionState;
  onDidChangeState: Event<ConnectionState>;
}

interface Watched {
  count: number;
  /** Stops the current subscription (of the client it was made on). */
  stop?: () => Promise<void>;
  client?: MetricsClient;
  samples: VmMetricsEvent[];
  guestInfo?: GuestSummary;
}

export class MetricsStore implements Disposable {
  private readonly watched = new Map<string, Watched>();
  private readonly changed = new Emitter<string>();
  /** A VM's figures changed (its name). */
  readonly onDidChange = this.changed.event;
  private readonly stateSub: Disposable;
  private disposed = false;

  constructor(private readonly connection: MetricsConnection, private readonly log: (m: string) => void) {
    this.stateSub = connection.onDidChangeState((s) => {
      if (s === 'connected') for (const name of this.watched.keys()) void this.subscribe(name);
    });
  }

  /** Starts watching `name` (counted); the returned disposable stops this watch (idempotent). */
  watch(name: string): Disposable {
    let w = this.watched.get(name);
    if (!w) {
      this.watched.set(name, (w = { count: 0, samples: [] }));
      void this.subscribe(name);
    }
    w.count++;
    let done = false;
    return {
      dispose: () => {
        if (done) return;
        done = true;
        const cur = this.watched.get(name);
        if (cur !== w || --cur.count > 0) return;
        this.watched.delete(name);
        void cur.stop?.().catch(() => undefined);
      },
    };
  }

  isWatched(name: string): boolean {
    return this.watched.has(name);
  }

  /** The samples of the last HISTORY_MS, oldest first (empty when not watched). */
  history(name: string): readonly VmMetricsEvent[] {
    return this.watched.get(name)?.samples ?? [];
  }

  latest(name: string): VmMetricsEvent | undefined {
    return this.watched.get(name)?.samples.at(-1);
  }

  /** The guest's OS, addresses and listening ports from the latest sample that had them (cleared when the VM stops running). */
  guestInfo(name: string): GuestSummary | undefined {
    return this.watched.get(name)?.guestInfo;
  }

  /** Subscribes `name` on the current client, unless it already is. */
  private async subscribe(name: string): Promise<void> {
    const w = this.watched.get(name);
    if (!w || this.disposed) return;
    let client: MetricsClient;
    try {
      client = await this.connection.client();
    } catch {
      return; // the next `connected` subscribes again
    }
    if (this.watched.get(name) !== w || w.client === client) return;
    w.client = client;
    try {
      const stop = await client.onMetrics(name, (m) => this.add(name, w, m));
      if (this.watched.get(name) !== w || w.client !== client) return void stop().catch(() => undefined);
      w.stop = stop;
    } catch (err) {
      w.client = undefined;
      this.log(`cannot watch the figures of ${name}: ${(err as Error).message}`);
    }
  }

  private add(name: string, w: Watched, m: VmMetricsEvent): void {
    if (this.watched.get(name) !== w) return;
    w.samples.push(m);
    const cutoff = m.at - HISTORY_MS;
    let drop = 0;
    while (drop < w.samples.length && w.samples[drop].at < cutoff) drop++;
    if (drop > 0) w.samples.splice(0, drop);
    if (m.guestInfo) w.guestInfo = m.guestInfo;
    else if (m.state !== 'running') w.guestInfo = undefined;
    this.changed.fire(name);
  }

  dispose(): void {
    this.disposed = true;
    this.stateSub.dispose();
    for (const w of this.watched.values()) void w.stop?.().catch(() => undefined);
    this.watched.clear();
    this.changed.dispose();
  }
}
