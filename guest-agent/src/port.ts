/**
 * The guest end of the channel's byte stream: a virtio-serial port found by name.
 *
 * The port is driven by libuv's event loop as a non-blocking stream (net.Socket over the fd), not by
 * threadpool reads: the driver returns at most 4 KiB per read(), so each read must be cheap, and
 * libuv drains many of them per wakeup. read() returns 0 while no host end is connected: that EOF
 * means "reopen and wait", never "done". Frames are coalesced into writes of at most 32 KiB, and a
 * frame's header is never written apart from its payload.
 */
import * as fs from 'node:fs';
import type * as net from 'node:net';
import * as path from 'node:path';
import { GUEST_WRITE_MAX } from '../../runtime/protocol/frames';
import { streamFromFd } from '../../runtime/native/vsock';

export function findPortDevice(name: string, sysDir = '/sys/class/virtio-ports'): string | undefined {
  let entries: string[];
  try {
    entries = fs.readdirSync(sysDir);
  } catch {
    return undefined;
  }
  for (const entry of entries) {
    try {
      if (fs.readFileSync(path.join(sysDir, entry, 'name'), 'utf8').trim() === name) return path.join('/dev', entry);
    } catch {
      // A port without a name: not ours.
    }
  }
  return undefined;
}

const REOPEN_MS = 50;
/** Output held while no host end is connected; beyond this it is dropped (the host resyncs anyway). */
const MAX_QUEUED_WHILE_CLOSED = 4 * 1024 * 1024;

export class PortStream {
  private socket?: net.Socket;
  private queue: Buffer[] = [];
  private queuedBytes = 0;
  private flushScheduled = false;

  constructor(private readonly device: string, private readonly onData: (chunk: Buffer) => void, private readonly log: (msg: string) => void) {}

  /** Bytes accepted by write() and not yet handed to the kernel. */
  get pendingWriteBytes(): number {
    return this.queuedBytes + (this.socket?.writableLength ?? 0);
  }

  start(): void {
    this.open();
  }

  /** Queues a whole frame; frames written in the same tick go out together, up to 32 KiB a write. */
  write(frame: Buffer): void {
    if (!this.socket && this.queuedBytes > MAX_QUEUED_WHILE_CLOSED) {
      this.log(`no host end for a while: dropping ${this.queuedBytes} queued bytes`);
      this.queue = [];
      this.queuedBytes = 0;
    }
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      queueMicrotask(() => this.flush());
    }
  }

  private open(): void {
    let fd: number;
    try {
      fd = fs.openSync(this.device, fs.constants.O_RDWR | fs.constants.O_NONBLOCK);
    } catch (err) {
      this.log(`cannot open ${this.device}: ${(err as Error).message}; retrying`);
      setTimeout(() => this.open(), 1000);
      return;
    }
    let socket: net.Socket;
    try {
      socket = streamFromFd(fd, { allowHalfOpen: true });
    } catch (err) {
      fs.closeSync(fd);
      this.log(`cannot drive ${this.device} as a stream: ${(err as Error).message}; retrying`);
      setTimeout(() => this.open(), 1000);
      return;
    }
    this.socket = socket;
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (err) => this.log(`channel error: ${err.message}`));
    // EOF: no host end is connected (QEMU not yet listening, or between a save and a restore).
    socket.on('end', () => socket.destroy());
    socket.on('close', () => {
      if (this.socket === socket) this.socket = undefined;
      setTimeout(() => this.open(), REOPEN_MS);
    });
    this.flush();
  }

  private flush(): void {
    this.flushScheduled = false;
    const socket = this.socket;
    if (!socket || socket.destroyed) return; // kept until a host end is there
    while (this.queue.length > 0) {
      const first = this.queue.shift()!;
      let size = first.length;
      const parts = [first];
      while (this.queue.length > 0 && size + this.queue[0].length <= GUEST_WRITE_MAX) {
        const next = this.queue.shift()!;
        parts.push(next);
        size += next.length;
      }
      this.queuedBytes -= size;
      socket.write(parts.length === 1 ? first : Buffer.concat(parts, size));
    }
  }
}
