/**
 * A client of qemu-guest-agent (QGA) over the host end of its virtio-serial port: one JSON request
 * per line, answered in order. Requests that were written before the guest opened its port are
 * delivered when it does, so sync() resynchronizes with guest-sync-delimited first.
 */
import type { Duplex } from 'node:stream';
import { delay } from './proc';

interface QgaReply {
  return?: unknown;
  error?: { class?: string; desc?: string };
}

interface Pending {
  execute: string;
  resolve: (value: unknown) => void;
  reject: (err: Error) => void;
}

export class QgaClient {
  private parts: Buffer[] = [];
  private readonly pending: Pending[] = [];
  /** While syncing, every reply goes here instead of to `pending`. */
  private syncListener?: (reply: QgaReply) => void;
  private closed?: Error;

  constructor(private readonly socket: Duplex) {
    socket.on('data', (chunk: Buffer) => this.push(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => this.fail(new Error('the qemu-guest-agent channel closed')));
  }

  private push(chunk: Buffer): void {
    let start = 0;
    for (let i = chunk.indexOf(10); i >= 0; i = chunk.indexOf(10, start)) {
      this.parts.push(chunk.subarray(start, i));
      const line = Buffer.concat(this.parts).toString('latin1').replace(/\xff/g, '').trim();
      this.parts = [];
      start = i + 1;
      if (line) this.onLine(line);
    }
    if (start < chunk.length) this.parts.push(chunk.subarray(start));
  }

  private onLine(line: string): void {
    let reply: QgaReply;
    try {
      reply = JSON.parse(line) as QgaReply;
    } catch {
      return; // noise from before a resync
    }
    if (this.syncListener) return this.syncListener(reply);
    const p = this.pending.shift();
    if (!p) return;
    if (reply.error) p.reject(new Error(`qemu-guest-agent ${p.execute}: ${reply.error.desc ?? reply.error.class ?? 'error'}`));
    else p.resolve(reply.return);
  }

  private fail(err: Error): void {
    this.closed ??= err;
    for (const p of this.pending.splice(0)) p.reject(err);
  }

  private send(text: string | Buffer): void {
    if (this.closed) throw this.closed;
    this.socket.write(text);
  }

  request<T = unknown>(execute: string, args?: Record<string, unknown>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.closed) return reject(this.closed);
      this.pending.push({ execute, resolve: resolve as (v: unknown) => void, reject });
      this.send(JSON.stringify(args ? { execute, arguments: args } : { execute }) + '\n');
    });
  }

  /**
   * Waits until the guest's agent answers: sends guest-sync-delimited (after a 0xFF that resets its
   * parser) every second until one is answered, then once more with a fresh id and drops every
   * reply up to that one's, so later requests and replies pair up.
   */
  async sync(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const ids = new Set<number>();
    let answered: number | undefined;
    this.syncListener = (r) => {
      if (typeof r.return === 'number' && ids.has(r.return)) answered = r.return;
    };
    try {
      const until = async (cond: () => boolean, ms: number) => {
        const end = Math.min(deadline, Date.now() + ms);
        while (!cond() && Date.now() < end && !this.closed) await delay(20);
        if (this.closed) throw this.closed;
      };
      const syncOnce = (id: number) => {
        ids.add(id);
        this.send(Buffer.from([0xff]));
        this.send(JSON.stringify({ execute: 'guest-sync-delimited', arguments: { id } }) + '\n');
      };
      while (answered === undefined) {
        if (Date.now() >= deadline) throw new Error(`qemu-guest-agent did not answer within ${timeoutMs} ms`);
        syncOnce(randomId());
        await until(() => answered !== undefined, 1000);
      }
      const last = randomId();
      syncOnce(last);
      await until(() => answered === last, 10_000);
      if (answered !== last) throw new Error('qemu-guest-agent did not answer the final guest-sync');
    } finally {
      this.syncListener = undefined;
    }
  }

  /** guest-exec of `path` without output capture, then guest-exec-status back to back until it has exited. */
  async exec(path: string, args: string[] = []): Promise<number> {
    const { pid } = await this.request<{ pid: number }>('guest-exec', { path, arg: args, 'capture-output': false });
    for (;;) {
      const s = await this.request<{ exited: boolean; exitcode?: number; signal?: number }>('guest-exec-status', { pid });
      if (s.exited) return s.exitcode ?? 128 + (s.signal ?? 0);
    }
  }

  /** guest-exec with captured output, polled every 50 ms until it has exited. */
  async execOutput(path: string, args: string[] = [], timeoutMs = 60_000): Promise<{ code: number; stdout: string; stderr: string }> {
    const { pid } = await this.request<{ pid: number }>('guest-exec', { path, arg: args, 'capture-output': true });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.request<{ exited: boolean; exitcode?: number; signal?: number; 'out-data'?: string; 'err-data'?: string }>('guest-exec-status', { pid });
      if (s.exited) {
        const text = (b64?: string) => (b64 ? Buffer.from(b64, 'base64').toString('utf8') : '');
        return { code: s.exitcode ?? 128 + (s.signal ?? 0), stdout: text(s['out-data']), stderr: text(s['err-data']) };
      }
      if (Date.now() > deadline) throw new Error(`qemu-guest-agent: ${path} did not exit within ${timeoutMs} ms`);
      await delay(50);
    }
  }

  /** guest-file-open (w), guest-file-write of `chunk`-byte pieces (base64), guest-file-close. */
  async writeFile(path: string, data: Buffer, chunk: number): Promise<void> {
    const handle = await this.request<number>('guest-file-open', { path, mode: 'w' });
    try {
      for (let off = 0; off < data.length; off += chunk) {
        const piece = data.subarray(off, off + chunk);
        const r = await this.request<{ count: number }>('guest-file-write', { handle, 'buf-b64': piece.toString('base64') });
        if (r.count !== piece.length) throw new Error(`qemu-guest-agent wrote ${r.count} of ${piece.length} bytes`);
      }
    } finally {
      await this.request('guest-file-close', { handle });
    }
  }

  /** guest-file-open (r), guest-file-read of `chunk` bytes until eof, guest-file-close. */
  async readFile(path: string, chunk: number): Promise<Buffer> {
    const handle = await this.request<number>('guest-file-open', { path, mode: 'r' });
    const parts: Buffer[] = [];
    try {
      for (;;) {
        const r = await this.request<{ count: number; 'buf-b64': string; eof: boolean }>('guest-file-read', { handle, count: chunk });
        if (r.count > 0) parts.push(Buffer.from(r['buf-b64'], 'base64'));
        if (r.eof || r.count === 0) break;
      }
    } finally {
      await this.request('guest-file-close', { handle });
    }
    return Buffer.concat(parts);
  }
}

function randomId(): number {
  return 1 + Math.floor(Math.random() * 0x7ffffffe);
}
