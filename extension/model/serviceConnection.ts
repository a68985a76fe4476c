/**
 * The extension's one connection to the service. Connects on first need (starting the service when
 * none runs, as the CLI does), subscribes to status events and feeds the VmModel. When the service
 * goes away (killed, restarted, upgraded) it says `reconnecting`, connects again with backoff
 * (starting a new service), and lists the VMs afresh; each connection's listeners die with it, so
 * no event is ever heard twice.
 */
import type { ServiceClient } from '../../runtime/client/serviceClient';
import { compareVersions } from '../../runtime/common/version';
import { Emitter } from './event';
import type { VmModel } from './vmModel';

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'failed';

/** The part of ServiceClient the connection needs (tests pass a fake). */
export type ServiceHandle = Pick<ServiceClient, 'subscribe' | 'list' | 'dispose' | 'serviceInfo' | 'shutdownService'> & {
  connection: { onClose(listener: () => void): unknown };
};

export interface ConnectionOptions<C extends ServiceHandle> {
  connect: () => Promise<C>;
  log: (message: string) => void;
  /** Delays between attempts, in ms; the last repeats. Default 250, 500, 1000, 2000, 5000. */
  backoffMs?: number[];
  /** Attempts without success before the state reads `failed` (retries go on). Default 6. */
  attemptsBeforeFailed?: number;
  /**
   * This client's runtime version. A service reporting an older one is replaced once (asked to
   * exit; the next connect starts this version's service, which adopts the running VMs); a newer
   * one is used as it is and reported through `onNewerService`.
   */
  version?: string;
  onNewerService?: (serviceVersion: string) => void;
}

export class ServiceConnection<C extends ServiceHandle = ServiceClient> {
  private current?: C;
  private pending?: Promise<C>;
  private retryTimer?: NodeJS.Timeout;
  private attempts = 0;
  private disposed = false;
  private everConnected = false;
  private stateValue: ConnectionState = 'idle';
  private readonly stateChanged = new Emitter<ConnectionState>();
  readonly onDidChangeState = this.stateChanged.event;
  private readonly waiters: { resolve: (c: C) => void; reject: (e: Error) => void }[] = [];
  private lastError?: Error;
  private replacedOlder = false;
  private reportedNewer = false;

  constructor(private readonly model: VmModel, private readonly options: ConnectionOptions<C>) {}

  get state(): ConnectionState {
    return this.stateValue;
  }

  /** Why the last attempt failed (for the `failed` view). */
  get error(): Error | undefined {
    return this.lastError;
  }

  /**
   * The connected client: at once when connected, otherwise after the next successful attempt
   * (starting one if none is under way). Rejects when an attempt fails while none succeeded yet
   * since the call, so a command says why instead of waiting forever.
   */
  client(): Promise<C> {
    if (this.current) return Promise.resolve(this.current);
    if (this.disposed) return Promise.reject(new Error('the extension is shutting down'));
    const p = new Promise<C>((resolve, reject) => this.waiters.push({ resolve, reject }));
    if (!this.pending) this.attempt();
    return p;
  }

  /** Starts connecting if nothing is connected or under way (views call this when shown). */
  ensure(): void {
    if (!this.current && !this.pending && !this.retryTimer && !this.disposed) this.attempt();
  }

  /** Refresh: when connected, lists the VMs again; otherwise tries at once. */
  async refresh(): Promise<void> {
    if (this.current) {
      this.model.replaceAll(await this.current.list());
      return;
    }
    clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
    await this.client();
  }

  private setState(state: ConnectionState): void {
    if (state === this.stateValue) return;
    this.stateValue = state;
    this.stateChanged.fire(state);
  }

  private attempt(): void {
    if (this.disposed) return;
    this.setState(this.everConnected ? 'reconnecting' : this.stateValue === 'failed' ? 'failed' : 'connecting');
    const pending = this.options.connect().then((c) => this.checkVersion(c)).then(async (client) => {
      let closed = false;
      client.connection.onClose(() => {
        closed = true;
        this.lost(client);
      });
      try {
        await client.subscribe((info) => this.model.update(info), (name) => this.model.remove(name));
        // One socket, in order: events published before this answer arrived before it.
        const list = await client.list();
        if (closed) throw new Error('the service closed the connection');
        this.model.replaceAll(list);
      } catch (err) {
        client.dispose();
        throw err;
      }
      return client;
    });
    this.pending = pending;
    pending.then(
      (client) => {
        if (this.pending === pending) this.pending = undefined;
        if (this.disposed) return client.dispose();
        this.current = client;
        this.attempts = 0;
        this.lastError = undefined;
        if (this.everConnected) this.options.log('reconnected to the service');
        this.everConnected = true;
        this.setState('connected');
        for (const w of this.waiters.splice(0)) w.resolve(client);
      },
      (err: Error) => {
        if (this.pending === pending) this.pending = undefined;
        if (this.disposed) return;
        this.attempts++;
        this.lastError = err;
        this.options.log(`cannot reach the service (attempt ${this.attempts}): ${err.message}`);
        for (const w of this.waiters.splice(0)) w.reject(err);
        if (this.attempts >= (this.options.attemptsBeforeFailed ?? 6)) this.setState('failed');
        this.scheduleRetry();
      },
    );
  }

  /** Replaces an older service once (see `version`); returns the client to use. */
  private async checkVersion(client: C): Promise<C> {
    const mine = this.options.version;
    if (!mine) return client;
    let theirs: string;
    try {
      theirs = (await client.serviceInfo()).version;
    } catch (err) {
      client.dispose();
      throw err;
    }
    const cmp = compareVersions(theirs, mine);
    if (cmp > 0 && !this.reportedNewer) {
      this.reportedNewer = true;
      this.options.onNewerService?.(theirs);
    }
    if (cmp >= 0 || this.replacedOlder) return client;
    this.replacedOlder = true;
    this.options.log(`the running service is version ${theirs}, older than this extension's ${mine}: replacing it (VMs keep running)`);
    const gone = new Promise<void>((resolve) => {
      client.connection.onClose(() => resolve());
      setTimeout(resolve, 5000);
    });
    await client.shutdownService().catch(() => undefined);
    await gone;
    client.dispose();
    return this.checkVersion(await this.options.connect());
  }

  private scheduleRetry(): void {
    const backoff = this.options.backoffMs ?? [250, 500, 1000, 2000, 5000];
    const delay = backoff[Math.min(this.attempts, backoff.length - 1)];
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined;
      if (!this.current && !this.pending) this.attempt();
    }, delay);
  }

  private lost(client: C): void {
    if (this.current !== client) return;
    this.current = undefined;
    client.dispose();
    if (this.disposed) return;
    this.options.log('the connection to the service was lost; reconnecting');
    this.setState('reconnecting');
    this.attempts = 0;
    this.scheduleRetry();
  }

  dispose(): void {
    this.disposed = true;
    clearTimeout(this.retryTimer);
    this.current?.dispose();
    this.current = undefined;
    for (const w of this.waiters.splice(0)) w.reject(new Error('the extension is shutting down'));
    this.stateChanged.dispose();
  }
}
