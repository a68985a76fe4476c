/**
 * Exec and terminal sessions on a running VM, over a direct connection to its worker.
 * Output handlers may return a promise: the bytes are acknowledged (and the guest allowed to send
 * more) only once it settles, so a slow consumer slows the guest process, not memory.
 */
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { call, connectSocket } from '../common/rpc';
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
}

export class Session {
  readonly exited: Promise<SessionExit>;
  private resolveExit!: (r: SessionExit) => void;

  constructor(readonly id: number, private readonly client: SessionClient) {
    this.exited = new Promise((r) => (this.resolveExit = r));
  }

  /** @internal */
  finish(result: SessionExit): void {
    this.resolveExit(result);
  }

  write(data: Buffer | string): Promise<void> {
    const buf = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    return call(this.client.connection, 'session.write', { id: this.id, data: buf.toString('base64') });
  }
  eof(): Promise<void> {
    return call(this.client.connection, 'session.eof', { id: this.id });
  }
  resize(cols: number, rows: number): Promise<void> {
    return call(this.client.connection, 'session.resize', { id: this.id, cols, rows });
  }
  signal(signal: string): Promise<void> {
    return call(this.client.connection, 'session.signal', { id: this.id, signal });
  }
  close(): Promise<void> {
    return call(this.client.connection, 'session.close', { id: this.id });
  }
}

export class SessionClient {
  private readonly handlers = new Map<number, { events: SessionEvents; session: Session }>();
  /** Notifications that arrive before session.open's reply has been processed. */
  private readonly early = new Map<number, { method: string; params: any }[]>();

  private constructor(readonly connection: MessageConnection) {
    const route = (method: string) => (params: any) => {
      const h = this.handlers.get(params.id);
      if (h) this.dispatch(h, method, params);
      else {
        const list = this.early.get(params.id) ?? [];
        list.push({ method, params });
        this.early.set(params.id, list);
      }
    };
    for (const m of ['session.started', 'session.data', 'session.eof', 'session.event', 'session.exit']) connection.onNotification(m, route(m));
  }

  static async connect(socket: string): Promise<SessionClient> {
    return new SessionClient(await connectSocket(socket, 5000));
  }

  async open(params: OpenParams, events: SessionEvents): Promise<Session> {
    const { id } = await call<{ id: number }>(this.connection, 'session.open', params);
    const session = new Session(id, this);
    const h = { events, session };
    this.handlers.set(id, h);
    for (const n of this.early.get(id) ?? []) this.dispatch(h, n.method, n.params);
    this.early.delete(id);
    return session;
  }

  private dispatch(h: { events: SessionEvents; session: Session }, method: string, p: any): void {
    switch (method) {
      case 'session.started':
        h.events.onStarted?.(p.pid);
        break;
      case 'session.data': {
        const data = Buffer.from(p.data, 'base64');
        const stream = p.stream === 2 ? 2 : 1;
        const ack = () => this.ack(p.id, stream, data.length);
        const r = h.events.onData(stream, data);
        if (r && typeof (r as Promise<void>).then === 'function') (r as Promise<void>).then(ack, ack);
        else ack();
        break;
      }
      case 'session.eof':
        h.events.onEof?.(p.stream);
        break;
      case 'session.event':
        h.events.onEvent?.(p.kind, p.path);
        break;
      case 'session.exit':
        this.handlers.delete(p.id);
        h.events.onExit({ code: p.code, signal: p.signal, error: p.error });
        h.session.finish({ code: p.code, signal: p.signal, error: p.error });
        break;
    }
  }

  private readonly unacked = new Map<string, number>();
  private ackScheduled = false;

  /**
   * Acknowledges consumed output. Small amounts are batched (one notification per tick, or at once
   * past 128 KiB), so a fast stream doesn't cost one message per chunk.
   */
  private ack(id: number, stream: 1 | 2, bytes: number): void {
    const key = `${id}:${stream}`;
    const total = (this.unacked.get(key) ?? 0) + bytes;
    if (total >= 128 * 1024) {
      this.unacked.delete(key);
      this.connection.sendNotification('session.ack', { id, stream, bytes: total }).catch(() => undefined);
      return;
    }
    this.unacked.set(key, total);
    if (!this.ackScheduled) {
      this.ackScheduled = true;
      setImmediate(() => {
        this.ackScheduled = false;
        for (const [k, n] of this.unacked) {
          const [sid, st] = k.split(':').map(Number);
          this.connection.sendNotification('session.ack', { id: sid, stream: st, bytes: n }).catch(() => undefined);
        }
        this.unacked.clear();
      });
    }
  }

  /** A one-shot request to the guest agent (stat, list, mkdir, rename, remove, info). */
  call<T>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return call<T>(this.connection, 'guest.call', { method, params });
  }

  dispose(): void {
    this.connection.dispose();
  }
}
