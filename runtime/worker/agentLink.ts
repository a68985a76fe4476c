/**
 * The host end of the channel: handshake, heartbeat, and the sessions multiplexed over one byte
 * stream, with per-stream credit in both directions.
 *
 * The guest is hostile. Everything it sends is validated here before anything acts on it: frames
 * are bounded by the decoder, control messages by parseAgentMessage, data by the credit we granted.
 * A violation that concerns one session closes that session; a violation of the framing itself
 * resets the channel (all sessions fail, new epoch, new handshake). Neither ends the worker.
 */
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { ErrorCode, SandboxError } from '../common/errors';
import { AGENT_SILENT_MS, notRespondingMessage, type AgentStatus } from '../common/status';
import { FrameDecoder, FrameType, MAX_PAYLOAD, ProtocolError, StreamId, encodeControl, encodeFrame, encodeWindow, type Frame } from '../protocol/frames';
import { INITIAL_WINDOW, MAX_SESSIONS, PROTOCOL_VERSION, checkCallResult, parseAgentMessage, type AgentHello, type CallMethod, type LiveSession, type OpenSession, type SessionKind } from '../protocol/messages';

const HELLO_RETRY_MS = 250;
/** After this long without a heartbeat the agent is considered out of contact and re-greeted. */
export const HEARTBEAT_LOST_MS = AGENT_SILENT_MS;
/** Stdin bytes we hold for one session while the guest grants no credit. */
const MAX_QUEUED_INPUT = 1024 * 1024;
/** Output credit is granted back to the guest in batches of this many bytes, or after GRANT_DELAY_MS. */
const GRANT_BATCH_BYTES = 64 * 1024;
const GRANT_DELAY_MS = 20;

export interface SessionHandlers {
  onStarted(pid: number): void;
  onData(stream: StreamId, data: Buffer): void;
  onEof(stream: StreamId): void;
  onExit(code: number | null, signal: string | null, error?: string): void;
  /** watch sessions: a change under the watched path. */
  onEvent?(kind: 'change' | 'rename', path: string): void;
}

/** How long a one-shot call may take before the host gives up on it. */
const CALL_TIMEOUT_MS = 30_000;

export class HostSession {
  /** Bytes we may still send on stdin (granted by the guest). */
  private sendCredit = INITIAL_WINDOW;
  /** Bytes the guest may still send on stdout / stderr (granted by us). */
  readonly recvCredit = [0, INITIAL_WINDOW, INITIAL_WINDOW];
  private readonly queue: { data: Buffer; done: () => void }[] = [];
  private queuedBytes = 0;
  ended = false;
  /**
   * Taken over (a worker that crashed, a restore) or frozen for a save: what the guest says is
   * ignored until it answers `resume` with `resumed` (it replays from the resume point).
   */
  resuming = false;
  /** Told where the guest resumed the session (its `resumed`: stdout and stderr offsets). */
  onResumed?: (offsets: readonly [number, number] | undefined) => void;
  /** Output bytes handed to the client and not yet acknowledged by it, per stream. */
  readonly unacked = [0, 0, 0];
  /** Set once the guest reported the session started; until then a silent agent fails it. */
  started = false;
  /** Set once the guest sent output or an end of stream for it (see AgentLink.failUnanswered). */
  spoke = false;
  readonly openedAt = Date.now();

  /** Replaced when a client attaches to a session this worker inherited (AgentLink.claimSession). */
  constructor(readonly id: number, private readonly link: AgentLink, public handlers: SessionHandlers) {}

  /** Sends stdin bytes; resolves once they are within the guest's credit and on their way. */
  write(data: Buffer): Promise<void> {
    if (this.ended) return Promise.reject(new SandboxError(ErrorCode.WrongState, `session ${this.id} has ended`));
    if (this.queuedBytes + data.length > MAX_QUEUED_INPUT) {
      return Promise.reject(new SandboxError(ErrorCode.BadArgument, `session ${this.id}: more than ${MAX_QUEUED_INPUT} bytes of input pending`));
    }
    return new Promise((resolve) => {
      this.queue.push({ data, done: resolve });
      this.queuedBytes += data.length;
      this.pump();
    });
  }

  eof(): void {
    if (!this.ended) this.link.sendRaw(encodeFrame(FrameType.Eof, this.id, undefined, StreamId.Stdin));
  }

  resize(cols: number, rows: number): void {
    if (!this.ended) this.link.sendRaw(encodeControl(this.id, { t: 'resize', cols, rows }));
  }

  signal(signal: string): void {
    if (!this.ended) this.link.sendRaw(encodeControl(this.id, { t: 'signal', signal }));
  }

  close(): void {
    if (!this.ended) this.link.sendRaw(encodeControl(this.id, { t: 'close' }));
  }

  /**
   * The consumer has taken `bytes` of a stream: let the guest send that many more. Grants go out
   * at once past GRANT_BATCH_BYTES, else within GRANT_DELAY_MS: the guest starts with a whole
   * window, so an interactive session loses nothing, and its guest is woken once per echo, not twice.
   */
  ack(stream: StreamId, bytes: number): void {
    if (this.ended || (stream !== StreamId.Stdout && stream !== StreamId.Stderr) || bytes <= 0) return;
    this.unacked[stream] = Math.max(0, this.unacked[stream] - bytes);
    this.recvCredit[stream] += bytes;
    this.ungranted[stream] += bytes;
    if (this.ungranted[stream] >= GRANT_BATCH_BYTES) this.sendGrant(stream);
    else this.grantTimer ??= setTimeout(() => {
      this.grantTimer = undefined;
      this.sendGrant(StreamId.Stdout);
      this.sendGrant(StreamId.Stderr);
    }, GRANT_DELAY_MS);
  }

  private readonly ungranted = [0, 0, 0];
  private grantTimer?: NodeJS.Timeout;

  /** Sends the credit acknowledged so far at once (before a save). */
  flushGrants(): void {
    clearTimeout(this.grantTimer);
    this.grantTimer = undefined;
    this.sendGrant(StreamId.Stdout);
    this.sendGrant(StreamId.Stderr);
  }

  /**
   * Asks the guest to replay what the client lacks: `offsets` are the bytes of stdout and stderr
   * it has (none: it has what it acknowledged). Output is ignored until the guest's `resumed`.
   */
  resume(offsets?: readonly [number, number]): void {
    if (this.ended) return;
    this.resuming = true;
    clearTimeout(this.grantTimer);
    this.grantTimer = undefined;
    this.ungranted.fill(0);
    this.unacked.fill(0);
    this.recvCredit[StreamId.Stdout] = this.recvCredit[StreamId.Stderr] = INITIAL_WINDOW;
    this.link.sendRaw(encodeControl(this.id, offsets ? { t: 'resume', stdout: offsets[0], stderr: offsets[1] } : { t: 'resume' }));
  }

  private sendGrant(stream: StreamId): void {
    if (this.ungranted[stream] === 0 || this.ended) return;
    this.link.sendRaw(encodeWindow(this.id, stream, this.ungranted[stream]));
    this.ungranted[stream] = 0;
  }

  grant(bytes: number): void {
    this.sendCredit = Math.min(this.sendCredit + bytes, 16 * INITIAL_WINDOW);
    this.pump();
  }

  private pump(): void {
    while (this.queue.length > 0 && this.sendCredit > 0 && !this.ended) {
      const head = this.queue[0];
      const n = Math.min(head.data.length, this.sendCredit, MAX_PAYLOAD);
      this.link.sendRaw(encodeFrame(FrameType.Data, this.id, head.data.subarray(0, n), StreamId.Stdin));
      this.sendCredit -= n;
      this.queuedBytes -= n;
      if (n === head.data.length) {
        this.queue.shift();
        head.done();
      } else {
        head.data = head.data.subarray(n);
      }
    }
  }

  end(code: number | null, signal: string | null, error?: string): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.grantTimer);
    for (const q of this.queue) q.done();
    this.queue.length = 0;
    this.handlers.onExit(code, signal, error);
  }
}

export class AgentLink {
  private decoder = new FrameDecoder(MAX_PAYLOAD, true);
  private readonly sessions = new Map<number, HostSession>();
  private readonly calls = new Map<number, { method: CallMethod; resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private readonly emitter = new EventEmitter();
  private nextSessionId = 1;
  private epoch = '';
  private hello?: AgentHello;
  private lastHeartbeat?: number;
  private helloTimer?: NodeJS.Timeout;
  private watchdog?: NodeJS.Timeout;
  private disposed = false;
  /** Counts of what the guest did wrong, for the log and for tests. */
  readonly violations: string[] = [];

  /**
   * @param epoch the epoch to greet with first: a worker taking over from one that crashed passes
   *   its predecessor's, so the agent keeps the sessions and lists them (see `orphans`)
   */
  constructor(private readonly socket: Duplex, private readonly log: (m: string) => void, epoch?: string) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', (err) => this.log(`channel socket error: ${err.message}`));
    this.watchdog = setInterval(() => this.checkHeartbeat(), 1000);
    this.greet(epoch);
  }

  /** The epoch of the current handshake (recorded in worker.json for a successor). */
  get currentEpoch(): string {
    return this.epoch;
  }

  /** Sessions the agent kept for a worker that died (or a saved VM), waiting for their clients. */
  private readonly orphans = new Map<number, Orphan>();

  /**
   * Registers the sessions the agent listed in its hello as orphans: what they say is ignored (the
   * guest keeps it and replays it on `resume`) until a client claims them; they are closed if none
   * does within ORPHAN_TTL_MS.
   */
  private adoptSessions(list: LiveSession[]): void {
    for (const { id, kind } of list) {
      if (this.sessions.has(id)) continue;
      // A forwarded connection's host end died with the worker before: nothing can resume it.
      if (kind === 'connect') {
        this.sendRaw(encodeControl(id, { t: 'close' }));
        continue;
      }
      const session = new HostSession(id, this, IGNORED);
      session.resuming = true;
      session.started = true;
      session.spoke = true;
      this.sessions.set(id, session);
      this.holdOrphan(session, kind);
    }
    if (list.length > 0) this.log(`the agent kept ${list.length} session(s) of the previous worker: ${list.map((l) => `${l.id} (${l.kind})`).join(', ')}`);
  }

  /** Registers `session` as an orphan: closed if no client claims it within `ttlMs`. */
  private holdOrphan(session: HostSession, kind: SessionKind, ttlMs = ORPHAN_TTL_MS): void {
    const id = session.id;
    const orphan: Orphan = { kind, expiry: setTimeout(() => {
      if (this.orphans.get(id) !== orphan) return;
      this.orphans.delete(id);
      this.log(`session ${id}: no client attached within ${ttlMs / 1000} s; closing it`);
      session.close();
      this.finish(session, null, null, 'closed: no client attached');
    }, ttlMs) };
    this.orphans.set(id, orphan);
  }

  /**
   * A client let go of `session`: it runs on in the guest, and what the guest says from here is
   * ignored until a client claims the session (claimSession, within `ttlMs`, default
   * ORPHAN_TTL_MS) and the guest replays it.
   * `acknowledge` (session.detach: the client has what it was handed): the client's unacknowledged
   * output is acknowledged to the guest, so the next client starts exactly where this one stopped.
   * Without it (a client that vanished may not have shown what it was handed) only what the client
   * acknowledged counts, and the guest replays the rest.
   */
  detachSession(session: HostSession, kind: SessionKind, options: { acknowledge?: boolean; ttlMs?: number } = {}): void {
    if (session.ended || this.sessions.get(session.id) !== session) throw new SandboxError(ErrorCode.BadArgument, `session ${session.id} has ended`);
    const ttlMs = options.ttlMs ?? ORPHAN_TTL_MS;
    session.resuming = true;
    if (options.acknowledge !== false) for (const stream of [StreamId.Stdout, StreamId.Stderr]) session.ack(stream, session.unacked[stream]);
    session.flushGrants();
    session.handlers = IGNORED;
    this.holdOrphan(session, kind, ttlMs);
    this.log(`session ${session.id}: its client ${options.acknowledge === false ? 'went away' : 'detached'}; held for ${ttlMs / 1000} s`);
  }

  /** The kind of a session this worker inherited and no client has claimed yet. */
  inheritedKind(id: number): SessionKind | undefined {
    return this.orphans.get(id)?.kind;
  }

  /**
   * Hands a session this worker inherited to a client and asks the guest to replay what the client
   * lacks (`offsets`: the bytes of stdout and stderr it has; none: what it acknowledged). Throws
   * BadArgument when there is no such session (it ended and was released, was claimed already, or
   * never existed).
   */
  claimSession(id: number, handlers: SessionHandlers, offsets?: readonly [number, number]): { session: HostSession; kind: SessionKind; resumedAt: Promise<readonly [number, number] | undefined> } {
    const orphan = this.orphans.get(id);
    const session = this.sessions.get(id);
    if (!orphan || !session) throw new SandboxError(ErrorCode.BadArgument, `no session ${id} to attach to (it ended, or another client has it)`);
    this.orphans.delete(id);
    clearTimeout(orphan.expiry);
    session.handlers = handlers;
    // Where the guest resumes it, so the client counts its offsets from there (undefined: unknown).
    const resumedAt = new Promise<readonly [number, number] | undefined>((resolve) => {
      const timer = setTimeout(() => resolve(undefined), RESUMED_WAIT_MS);
      session.onResumed = (at) => {
        clearTimeout(timer);
        resolve(at);
      };
    });
    session.resume(offsets);
    return { session, kind: orphan.kind, resumedAt };
  }

  /** The client has a session's end: the guest may forget the session (it keeps ended ones for a resume). */
  release(id: number): void {
    if (!this.sessions.has(id)) this.sendRaw(encodeControl(id, { t: 'release' }));
  }

  /**
   * Before a save: stops handing output to clients and acknowledges to the guest everything they
   * were handed (it is in their sockets: they will have it even after this worker is gone), then
   * makes sure the guest has taken those acknowledgements. The saved guest then holds exactly what
   * each client lacks, and `resume` without offsets after the restore replays it. `thaw` undoes it
   * when the save fails.
   */
  async quiesce(timeoutMs: number): Promise<void> {
    const live = [...this.sessions.values()].filter((s) => !s.ended);
    for (const s of live) {
      s.resuming = true;
      for (const stream of [StreamId.Stdout, StreamId.Stderr]) s.ack(stream, s.unacked[stream]);
      s.flushGrants();
    }
    this.frozen = live;
    // The guest handles frames in order: once a call sent behind the grants is answered, it has them.
    await this.call('stat', { path: '/' }, timeoutMs).catch(() => undefined);
  }

  /** The save did not happen: sessions frozen by `quiesce` carry on from what their clients acknowledged. */
  thaw(): void {
    for (const s of this.frozen.splice(0)) if (!s.ended) s.resume();
  }

  private frozen: HostSession[] = [];

  get status(): AgentStatus {
    return {
      connected: this.hello !== undefined,
      version: this.hello?.agentVersion,
      hostname: this.hello?.hostname,
      kernel: this.hello?.kernel,
      lastHeartbeatAt: this.lastHeartbeat,
      responding: this.hello === undefined ? undefined : !this.silent,
    };
  }

  get connected(): boolean {
    return this.hello !== undefined;
  }

  get sessionCount(): number {
    return this.sessions.size;
  }

  /** Fires when the agent connects, is lost, or reconnects. */
  onDidChange(listener: () => void): () => void {
    this.emitter.on('change', listener);
    return () => this.emitter.off('change', listener);
  }

  /** Resolves when the agent has answered the handshake. */
  waitConnected(timeoutMs: number, signal?: AbortSignal): Promise<void> {
    if (this.connected) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = (err?: Error) => {
        clearTimeout(timer);
        off();
        signal?.removeEventListener('abort', onAbort);
        err ? reject(err) : resolve();
      };
      const onAbort = () => done(new SandboxError(ErrorCode.Cancelled, 'cancelled'));
      const timer = setTimeout(() => done(new SandboxError(ErrorCode.Timeout, `the guest agent did not answer within ${Math.round(timeoutMs / 1000)} s`)), timeoutMs);
      const off = this.onDidChange(() => this.connected && done());
      signal?.addEventListener('abort', onAbort);
    });
  }

  /** Starts the handshake over with a new epoch (after a restore, or to recover from a violation). */
  greet(epoch: string = randomUUID()): void {
    this.epoch = epoch;
    const wasConnected = this.hello !== undefined;
    this.hello = undefined;
    this.decoder = new FrameDecoder(MAX_PAYLOAD, true);
    if (wasConnected) this.emitter.emit('change');
    clearInterval(this.helloTimer);
    this.sendHello();
    this.helloTimer = setInterval(() => this.sendHello(), HELLO_RETRY_MS);
  }

  /** Greets now rather than at the next retry (a restored guest just started running again). */
  nudge(): void {
    if (!this.connected && !this.disposed) this.sendHello();
  }

  private sendHello(): void {
    this.sendRaw(encodeControl(0, { t: 'hello', version: PROTOCOL_VERSION, epoch: this.epoch, time: Date.now() }));
  }

  openSession(request: Omit<OpenSession, 't'>, handlers: SessionHandlers): HostSession {
    if (!this.connected) throw new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected');
    this.refuseIfSilent();
    if (this.sessions.size >= MAX_SESSIONS) throw new SandboxError(ErrorCode.BadArgument, `too many sessions open (${MAX_SESSIONS})`);
    const id = this.allocateId();
    const session = new HostSession(id, this, handlers);
    this.sessions.set(id, session);
    this.sendRaw(encodeControl(id, { t: 'open', ...request }));
    return session;
  }

  /** A one-shot request (file metadata, guest info). The answer is validated before it resolves. */
  call(method: CallMethod, params: Record<string, unknown>, timeoutMs = CALL_TIMEOUT_MS): Promise<unknown> {
    if (!this.connected) return Promise.reject(new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected'));
    if (this.silent) return Promise.reject(this.silenceError());
    if (this.calls.size + this.sessions.size >= MAX_SESSIONS) return Promise.reject(new SandboxError(ErrorCode.BadArgument, `too many requests in flight (${MAX_SESSIONS})`));
    const id = this.allocateId();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new SandboxError(ErrorCode.Timeout, `the guest agent did not answer ${method} within ${timeoutMs / 1000} s`));
      }, timeoutMs);
      this.calls.set(id, { method, resolve, reject, timer });
      this.sendRaw(encodeControl(id, { t: 'call', method, params }));
    });
  }

  /** Tells the guest the host's time (after a resume: the guest clock stood still while paused). */
  syncTime(): void {
    if (this.connected) this.sendRaw(encodeControl(0, { t: 'time', time: Date.now() }));
  }

  shutdown(reboot: boolean): void {
    this.shuttingDown = reboot ? 'the VM restarted' : 'the VM stopped';
    this.sendRaw(encodeControl(0, { t: 'shutdown', reboot }));
  }

  /** Set once the guest was asked to shut down: sessions it kills then end saying why. */
  private shuttingDown?: string;

  sendRaw(frame: Buffer): void {
    if (!this.disposed && !this.socket.destroyed) this.socket.write(frame);
  }

  /** Ends the link; open sessions and calls fail with `why`. */
  dispose(why = 'the VM stopped'): void {
    if (this.disposed) return;
    this.disposed = true;
    clearInterval(this.helloTimer);
    clearInterval(this.watchdog);
    for (const o of this.orphans.values()) clearTimeout(o.expiry);
    this.orphans.clear();
    this.failAll(why);
  }

  private allocateId(): number {
    for (;;) {
      const id = this.nextSessionId;
      this.nextSessionId = this.nextSessionId >= 0xffffffff ? 1 : this.nextSessionId + 1;
      if (!this.sessions.has(id) && !this.calls.has(id)) return id;
    }
  }

  private receive(chunk: Buffer): void {
    try {
      this.decoder.push(chunk, (frame) => this.onFrame(frame));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.violation(`framing: ${err.message}; resetting the channel`);
      this.failAll('the channel was reset after a protocol violation');
      this.greet();
    }
  }

  private onFrame(frame: Frame): void {
    if (frame.type === FrameType.Control) {
      const message = parseAgentMessage(frame.payload);
      if (typeof message === 'string') {
        this.violation(`session ${frame.session}: ${message}`);
        if (frame.session !== 0) this.endSession(frame.session, 'the guest sent an invalid message');
        return;
      }
      if (frame.session === 0) {
        if (message.t === 'hello') this.onHello(message);
        else if (message.t === 'heartbeat') {
          // Before the handshake a heartbeat is normal (an agent kept beating for a worker that died).
          if (this.hello) this.heard();
        }
        else this.violation(`session 0: unexpected ${message.t}`);
        return;
      }
      if (message.t === 'result') return this.onResult(frame.session, message.ok, message.value, message.error);
      const session = this.sessions.get(frame.session);
      if (!session) return; // a session we already closed: late messages are normal
      if (message.t === 'resumed') {
        session.resuming = false;
        session.onResumed?.(message.stdout === undefined ? undefined : [message.stdout, message.stderr!]);
        session.onResumed = undefined;
        return;
      }
      if (session.resuming) return; // said before the resume point: the guest replays it
      if (message.t === 'event') {
        if (session.handlers.onEvent) session.handlers.onEvent(message.kind, message.path);
        else this.endSession(frame.session, 'the guest sent an event on a session that watches nothing');
        return;
      }
      if (message.t === 'started') {
        session.started = true;
        session.handlers.onStarted(message.pid);
      }
      else if (message.t === 'exit') this.finish(session, message.code, message.signal, message.signal && this.shuttingDown ? this.shuttingDown : undefined);
      else if (message.t === 'error') this.finish(session, null, null, message.message.slice(0, 1024));
      else this.violation(`session ${frame.session}: unexpected ${message.t}`);
      return;
    }
    if (!this.hello) return; // nothing but a hello counts before the handshake
    const session = this.sessions.get(frame.session);
    if (!session) return;
    if (session.resuming && frame.type !== FrameType.Window) return; // replayed after `resumed`
    switch (frame.type) {
      case FrameType.Data: {
        if (frame.stream === StreamId.Stdin) return this.endSession(frame.session, 'the guest sent data on stdin');
        session.unacked[frame.stream] += frame.payload.length;
        session.spoke = true;
        session.recvCredit[frame.stream] -= frame.payload.length;
        if (session.recvCredit[frame.stream] < 0) return this.endSession(frame.session, 'the guest sent more than its window');
        session.handlers.onData(frame.stream, frame.payload);
        return;
      }
      case FrameType.Window:
        if (frame.stream !== StreamId.Stdin) return this.endSession(frame.session, 'the guest granted credit on an output stream');
        session.grant(frame.payload.readUInt32BE(0));
        return;
      case FrameType.Eof:
        if (frame.stream !== StreamId.Stdin) session.handlers.onEof(frame.stream);
        return;
    }
  }

  private onHello(hello: AgentHello): void {
    if (hello.epoch === '' && this.hello) {
      // A freshly started agent announcing itself: greet it now (same epoch; our sessions on the
      // old agent are gone and fail when its hello arrives with a new pid).
      this.sendHello();
      return;
    }
    if (hello.epoch !== this.epoch) return; // an answer to an older greeting
    if (hello.version !== PROTOCOL_VERSION) {
      this.violation(`agent speaks protocol ${hello.version}, we speak ${PROTOCOL_VERSION}`);
      return;
    }
    const restarted = this.hello !== undefined && this.hello.pid !== hello.pid;
    if (restarted) {
      // The guest's relay keeps exec and pty sessions across an agent restart and the new agent
      // lists them: those carry on; the rest (and calls in flight) fail.
      const kept = new Set((hello.sessions ?? []).map((s) => s.id));
      for (const s of [...this.sessions.values()]) if (!kept.has(s.id)) this.finish(s, null, null, 'the guest agent restarted');
      for (const [id, c] of [...this.calls]) {
        this.calls.delete(id);
        clearTimeout(c.timer);
        c.reject(new SandboxError(ErrorCode.AgentUnavailable, `${c.method}: the guest agent restarted`));
      }
      if (kept.size > 0) this.log(`the guest agent restarted; ${[...this.sessions.keys()].length} session(s) carried on`);
    }
    const first = this.hello === undefined;
    this.hello = hello;
    this.heard();
    this.decoder.resync = false;
    clearInterval(this.helloTimer);
    this.helloTimer = undefined;
    if (first || restarted) {
      this.log(`agent connected: version ${hello.agentVersion}, pid ${hello.pid}, ${hello.hostname}, kernel ${hello.kernel}`);
      if (first && hello.sessions) this.adoptSessions(hello.sessions);
      this.emitter.emit('change');
    }
  }

  private onResult(id: number, ok: boolean, value: unknown, error?: string): void {
    const call = this.calls.get(id);
    if (!call) return; // timed out already, or never asked: nothing to believe
    this.calls.delete(id);
    clearTimeout(call.timer);
    if (!ok) return call.reject(new SandboxError(ErrorCode.BadArgument, `${call.method} failed in the guest: ${(error ?? 'unknown error').slice(0, 1024)}`));
    const problem = checkCallResult(call.method, value);
    if (problem) {
      this.violation(`call ${id}: ${problem}`);
      return call.reject(new SandboxError(ErrorCode.ProtocolViolation, `the guest answered ${call.method} with a malformed value (${problem})`));
    }
    call.resolve(value ?? null);
  }

  private checkHeartbeat(): void {
    if (!this.hello || this.lastHeartbeat === undefined) return;
    const age = Date.now() - this.lastHeartbeat;
    if (age > HEARTBEAT_LOST_MS && this.helloTimer === undefined) {
      // Paused guests send nothing; the worker stops the watchdog while paused (see pauseWatch).
      if (this.watchPaused) return;
      this.log(`lost contact with the agent (no heartbeat for ${age} ms); greeting it again`);
      this.silent = true;
      this.failUnanswered();
      this.sendHello();
      this.helloTimer = setInterval(() => this.sendHello(), 1000);
      this.emitter.emit('change');
    }
  }

  /** Set while the agent is connected but has sent no heartbeat for HEARTBEAT_LOST_MS. */
  private silent = false;
  /** Named in the "not responding" message (`see sandboxvm logs <vm>`); set by the worker. */
  vmName?: string;

  /** A heartbeat or hello arrived: the agent is alive (again). */
  private heard(): void {
    this.lastHeartbeat = Date.now();
    if (!this.silent) return;
    this.silent = false;
    this.log('the agent is responding again');
    this.emitter.emit('change');
  }

  private silenceError(): SandboxError {
    const age = this.lastHeartbeat === undefined ? undefined : Date.now() - this.lastHeartbeat;
    return new SandboxError(ErrorCode.AgentUnavailable, notRespondingMessage(age, this.vmName));
  }

  /** Opens and calls go nowhere while the agent is silent: refuse them at once, saying since when. */
  private refuseIfSilent(): void {
    if (this.silent) throw this.silenceError();
  }

  /**
   * The agent went silent: calls waiting for an answer, sessions it never reported started, and
   * sessions opened within YOUNG_SESSION_MS that have said nothing yet (a stalled guest may have
   * started `echo hi` and never run it) fail now instead of hanging; they are closed in the guest,
   * should it wake. Other sessions run on: with the Node agent stopped, the relay still moves
   * their bytes and reports their end.
   */
  private failUnanswered(): void {
    const error = this.silenceError();
    const now = Date.now();
    for (const s of [...this.sessions.values()]) {
      if (s.started && (s.spoke || now - s.openedAt > YOUNG_SESSION_MS)) continue;
      s.close();
      this.finish(s, null, null, error.message);
    }
    for (const [id, c] of [...this.calls]) {
      this.calls.delete(id);
      clearTimeout(c.timer);
      c.reject(new SandboxError(ErrorCode.AgentUnavailable, `${c.method}: ${error.message}`));
    }
  }

  /** While the VM is paused no heartbeat can arrive; don't call that lost contact. */
  watchPaused = false;

  /** Resumes heartbeat accounting after a pause (the pause itself is not the guest's silence). */
  resetHeartbeat(): void {
    if (this.hello) this.lastHeartbeat = Date.now();
  }

  private finish(session: HostSession, code: number | null, signal: string | null, error?: string): void {
    this.sessions.delete(session.id);
    this.orphans.delete(session.id);
    session.end(code, signal, error);
  }

  private endSession(id: number, why: string): void {
    const session = this.sessions.get(id);
    this.violation(`session ${id}: ${why}`);
    if (!session) return;
    session.close();
    this.finish(session, null, null, `${why}; the session was closed`);
  }

  private failAll(why: string): void {
    for (const s of [...this.sessions.values()]) this.finish(s, null, null, why);
    for (const [id, c] of [...this.calls]) {
      this.calls.delete(id);
      clearTimeout(c.timer);
      c.reject(new SandboxError(ErrorCode.AgentUnavailable, `${c.method}: ${why}`));
    }
  }

  private violation(why: string): void {
    if (this.violations.length < 1000) this.violations.push(why);
    // A hostile guest must not be able to fill the worker's log: at most 20 lines per 10 s.
    const now = Date.now();
    if (now - this.logWindowStart > 10_000) {
      if (this.suppressed > 0) this.log(`protocol violation: ${this.suppressed} more suppressed in the last 10 s`);
      this.logWindowStart = now;
      this.loggedInWindow = 0;
      this.suppressed = 0;
    }
    if (this.loggedInWindow++ < 20) this.log(`protocol violation: ${why}`);
    else this.suppressed++;
  }

  private logWindowStart = 0;
  private loggedInWindow = 0;
  private suppressed = 0;
}

/** A session this young that has said nothing fails when the agent goes silent (failUnanswered). */
const YOUNG_SESSION_MS = 15_000;

/** How long a claim waits for the guest to say where it resumed a session. */
const RESUMED_WAIT_MS = 10_000;

/** How long a session inherited from a crashed worker, or detached, waits for a client (by default). */
export const ORPHAN_TTL_MS = 60_000;
/** How long a session opened with keepOnDisconnect waits for a client after its client's connection went away. */
export const KEPT_SESSION_TTL_MS = 5 * 60_000;
/** A session this worker inherited, until a client claims it. */
interface Orphan {
  kind: SessionKind;
  expiry: NodeJS.Timeout;
}

/** The handlers of a session no client has: what it says is replayed on `resume`. */
const IGNORED: SessionHandlers = {
  onStarted: () => undefined,
  onData: () => undefined,
  onEof: () => undefined,
  onExit: () => undefined,
};
