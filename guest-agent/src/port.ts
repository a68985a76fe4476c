/**
 * The guest end of the channel's byte stream: a virtio-serial port found by name.
 *
 * Reads use a 64 KiB buffer (the driver returns at most 4 KiB per read, but bursts queue up).
 * read() returns 0 while no host end is connected, so EOF means "wait and read again", never "done".
 * Writes are coalesced into single write() calls of at most 32 KiB, and a frame's header is never
 * written apart from its payload.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GUEST_WRITE_MAX } from '../../runtime/protocol/frames';

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

export class PortStream {
  private readonly queue: Buffer[] = [];
  private queuedBytes = 0;
  private writing = false;
  private closed = false;
  private readonly readBuffer = Buffer.allocUnsafe(64 * 1024);

  constructor(private readonly fd: number, private readonly onData: (chunk: Buffer) => void, private readonly log: (msg: string) => void) {}

  get pendingWriteBytes(): number {
    return this.queuedBytes;
  }

  start(): void {
    this.readLoop();
  }

  /** Queues whole frames; they go out in order, several per write() where they fit. */
  write(frame: Buffer): void {
    this.queue.push(frame);
    this.queuedBytes += frame.length;
    if (!this.writing) this.flush();
  }

  private readLoop(): void {
    if (this.closed) return;
    fs.read(this.fd, this.readBuffer, 0, this.readBuffer.length, null, (err, bytes) => {
      if (err) {
        this.log(`channel read failed: ${err.message}; retrying`);
        setTimeout(() => this.readLoop(), 200);
        return;
      }
      if (bytes === 0) {
        // No host end connected (or it went away): poll gently until one is.
        setTimeout(() => this.readLoop(), 50);
        return;
      }
      this.onData(Buffer.from(this.readBuffer.subarray(0, bytes)));
      this.readLoop();
    });
  }

  private flush(): void {
    if (this.queue.length === 0) {
      this.writing = false;
      return;
    }
    this.writing = true;
    const batch = this.takeBatch();
    this.writeAll(batch, 0, () => this.flush());
  }

  /** Concatenates queued frames up to GUEST_WRITE_MAX; a frame larger than that goes alone. */
  private takeBatch(): Buffer {
    const first = this.queue.shift()!;
    let size = first.length;
    const parts = [first];
    while (this.queue.length > 0 && size + this.queue[0].length <= GUEST_WRITE_MAX) {
      const next = this.queue.shift()!;
      parts.push(next);
      size += next.length;
    }
    this.queuedBytes -= size;
    return parts.length === 1 ? first : Buffer.concat(parts, size);
  }

  private writeAll(buf: Buffer, offset: number, done: () => void): void {
    const end = Math.min(buf.length, offset + GUEST_WRITE_MAX);
    fs.write(this.fd, buf, offset, end - offset, null, (err, written) => {
      if (err) {
        if (err.code === 'EAGAIN') {
          setTimeout(() => this.writeAll(buf, offset, done), 5);
          return;
        }
        this.log(`channel write failed: ${err.message}; dropping ${buf.length - offset} bytes`);
        done();
        return;
      }
      const next = offset + written;
      if (next < buf.length) this.writeAll(buf, next, done);
      else done();
    });
  }
}
