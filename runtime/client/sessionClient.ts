/**
 * Exec and terminal sessions on a running VM, over a direct connection to its worker: JSON-RPC for
 * opening and controlling sessions, and a data channel beside it (worker/dataChannel.ts) for their
 * bytes and events as frames: no JSON and no base64 on the hot path.
 * Output handlers may return a promise: the bytes are acknowledged (and the guest allowed to send
 * more) only once it settles, so a slow consumer slows the guest process, not memory.
 */
import * as net from 'node:net';
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { ErrorCode, SandboxError } from '../common/errors';
import { call, connectSocket } from '../common/rpc';
import { connectUnix } from '../common/unixSocket';
import { FrameDecoder, FrameType, MAX_PAYLOAD, StreamId, encodeControl, encodeFrame, encodeWindow, type Frame } from '../protocol/frames';
import type { OpenParams } from '../worker/sessionRelay';

export interface SessionEvents {
  onStarted?(pid: number): void;
  onData(stream: 1 | 2, data: Buffer): void | Promise<void>;
  onEof?(stream: 1 | 2): void;
  /** watch sessions: a change under the watched path (relative to it). */
  onEvent?(kind: 'change' | 'rename', path: string): void;
  onExit(result: SessionExit): void;
}

export interface SessionExit {
  code: number | null;
  signal: string | null;
  /** Set when the session could not start or was cut off (the message says why). */
  error?: string;
  /** Set when this client let go of the session (Session.detach): it runs on in the guest. */
  detached?: boolean;
}

export class Session {
  readonly exited: Promise<SessionExit>;
  private resolveExit!: (r: SessionExit) => void;
  /** Writes waiting for the worker to take their bytes (its WINDOW on stdin), oldest first. */
  private readonly writes: { bytes: number; resolve: () => void; reject: (e: Error) => void }[] = [];

  /** Bytes of stdout and stderr handed to onData: where a new worker resumes the session. */
  readonly received = [0, 0, 0];
  /** Bumped on each re-attach: acknowledgements of bytes from before it are not sent. */
  generation = 0;
  /** Opened or attached with keepOnDisconnect (kept when it is attached again through a new worker). */
  keepOnDisconnect = false;

  constructor(readonly id: number, private readonly client: SessionClient) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  private ended = false;

  /** @internal */
  finish(result: SessionExit): void {
    this.ended = true;
    for (const w of this.writes.splice(0)) w.resolve();
    this.resolveExit(result);
  }

  /** @internal The worker took `bytes` of input. */
  taken(bytes: number): void {
    while (bytes > 0 && this.writes.length > 0) {
      const head = this.writes[0];
      const n = Math.min(bytes, head.bytes);
      head.bytes -= n;
      bytes -= n;
      if (head.bytes === 0) this.writes.shift()!.resolve();
    }
  }

  /**
   * @internal Attached again through a new worker. Input the dead worker had not confirmed may or
   * may not have reached the guest; its writes resolve (as bytes lost on a dropped link would).
   */
  reattached(): void {
    for (const w of this.writes.splice(0)) w.resolve();
  }

  /** @internal The worker refused `bytes` of input. */
  refused(bytes: number, message: string): void {
    const head = this.writes.shift();
    if (!head) return;
    head.reject(new SandboxError(ErrorCode.BadArgument, message));
    if (bytes < head.bytes) this.writes.unshift({ ...head, bytes: head.bytes - bytes, reject: () => undefined });
  }

  /** Sends input; resolves once the worker has taken it (it is within the guest's credit). */
  write(data: Buffer | string): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    if (this.ended) return Promise.reject(new SandboxError(ErrorCode.WrongState, `session ${this.id} has ended`));
    if (buf.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      this.writes.push({ bytes: buf.length, resolve, reject });
      for (let at = 0; at < buf.length; at += MAX_PAYLOAD) {
        if (!this.client.sendFrame(encodeFrame(FrameType.Data, this.id, buf.subarray(at, at + MAX_PAYLOAD), StreamId.Stdin))) {
          this.writes.pop();
          return reject(new SandboxError(ErrorCode.AgentUnavailable, 'the connection to the VM is being re-established and holds enough input already'));
        }
      }
    });
  }
  eof(): Promise<void> {
    this.client.sendFrame(encodeFrame(FrameType.Eof, this.id, undefined, StreamId.Stdin));
    return Promise.resolve();
  }
  resize(cols: number, rows: number): Promise<void> {
    return this.client.control('session.resize', { id: this.id, cols, rows });
  }
  signal(signal: string): Promise<void> {
    return this.client.control('session.signal', { id: this.id, signal });
  }
  close(): Promise<void> {
    return this.client.control('session.close', { id: this.id });
  }
  /**
   * Lets go of the session and leaves it running in the guest: any client may attach it by id
   * within a minute (SessionClient.attach), its output held for it meanwhile. Output the worker
   * sent before letting go still arrives; then `exited` resolves with `detached: true`.
   */
  detach(): Promise<void> {
    return this.client.control('session.detach', { id: this.id });
  }
}

interface Handler {
  events: SessionEvents;
  session: Session;
}

/**
 * How long a client tries to reach a worker that took over from one that crashed: the service
 * notices the crash, starts a new worker, and that worker greets the agent (seconds, more on a
 * loaded host).
 */
const RECONNECT_MS = 60_000;
/** Input held while reconnecting; beyond it, writes fail. */
const MAX_HELD_INPUT = 1024 * 1024;

export class SessionClient {
  private readonly handlers = new Map<number, Handler>();
  /** Frames that arrive before session.open's reply has been processed. */
  private readonly early = new Map<number, Frame[]>();
  private decoder = new FrameDecoder();
  private disposed = false;
  /** Set while the worker is gone and a successor is being looked for. */
  private reconnecting?: Promise<void>;
  private held: Buffer[] = [];
  private heldBytes = 0;
  private data!: net.Socket;
  private conn!: MessageConnection;

  private constructor(private readonly socketPath: string, connection: MessageConnection, data: net.Socket) {
    this.wire(connection, data);
  }

  /** The JSON-RPC connection to the worker (replaced after a reconnect). */
  get connection(): MessageConnection {
    return this.conn;
  }

  private wire(connection: MessageConnection, data: net.Socket): void {
    this.conn = connection;
    this.data = data;
    this.decoder = new FrameDecoder();
    data.on('data', (chunk: Buffer) => {
      try {
        this.decoder.push(chunk, (f) => this.route(f));
      } catch (err) {
        data.destroy(err as Error);
      }
    });
    data.on('error', () => undefined);
    data.on('close', () => {
      connection.dispose();
      if (this.data === data) this.connectionLost();
    });
    connection.onClose(() => data.destroy());
    data.resume();
  }

  /**
   * The worker went away with sessions still open. A VM whose worker crashed is taken over by a
   * new one (same socket path) and its agent keeps the sessions: reconnect and attach them again.
   * Sessions that cannot be attached end with an error saying so.
   */
  private connectionLost(): void {
    if (this.disposed || this.handlers.size === 0) return this.failAll('the connection to the VM was lost');
    this.reconnecting ??= this.reconnect().finally(() => (this.reconnecting = undefined));
  }

  private async reconnect(): Promise<void> {
    const deadline = Date.now() + RECONNECT_MS;
    while (!this.disposed && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      let connection: MessageConnection | undefined;
      try {
        connection = await connectSocket(this.socketPath, 2000);
        const { token } = await call<{ token: string }>(connection, 'session.dataToken');
        const data = await attachChannel(this.socketPath, token);
        this.wire(connection, data);
      } catch {
        connection?.dispose();
        continue; // no worker yet (the service is starting the new one)
      }
      for (const h of [...this.handlers.values()]) {
        try {
          // The guest replays from what this client has: nothing lost, nothing doubled.
          const s = h.session;
          s.generation++;
          this.unacked.delete(s.id * 4 + 1);
          this.unacked.delete(s.id * 4 + 2);
          await call(this.conn, 'session.attach', { id: s.id, stdout: s.received[1], stderr: s.received[2], keepOnDisconnect: s.keepOnDisconnect });
          h.session.reattached();
        } catch (err) {
          this.finish(h, { code: null, signal: null, error: `the session was lost with the VM's worker: ${(err as Error).message}` });
        }
      }
      const held = this.held;
      this.held = [];
      this.heldBytes = 0;
      for (const f of held) this.data.write(f);
      return;
    }
    this.failAll('the connection to the VM was lost');
  }

  private failAll(why: string): void {
    for (const h of [...this.handlers.values()]) this.finish(h, { code: null, signal: null, error: why });
    this.held = [];
    this.heldBytes = 0;
  }

  /** Connects to a worker's socket: the JSON-RPC connection, then the data channel attached to it. */
  static async connect(socketPath: string): Promise<SessionClient> {
    const connection = await connectSocket(socketPath, 5000);
    try {
      const { token } = await call<{ token: string }>(connection, 'session.dataToken');
      const data = await attachChannel(socketPath, token);
      return new SessionClient(socketPath, connection, data);
    } catch (err) {
      connection.dispose();
      throw err;
    }
  }

  async open(params: OpenParams, events: SessionEvents): Promise<Session> {
    if (this.disposed) throw new SandboxError(ErrorCode.AgentUnavailable, 'this session client was disposed');
    await this.reconnecting;
    const { id } = await call<{ id: number }>(this.conn, 'session.open', params);
    const session = new Session(id, this);
    session.keepOnDisconnect = params.keepOnDisconnect === true;
    const h = { events, session };
    this.handlers.set(id, h);
    for (const f of this.early.get(id) ?? []) this.dispatch(h, f);
    this.early.delete(id);
    return session;
  }

  /**
   * Attaches to a session of this VM that outlived its client's connection: one a restored VM's
   * agent kept (its id was known before the save, attachable within a minute of the restore), one
   * detached (Session.detach), or one opened with keepOnDisconnect whose client went away (within
   * five minutes). Output the session produced meanwhile arrives first: from `stdout` / `stderr`
   * bytes when given (what the previous client had), else from what was acknowledged. Rejects when
   * there is no such session.
   */
  async attach(id: number, events: SessionEvents, options: { keepOnDisconnect?: boolean; stdout?: number; stderr?: number } = {}): Promise<{ session: Session; kind: string }> {
    if (this.disposed) throw new SandboxError(ErrorCode.AgentUnavailable, 'this session client was disposed');
    await this.reconnecting;
    const offsets = options.stdout === undefined && options.stderr === undefined ? {} : { stdout: options.stdout ?? 0, stderr: options.stderr ?? 0 };
    const { kind } = await call<{ kind: string }>(this.conn, 'session.attach', { id, ...offsets, keepOnDisconnect: options.keepOnDisconnect === true });
    const session = new Session(id, this);
    session.keepOnDisconnect = options.keepOnDisconnect === true;
    session.received[1] = options.stdout ?? 0;
    session.received[2] = options.stderr ?? 0;
    const h = { events, session };
    this.handlers.set(id, h);
    for (const f of this.early.get(id) ?? []) this.dispatch(h, f);
    this.early.delete(id);
    return { session, kind };
  }

  /** @internal Sends a frame on the data channel; while reconnecting, holds it (false: too much held). */
  sendFrame(frame: Buffer): boolean {
    if (this.disposed) return false;
    if (!this.reconnecting) {
      this.data.write(frame);
      return true;
    }
    if (this.heldBytes + frame.length > MAX_HELD_INPUT) return false;
    this.held.push(frame);
    this.heldBytes += frame.length;
    return true;
  }

  /** @internal A control call for one session, after any reconnect in progress. */
  async control(method: string, params: Record<string, unknown>): Promise<void> {
    await this.reconnecting;
    return call(this.conn, method, params);
  }

  private route(frame: Frame): void {
    const h = this.handlers.get(frame.session);
    if (h) return this.dispatch(h, frame);
    const list = this.early.get(frame.session) ?? [];
    if (list.length < 1024) list.push(frame);
    this.early.set(frame.session, list);
  }

  private dispatch(h: Handler, frame: Frame): void {
    switch (frame.type) {
      case FrameType.Data: {
        const stream = frame.stream === StreamId.Stderr ? 2 : 1;
        const data = frame.payload;
        const session = h.session;
        const generation = session.generation;
        session.received[stream] += data.length;
        const ack = () => {
          if (session.generation === generation) this.ack(session.id, stream, data.length);
        };
        const r = h.events.onData(stream, data);
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(ack, ack);
        else ack();
        return;
      }
      case FrameType.Eof:
        h.events.onEof?.(frame.stream === StreamId.Stderr ? 2 : 1);
        return;
      case FrameType.Window:
        h.session.taken(frame.payload.readUInt32BE(0));
        return;
      case FrameType.Control: {
        let m: any;
        try {
          m = JSON.parse(frame.payload.toString('utf8'));
        } catch {
          return;
        }
        if (m?.t === 'started') h.events.onStarted?.(m.pid);
        else if (m?.t === 'event') h.events.onEvent?.(m.kind, m.path);
        else if (m?.t === 'writeFailed') h.session.refused(Number(m.bytes) || 0, String(m.message));
        else if (m?.t === 'exit') this.finish(h, { code: m.code ?? null, signal: m.signal ?? null, error: m.error ?? undefined });
        else if (m?.t === 'detached') this.finish(h, { code: null, signal: null, detached: true });
        return;
      }
    }
  }

  private finish(h: Handler, result: SessionExit): void {
    if (this.handlers.get(h.session.id) !== h) return;
    this.handlers.delete(h.session.id);
    // The guest keeps an ended session for a resume until its client confirms the end.
    if (!result.error && !result.detached) this.sendFrame(encodeControl(h.session.id, { t: 'release' }));
    h.events.onExit(result);
    h.session.finish(result);
  }

  private readonly unacked = new Map<number, number>();
  private ackScheduled = false;

  /**
   * Acknowledges consumed output. Small amounts are batched (one frame per session and stream per
   * tick, or at once past 128 KiB), so a fast stream doesn't cost one frame per chunk.
   */
  private ack(id: number, stream: 1 | 2, bytes: number): void {
    const key = id * 4 + stream;
    const total = (this.unacked.get(key) ?? 0) + bytes;
    if (total >= 128 * 1024) {
      this.unacked.delete(key);
      this.sendFrame(encodeWindow(id, stream, total));
      return;
    }
    this.unacked.set(key, total);
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      setImmediate(() => {
        this.ackScheduled = false;
        for (const [k, n] of this.unacked) this.sendFrame(encodeWindow(Math.floor(k / 4), k % 4, n));
        this.unacked.clear();
      });
    }
  }

  /** A one-shot request to the guest agent (stat, list, mkdir, rename, remove, info). */
  async call<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    await this.reconnecting;
    return call<T>(this.conn, 'guest.call', { method, params });
  }

  dispose(): void {
    this.disposed = true;
    this.data.destroy();
    this.conn.dispose();
  }
}

/** Opens the data channel: a second connection that attaches with `token` and waits for 'attached'. */
async function attachChannel(socketPath: string, token: string, timeoutMs = 5000): Promise<net.Socket> {
  const socket = await connectUnix(socketPath, timeoutMs);
  socket.write(encodeControl(0, { t: 'attach', token }));
  const decoder = new FrameDecoder();
  return new Promise((resolve, reject) => {
    const fail = (why: string) => {
      clearTimeout(timer);
      socket.destroy();
      reject(new SandboxError(ErrorCode.AgentUnavailable, `the VM's data channel on ${socketPath}: ${why}`));
    };
    const timer = setTimeout(() => fail(`not attached within ${timeoutMs} ms`), timeoutMs);
    const onClose = () => fail('closed before it was attached');
    const onData = (chunk: Buffer) => {
      try {
        decoder.push(chunk, (f) => {
          if (f.type !== FrameType.Control || f.session !== 0) throw new Error('unexpected first frame');
          clearTimeout(timer);
          socket.removeListener('data', onData);
          socket.removeListener('close', onClose);
          socket.pause();
          resolve(socket);
        });
      } catch (err) {
        fail((err as Error).message);
      }
    };
    socket.on('data', onData);
    socket.once('close', onClose);
  });
}
