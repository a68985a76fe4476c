/**
 * A client of a VM's serial console (worker/serialConsole.ts): bytes both ways, no resizing. The
 * first bytes are the replay (up to the last 64 KiB, so a client connected as the VM starts sees
 * its first boot lines), then live output.
 *
 * Rides out a worker takeover: when the connection drops while the VM's QEMU lives, it connects
 * again (for up to `takeoverTimeoutMs`) from its position, so nothing is shown twice. It closes,
 * with a reason, when the VM stops or is saved. Input typed while it reconnects is held (at most
 * HELD_INPUT_LIMIT bytes) and sent once it is back.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { connectUnix } from '../common/unixSocket';

const HEADER_LIMIT = 4096;
/** Input held while a worker takeover is ridden out; beyond it, typing is dropped. */
const HELD_INPUT_LIMIT = 64 * 1024;

export interface SerialClientOptions {
  /** Replay from this console.log position (default: everything the worker holds). */
  from?: number;
  /** How long to wait for a new worker after the connection drops (default 60 s). */
  takeoverTimeoutMs?: number;
  /** How long to wait for the console to appear (a VM that is starting); default 0: fail at once. */
  waitMs?: number;
}

export class SerialClient {
  private socket!: net.Socket;
  private closed = false;
  private readonly dataListeners: ((data: Buffer) => void)[] = [];
  /** What arrived before the first onData listener (callers add it right after `connect`). */
  private readonly early: Buffer[] = [];
  private readonly closeListeners: ((reason: string) => void)[] = [];
  /** The console.log position after the last byte handed to onData. */
  position = 0;

  private constructor(readonly vmDir: string, private readonly takeoverTimeoutMs: number) {}

  /** Connects to the console of the VM whose directory is `vmDir`; rejects when it is not running. */
  static async connect(vmDir: string, options: SerialClientOptions = {}): Promise<SerialClient> {
    const client = new SerialClient(vmDir, options.takeoverTimeoutMs ?? 60_000);
    const deadline = Date.now() + (options.waitMs ?? 0);
    for (;;) {
      try {
        await client.open(options.from);
        return client;
      } catch (err) {
        if (Date.now() >= deadline) throw err;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  get vm(): string {
    return path.basename(this.vmDir);
  }

  /**
   * Output from the guest's serial line, in order, each byte once. Bytes that arrived before the
   * first listener (the replay comes with the greeting, before `connect` resolves) go to it first.
   */
  onData(listener: (data: Buffer) => void): void {
    this.dataListeners.push(listener);
    for (const d of this.early.splice(0)) listener(d);
  }

  /** Once, when the console ends: why (the VM stopped, was saved, closed by us...). */
  onClose(listener: (reason: string) => void): void {
    this.closeListeners.push(listener);
  }

  /** Sends bytes to the guest's serial line; while reconnecting they are held (bounded). */
  write(data: Buffer | string): void {
    if (this.closed) return;
    const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
    if (!this.socket.destroyed && !this.socket.connecting && this.held.length === 0) {
      this.socket.write(bytes);
      return;
    }
    if (this.heldBytes + bytes.length > HELD_INPUT_LIMIT) return;
    this.held.push(bytes);
    this.heldBytes += bytes.length;
  }

  private held: Buffer[] = [];
  private heldBytes = 0;

  close(reason = 'closed'): void {
    if (this.closed) return;
    this.closed = true;
    this.socket?.destroy();
    for (const l of this.closeListeners) l(reason);
  }

  private async open(from?: number): Promise<void> {
    const socketPath = path.join(this.vmDir, VM_FILES.serialSocket);
    let socket: net.Socket;
    try {
      socket = await connectUnix(socketPath, 5000);
    } catch (err) {
      throw new SandboxError(ErrorCode.WrongState, `${this.vm} has no serial console to connect to (is it running?): ${(err as Error).message}`, { cause: err });
    }
    socket.write(JSON.stringify({ serial: 1, ...(from !== undefined ? { from } : {}) }) + '\n');
    const { header, rest } = await readHeader(socket);
    if (typeof header.error === 'string') {
      socket.destroy();
      throw new SandboxError(ErrorCode.WrongState, `the serial console of ${this.vm} refused: ${header.error}`);
    }
    if (typeof header.from !== 'number' || !Number.isSafeInteger(header.from) || header.from < 0) {
      socket.destroy();
      throw new SandboxError(ErrorCode.Internal, `the serial console of ${this.vm} answered an unexpected greeting`);
    }
    this.socket = socket;
    this.position = header.from;
    socket.on('data', (d: Buffer) => this.deliver(d));
    socket.on('close', () => void this.onDrop());
    if (rest.length > 0) this.deliver(rest);
  }

  private deliver(data: Buffer): void {
    this.position += data.length;
    if (this.dataListeners.length === 0) this.early.push(data);
    for (const l of this.dataListeners) l(data);
  }

  private async onDrop(): Promise<void> {
    if (this.closed) return;
    const deadline = Date.now() + this.takeoverTimeoutMs;
    for (;;) {
      const ended = this.vmEnded();
      if (ended) return this.close(ended);
      try {
        await this.open(this.position);
        const held = this.held;
        this.held = [];
        this.heldBytes = 0;
        for (const b of held) this.socket.write(b);
        return;
      } catch {
        if (Date.now() > deadline) return this.close(`${this.vm}'s worker did not come back within ${Math.round(this.takeoverTimeoutMs / 1000)} s`);
        await new Promise((r) => setTimeout(r, 250));
        if (this.closed) return;
      }
    }
  }

  /** Why the console cannot come back, or undefined while the VM's QEMU still runs. */
  private vmEnded(): string | undefined {
    let qemuPid: unknown;
    try {
      qemuPid = JSON.parse(fs.readFileSync(path.join(this.vmDir, VM_FILES.worker), 'utf8')).qemuPid;
    } catch {
      qemuPid = undefined;
    }
    if (typeof qemuPid === 'number' && Number.isInteger(qemuPid) && qemuPid > 1) {
      try {
        process.kill(qemuPid, 0);
        return undefined;
      } catch {
        // gone
      }
    }
    if (fs.existsSync(path.join(this.vmDir, VM_FILES.savedState))) return `${this.vm} was saved; its console comes back when it is started again`;
    return `${this.vm} stopped`;
  }
}

/** The worker's one-line JSON greeting, and any bytes after it. */
function readHeader(socket: net.Socket): Promise<{ header: Record<string, unknown>; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const fail = (message: string) => {
      cleanup();
      socket.destroy();
      reject(new SandboxError(ErrorCode.Internal, message));
    };
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > HEADER_LIMIT) fail('the serial console sent an oversized greeting');
        return;
      }
      cleanup();
      socket.pause();
      try {
        const header = JSON.parse(buf.subarray(0, nl).toString('utf8'));
        if (typeof header !== 'object' || header === null) throw new Error('not an object');
        resolve({ header, rest: buf.subarray(nl + 1) });
      } catch {
        socket.destroy();
        reject(new SandboxError(ErrorCode.Internal, 'the serial console sent a greeting that is not JSON'));
      }
      setImmediate(() => socket.resume());
    };
    const onClose = () => fail('the serial console closed before greeting');
    const cleanup = () => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.on('close', onClose);
  });
}
