/**
 * The VM's serial console (Hyper-V's VMConnect), served by the worker on serial.sock.
 *
 * QEMU serves the guest's ttyS0 on a listening socket the worker made (serial-qemu.sock, an
 * inherited fd like QMP and the channel) and appends every byte the guest writes to console.log
 * itself (the chardev's logfile), connected or not. The worker is that socket's only client: it
 * reads all the time, so QEMU never waits on a slow or absent console client, keeps the last
 * 64 KiB, and fans the bytes out to its own clients, dropping any client that falls 1 MiB behind.
 * Input from any client goes to the guest's serial line, with backpressure from QEMU.
 *
 * Positions are byte offsets in console.log, so they mean the same to every worker: a new worker
 * (takeover, restore) seeds its 64 KiB from the log's tail, and a client that reconnects says where
 * it was and gets only what it lacks. (At a takeover, bytes the guest writes in the instant between
 * the new worker's connect and QEMU's accept reach console.log but not the replay.)
 *
 * Wire protocol on serial.sock (owner-only):
 *   client -> worker, first: one JSON line of at most 256 bytes, {"serial":1,"from"?:<position>};
 *     then raw bytes for the guest's serial line.
 *   worker -> client, first: one JSON line, {"serial":1,"vm":<name>,"from":<position>} (where the
 *     replay starts: `from` when the ring still holds it, else the ring's oldest byte), or
 *     {"error":<sentence>} and close; then raw bytes from the guest, the replay first.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { VM_FILES } from '../common/paths';
import { connectToQemu, listenForQemu, type ListeningSocket } from './qemuSockets';

export const SERIAL_PROTOCOL = 1;
/** What a new client is replayed at most. */
export const REPLAY_BYTES = 64 * 1024;
/** A client further behind than this is disconnected (it may reconnect with its position). */
const CLIENT_BACKLOG_LIMIT = 1024 * 1024;
const HELLO_LIMIT = 256;
const HELLO_TIMEOUT_MS = 5000;

/** The listening socket QEMU serves the serial line on; hand `fd` to QEMU, then `handOver()`. */
export function listenSerialForQemu(dir: string): Promise<ListeningSocket> {
  return listenForQemu(path.join(dir, VM_FILES.qemuSerialSocket));
}

/** Parses a client's hello line; throws a sentence when it is not one. */
export function parseSerialHello(line: string): { from?: number } {
  let hello: unknown;
  try {
    hello = JSON.parse(line);
  } catch {
    throw new Error('the first line must be JSON: {"serial":1,"from":<position>}');
  }
  if (typeof hello !== 'object' || hello === null || (hello as { serial?: unknown }).serial !== SERIAL_PROTOCOL) {
    throw new Error(`unsupported serial console protocol; this worker speaks {"serial":${SERIAL_PROTOCOL}}`);
  }
  const from = (hello as { from?: unknown }).from;
  if (from === undefined || from === null) return {};
  if (typeof from !== 'number' || !Number.isSafeInteger(from) || from < 0) throw new Error('"from" must be a byte position (a non-negative integer)');
  return { from };
}

/** The last `limit` bytes of a stream, addressed by absolute position. */
export class ByteRing {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(private end: number, private readonly limit = REPLAY_BYTES) {}

  get start(): number {
    return this.end - this.size;
  }
  get position(): number {
    return this.end;
  }

  push(data: Buffer): void {
    this.chunks.push(data);
    this.size += data.length;
    this.end += data.length;
    while (this.size - this.chunks[0].length >= this.limit) this.size -= this.chunks.shift()!.length;
    if (this.size > this.limit) {
      const drop = this.size - this.limit;
      this.chunks[0] = this.chunks[0].subarray(drop);
      this.size -= drop;
    }
  }

  /** The bytes from `from` (clamped into what is held) to the end, and where they start. */
  since(from: number | undefined): { from: number; data: Buffer } {
    const at = from === undefined ? this.start : Math.min(Math.max(from, this.start), this.end);
    return { from: at, data: Buffer.concat(this.chunks).subarray(at - this.start) };
  }
}

export class SerialConsole {
  private qemu?: net.Socket;
  private server?: net.Server;
  private ring = new ByteRing(0);
  private readonly clients = new Set<net.Socket>();
  private disposed = false;

  constructor(private readonly dir: string, private readonly log: (m: string) => void) {}

  private file(f: keyof typeof VM_FILES): string {
    return path.join(this.dir, VM_FILES[f]);
  }

  /**
   * Connects to QEMU's serial socket (seeding the replay from console.log's tail) and serves
   * serial.sock. Rejects when QEMU has no serial socket (a QEMU started before this existed).
   */
  async open(): Promise<void> {
    const socket = await connectToQemu(this.file('qemuSerialSocket'));
    this.ring = seedFromLog(this.file('consoleLog'));
    this.qemu = socket;
    socket.on('data', (data: Buffer) => this.output(data));
    socket.on('close', () => {
      if (!this.disposed) this.log('serial console: QEMU closed the serial line');
      for (const c of this.clients) c.end();
    });
    socket.on('drain', () => this.clients.forEach((c) => c.resume()));
    fs.rmSync(this.file('serialSocket'), { force: true });
    const server = net.createServer((client) => this.accept(client));
    this.server = server;
    const oldUmask = process.umask(0o177);
    try {
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(this.file('serialSocket'), () => resolve());
      });
    } finally {
      process.umask(oldUmask);
    }
    fs.chmodSync(this.file('serialSocket'), 0o600);
  }

  private output(data: Buffer): void {
    this.ring.push(data);
    for (const c of this.clients) {
      if (c.writableLength > CLIENT_BACKLOG_LIMIT) {
        this.log('serial console: a client fell 1 MiB behind; disconnected it');
        c.destroy();
        continue;
      }
      c.write(data);
    }
  }

  private accept(client: net.Socket): void {
    client.on('error', () => undefined);
    let pending = Buffer.alloc(0);
    const timer = setTimeout(() => refuse('no hello line within 5 s'), HELLO_TIMEOUT_MS);
    const refuse = (message: string) => {
      clearTimeout(timer);
      client.end(JSON.stringify({ error: message }) + '\n');
    };
    const onHello = (data: Buffer) => {
      pending = Buffer.concat([pending, data]);
      const nl = pending.indexOf(0x0a);
      if (nl < 0) {
        if (pending.length > HELLO_LIMIT) {
          client.off('data', onHello);
          refuse(`the hello line is longer than ${HELLO_LIMIT} bytes`);
        }
        return;
      }
      client.off('data', onHello);
      clearTimeout(timer);
      let hello: { from?: number };
      try {
        if (nl > HELLO_LIMIT) throw new Error(`the hello line is longer than ${HELLO_LIMIT} bytes`);
        hello = parseSerialHello(pending.subarray(0, nl).toString('utf8'));
      } catch (err) {
        refuse((err as Error).message);
        return;
      }
      if (this.disposed || !this.qemu || this.qemu.destroyed) {
        refuse('the VM is not running');
        return;
      }
      const replay = this.ring.since(hello.from);
      client.write(JSON.stringify({ serial: SERIAL_PROTOCOL, vm: path.basename(this.dir), from: replay.from }) + '\n');
      if (replay.data.length > 0) client.write(replay.data);
      this.clients.add(client);
      client.on('close', () => this.clients.delete(client));
      client.on('data', (input: Buffer) => this.input(client, input));
      const rest = pending.subarray(nl + 1);
      if (rest.length > 0) this.input(client, rest);
    };
    client.on('data', onHello);
  }

  /** Input for the guest; a client waits while QEMU is not taking it. */
  private input(client: net.Socket, data: Buffer): void {
    if (!this.qemu || this.qemu.destroyed) return;
    if (!this.qemu.write(data)) client.pause();
  }

  /** Closes every client and the socket; QEMU's side is left to QEMU. Idempotent. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    for (const c of this.clients) c.end();
    this.server?.close();
    fs.rmSync(this.file('serialSocket'), { force: true });
    this.qemu?.destroy();
  }
}

/** The last REPLAY_BYTES of console.log, positioned at its end (an empty ring at 0 without one). */
function seedFromLog(logFile: string): ByteRing {
  let fd: number;
  try {
    fd = fs.openSync(logFile, 'r');
  } catch {
    return new ByteRing(0);
  }
  try {
    const size = fs.fstatSync(fd).size;
    const start = Math.max(0, size - REPLAY_BYTES);
    const buf = Buffer.alloc(size - start);
    let got = 0;
    while (got < buf.length) {
      const n = fs.readSync(fd, buf, got, buf.length - got, start + got);
      if (n <= 0) break;
      got += n;
    }
    const ring = new ByteRing(start);
    ring.push(buf.subarray(0, got));
    return ring;
  } finally {
    fs.closeSync(fd);
  }
}
