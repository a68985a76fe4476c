/**
 * Port forwarding, the host side (in the worker): one TCP listener per forward, on 127.0.0.1 unless
 * the user asked for another address; each accepted connection is one `connect` session on the
 * channel (the guest's relay connects to the port inside the guest and moves the bytes), so it works
 * whatever the VM's network is, with no NIC at all.
 *
 * - Automatic forwards: every TCP port the guest listens on (the agent's `listening`, asked every
 *   POLL_MS while the VM runs) is forwarded to the same host port, or when that is taken to the next
 *   free one of the following AUTO_TRIES - 1, or else to one the OS picks. A port the guest stops
 *   listening on loses its forward. Off when the VM's configuration says `ports.auto: false`.
 * - Manual forwards (vm.json `ports.forwards`): kept whether or not the guest listens; a listener
 *   that cannot be made is reported with its reason (`failed`), never silently dropped, and tried
 *   again every POLL_MS (the program holding the host port may let it go).
 * - Backpressure both ways: guest output is acknowledged to the guest only once the host socket
 *   has taken it; the client is paused while its bytes wait for the guest's credit. Half-close both
 *   ways: the client's FIN is an EOF on stdin (shutdown(SHUT_WR) in the guest), the guest's is
 *   `end()` on the client socket.
 * - A save ends every connection cleanly (FIN) and refuses new ones until the VM runs again; a new
 *   worker (restore, takeover) listens again from the configuration.
 */
import { EventEmitter } from 'node:events';
import * as net from 'node:net';
import { ErrorCode, SandboxError } from '../common/errors';
import { LOOPBACK, MAX_FORWARDS, bindFailure, checkBindAddress, isPort, parseListening, type ForwardStatus, type GuestListener, type ManualForward, type PortsConfig } from '../common/ports';
import type { VmState } from '../common/status';
import { StreamId } from '../protocol/frames';
import type { AgentLink, HostSession } from './agentLink';

/** How often the guest's listening ports are looked at while the VM runs. */
export const POLL_MS = 2000;
/** Host ports tried for an automatic forward (the guest's port, then the next ones) before the OS picks. */
const AUTO_TRIES = 16;
/** Connection counts in the status are published at most this often. */
const COUNT_MS = 1000;
/** Client bytes waiting for the guest's credit before the client is paused. */
const CLIENT_HIGH_WATER = 256 * 1024;

export interface ForwarderSource {
  agent(): AgentLink | undefined;
  state(): VmState;
  vmName: string;
  log(message: string): void;
}

interface Forward {
  status: ForwardStatus;
  server?: net.Server;
  /** Where connections go inside the guest. */
  connectTo: string;
  sockets: Set<net.Socket>;
}

export class PortForwarder {
  private readonly emitter = new EventEmitter();
  private readonly manual = new Map<number, Forward>(); // by host port
  private readonly auto = new Map<number, Forward>(); // by guest port
  /** Guest ports whose automatic forward is being set up (not shown until its listener is up). */
  private readonly autoPending = new Set<number>();
  private listening = new Map<number, GuestListener>();
  private listeningKnown = false;
  private timer?: NodeJS.Timeout;
  private polling = false;
  private suspended = false;
  private disposed = false;

  constructor(private config: PortsConfig, private readonly source: ForwarderSource) {}

  onDidChange(listener: () => void): void {
    this.emitter.on('change', listener);
  }

  private changed(): void {
    clearTimeout(this.countTimer);
    this.countTimer = undefined;
    this.emitter.emit('change');
  }

  /**
   * A connection opened or closed: the counts in the status change, but a browser opening dozens
   * of connections must not send dozens of status snapshots to every client: at most one per COUNT_MS.
   */
  private countsChanged(): void {
    this.countTimer ??= setTimeout(() => this.changed(), COUNT_MS);
  }

  private countTimer?: NodeJS.Timeout;

  /** Makes the manual forwards' listeners and starts watching the guest's ports. */
  async start(): Promise<void> {
    for (const f of this.config.forwards) await this.addManual(f, false).catch(() => undefined);
    this.timer = setInterval(() => void this.poll(), POLL_MS);
    void this.poll();
  }

  /** Every forward, manual first, each by host port. */
  status(): ForwardStatus[] {
    const all = [...this.manual.values(), ...this.auto.values()].map((f) => ({ ...f.status, connections: f.sockets.size }));
    return all.sort((a, b) => (a.origin === b.origin ? a.hostPort - b.hostPort : a.origin === 'manual' ? -1 : 1));
  }

  /**
   * Adds a manual forward and listens for it. With `strict` (a user asking now), a listener that
   * cannot be made throws its one-sentence reason and nothing is kept; without (a forward from the
   * configuration), it is kept as `failed` with that reason.
   */
  async addManual(spec: ManualForward, strict = true): Promise<ForwardStatus> {
    const address = checkBindAddress(spec.address);
    if (!isPort(spec.guestPort) || !isPort(spec.hostPort)) throw new SandboxError(ErrorCode.BadArgument, 'ports must be between 1 and 65535');
    if (this.manual.has(spec.hostPort)) throw new SandboxError(ErrorCode.BadArgument, `host port ${spec.hostPort} is already forwarded (to guest port ${this.manual.get(spec.hostPort)!.status.guestPort})`);
    if (this.manual.size >= MAX_FORWARDS) throw new SandboxError(ErrorCode.BadArgument, `at most ${MAX_FORWARDS} forwards per VM`);
    // An automatic forward holding the host port, or of the same guest port, makes way.
    for (const [guestPort, f] of this.auto) {
      if (f.status.hostPort === spec.hostPort || guestPort === spec.guestPort) this.closeForward(this.auto, guestPort, f);
    }
    const forward: Forward = {
      status: { origin: 'manual', guestPort: spec.guestPort, hostPort: spec.hostPort, address, state: 'active', connections: 0, guestListening: this.listeningKnown ? this.listening.has(spec.guestPort) : undefined },
      connectTo: this.listening.get(spec.guestPort)?.connectTo ?? LOOPBACK,
      sockets: new Set(),
    };
    try {
      forward.server = await this.listen(forward, address, spec.hostPort);
    } catch (err) {
      const message = bindFailure(this.source.vmName, { ...spec, address }, (err as NodeJS.ErrnoException).code);
      if (strict) throw new SandboxError(ErrorCode.BadArgument, message);
      forward.status.state = 'failed';
      forward.status.error = message;
      this.source.log(`port forward ${spec.guestPort} -> ${address}:${spec.hostPort} failed: ${message}`);
    }
    this.manual.set(spec.hostPort, forward);
    this.config = { ...this.config, forwards: [...this.config.forwards.filter((f) => f.hostPort !== spec.hostPort), { ...spec, address }] };
    if (forward.status.state === 'active') this.source.log(`forwarding ${address}:${spec.hostPort} -> guest port ${spec.guestPort}`);
    this.changed();
    void this.poll();
    return { ...forward.status };
  }

  /** Removes the manual forward on `hostPort`, closing its connections. Throws when there is none. */
  removeManual(hostPort: number): void {
    const f = this.manual.get(hostPort);
    if (!f) throw new SandboxError(ErrorCode.BadArgument, `no forward on host port ${hostPort}; see \`sandboxvm port list ${this.source.vmName}\``);
    this.closeForward(this.manual, hostPort, f);
    this.config = { ...this.config, forwards: this.config.forwards.filter((x) => x.hostPort !== hostPort) };
    this.changed();
    void this.poll();
  }

  /** Turns automatic forwarding on or off (off closes the automatic forwards at once). */
  setAuto(on: boolean): void {
    this.config = { ...this.config, auto: on };
    if (!on) for (const [port, f] of this.auto) this.closeForward(this.auto, port, f);
    this.changed();
    void this.poll();
  }

  /**
   * The VM's state changed: a save (or any state but running) ends every connection cleanly (the
   * client gets EOF after the bytes it was sent; the guest's end is closed) and refuses new ones;
   * running again accepts them.
   */
  vmStateChanged(state: VmState): void {
    const suspend = state !== 'running' && state !== 'paused';
    if (suspend && !this.suspended) {
      for (const f of this.allForwards()) for (const s of f.sockets) this.endConnection.get(s)?.();
    }
    this.suspended = suspend;
  }

  /** Ends one connection on purpose: the guest session closed, the client sent EOF (not a reset). */
  private readonly endConnection = new WeakMap<net.Socket, () => void>();

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    clearInterval(this.timer);
    clearTimeout(this.countTimer);
    for (const [port, f] of this.manual) this.closeForward(this.manual, port, f);
    for (const [port, f] of this.auto) this.closeForward(this.auto, port, f);
  }

  private allForwards(): Forward[] {
    return [...this.manual.values(), ...this.auto.values()];
  }

  private closeForward(map: Map<number, Forward>, key: number, f: Forward): void {
    map.delete(key);
    f.server?.close();
    for (const s of f.sockets) s.destroy();
    f.sockets.clear();
  }

  /** Asks the guest which ports it listens on and brings the forwards in line. One look at a time. */
  private async poll(): Promise<void> {
    const agent = this.source.agent();
    if (this.polling || this.disposed || this.source.state() !== 'running' || !agent?.connected) return;
    this.polling = true;
    try {
      const listening = await this.askListening(agent);
      if (this.disposed) return;
      this.listening = parseListening(listening);
      this.listeningKnown = true;
      await this.reconcile();
    } catch {
      // the next look tries again (the agent may be busy or restarting)
    } finally {
      this.polling = false;
    }
  }

  /** An older agent has no `listening` call: its `info` says the same, at more cost. */
  private listeningUnsupported = false;

  private async askListening(agent: AgentLink): Promise<string[]> {
    if (!this.listeningUnsupported) {
      try {
        return (await agent.call('listening', {}, 10_000)) as string[];
      } catch (err) {
        if (!/unknown method/.test((err as Error).message)) throw err;
        this.listeningUnsupported = true;
      }
    }
    return ((await agent.call('info', {}, 10_000)) as { listening: string[] }).listening;
  }

  private async reconcile(): Promise<void> {
    let changed = false;
    for (const f of this.manual.values()) {
      // A host port another program held may be free now: a failed forward keeps trying.
      if (f.status.state === 'failed' && !f.server) {
        try {
          f.server = await this.listen(f, f.status.address, f.status.hostPort);
          if (this.disposed || this.manual.get(f.status.hostPort) !== f) {
            f.server.close();
            continue;
          }
          f.status.state = 'active';
          f.status.error = undefined;
          this.source.log(`forwarding ${f.status.address}:${f.status.hostPort} -> guest port ${f.status.guestPort} (the host port is free now)`);
          changed = true;
        } catch {
          // still taken
        }
      }
      const listening = this.listening.has(f.status.guestPort);
      if (f.status.guestListening !== listening) changed = true;
      f.status.guestListening = listening;
      f.connectTo = this.listening.get(f.status.guestPort)?.connectTo ?? LOOPBACK;
    }
    const manualGuestPorts = new Set([...this.manual.values()].map((f) => f.status.guestPort));
    for (const [guestPort, f] of this.auto) {
      if (!this.config.auto || !this.listening.has(guestPort) || manualGuestPorts.has(guestPort)) {
        this.source.log(`guest port ${guestPort} is not listening any more: stopped forwarding ${f.status.address}:${f.status.hostPort}`);
        this.closeForward(this.auto, guestPort, f);
        changed = true;
      }
    }
    if (this.config.auto) {
      for (const l of this.listening.values()) {
        if (this.auto.has(l.port) || this.autoPending.has(l.port) || manualGuestPorts.has(l.port) || this.auto.size >= MAX_FORWARDS || this.disposed) continue;
        await this.addAuto(l);
        changed = true;
      }
    }
    if (changed) this.changed();
  }

  private async addAuto(l: GuestListener): Promise<void> {
    const forward: Forward = {
      status: { origin: 'auto', guestPort: l.port, hostPort: l.port, address: LOOPBACK, state: 'active', guestListening: true, connections: 0 },
      connectTo: l.connectTo,
      sockets: new Set(),
    };
    this.autoPending.add(l.port);
    const candidates = [...Array(AUTO_TRIES).keys()].map((i) => l.port + i).filter((p) => p <= 65535);
    let lastCode: string | undefined;
    for (const port of [...candidates, 0]) {
      try {
        forward.server = await this.listen(forward, LOOPBACK, port);
        forward.status.hostPort = (forward.server.address() as net.AddressInfo).port;
        break;
      } catch (err) {
        lastCode = (err as NodeJS.ErrnoException).code;
      }
    }
    this.autoPending.delete(l.port);
    const manualGuestPorts = new Set([...this.manual.values()].map((f) => f.status.guestPort));
    if (this.disposed || !this.config.auto || !this.listening.has(l.port) || manualGuestPorts.has(l.port)) {
      forward.server?.close(); // no longer wanted while it was being set up
      return;
    }
    this.auto.set(l.port, forward);
    if (!forward.server) {
      forward.status.state = 'failed';
      forward.status.error = bindFailure(this.source.vmName, { guestPort: l.port, hostPort: l.port, address: LOOPBACK }, lastCode);
      this.source.log(`automatic forward of guest port ${l.port} failed: ${forward.status.error}`);
      return;
    }
    const moved = forward.status.hostPort !== l.port ? ` (host port ${l.port} is taken)` : '';
    this.source.log(`forwarding ${LOOPBACK}:${forward.status.hostPort} -> guest port ${l.port} automatically${moved}`);
  }

  private listen(forward: Forward, address: string, port: number): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (socket) => this.accept(forward, socket));
      server.once('error', reject);
      server.listen({ host: address, port, exclusive: true }, () => {
        server.removeListener('error', reject);
        server.on('error', (err) => this.source.log(`listener ${address}:${port}: ${err.message}`));
        resolve(server);
      });
    });
  }

  /** One client connection: one `connect` session to the guest port. */
  private accept(forward: Forward, socket: net.Socket): void {
    socket.on('error', () => undefined);
    const agent = this.source.agent();
    if (this.suspended || this.disposed || !agent?.connected) {
      socket.end();
      return;
    }
    socket.setNoDelay(true);
    forward.sockets.add(socket);
    this.countsChanged();
    let session: HostSession;
    let ended = false;
    let ending = false;
    /** Both directions finished normally: the guest ends the session itself, no close needed. */
    let clientEof = false;
    let guestEof = false;
    try {
      // Keep this shape (keys in this order): the guest relay recognises it and connects at once (relay.c fast_connect).
      session = agent.openSession(
        { kind: 'connect', address: forward.connectTo, port: forward.status.guestPort },
        {
          onStarted: () => undefined,
          onData: (stream, data) => {
            if (stream !== StreamId.Stdout || socket.destroyed) return;
            socket.write(data, () => session.ack(StreamId.Stdout, data.length));
          },
          onEof: (stream) => {
            if (stream !== StreamId.Stdout) return;
            guestEof = true;
            if (!socket.destroyed) socket.end();
          },
          onExit: (_code, _signal, error) => {
            ended = true;
            if (error && !ending) {
              // The guest refused or broke the connection: the client sees a reset, as it would without us.
              if (!/^closed by the host/.test(error)) this.source.log(`port ${forward.status.guestPort}: ${error}`);
              socket.resetAndDestroy();
            } else if (!socket.destroyed) socket.end();
          },
        },
      );
    } catch (err) {
      this.source.log(`port ${forward.status.guestPort}: ${(err as Error).message}`);
      forward.sockets.delete(socket);
      socket.resetAndDestroy();
      return;
    }
    this.endConnection.set(socket, () => {
      ending = true;
      session.close();
      socket.end();
    });
    let waiting = 0;
    let lastWrite: Promise<unknown> = Promise.resolve();
    socket.on('data', (data: Buffer) => {
      waiting += data.length;
      if (waiting >= CLIENT_HIGH_WATER) socket.pause();
      lastWrite = session.write(data).then(
        () => {
          waiting -= data.length;
          if (waiting < CLIENT_HIGH_WATER && socket.isPaused() && !socket.destroyed) socket.resume();
        },
        () => socket.destroy(),
      );
    });
    // The EOF goes behind the bytes still waiting for the guest's credit.
    socket.on('end', () => {
      clientEof = true;
      void lastWrite.then(() => session.eof());
    });
    socket.once('close', () => {
      forward.sockets.delete(socket);
      if (!ended && !(clientEof && guestEof)) session.close();
      this.countsChanged();
    });
    socket.resume();
  }
}
