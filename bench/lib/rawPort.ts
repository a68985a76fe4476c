/**
 * The host end of the raw-channel probe (bench/guest/chanbench.c): a virtio-serial port of its own
 * in the peer VM, its host end an inherited socketpair, bytes only. Gives the ceiling the agent is
 * compared with: a 1-byte echo and bulk copies each way, with nothing but QEMU and the guest kernel
 * in the path.
 */
import { execFile } from 'node:child_process';
import type { Socket } from 'node:net';
import { now } from './stats';

export const RAW_PORT_NAME = 'org.sandboxvm.raw';
/** Where the bench puts the probe in the guest. */
export const CHANBENCH_GUEST_PATH = '/usr/local/bin/sandboxvm-chanbench';

/** Builds the guest probe: static, so it runs on the guest's libc whatever it is. */
export function buildChanbench(source: string, out: string): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile('gcc', ['-O2', '-static', '-o', out, source], (err, _o, stderr) => (err ? reject(new Error(`gcc ${source}: ${stderr || err.message}`)) : resolve())),
  );
}

export class RawPort {
  private chunks: Buffer[] = [];
  private bytes = 0;
  private waiter?: () => void;

  constructor(private readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.chunks.push(d);
      this.bytes += d.length;
      this.waiter?.();
    });
    socket.on('error', () => undefined);
  }

  /** Resolves once `n` bytes have arrived since the last take, and takes them. */
  async take(n: number, timeoutMs = 60_000): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (this.bytes < n) {
      if (Date.now() > deadline) throw new Error(`raw port: ${this.bytes} of ${n} bytes after ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, 100);
        this.waiter = () => {
          clearTimeout(t);
          resolve();
        };
      });
      this.waiter = undefined;
    }
    const all = Buffer.concat(this.chunks, this.bytes);
    this.chunks = all.length > n ? [all.subarray(n)] : [];
    this.bytes -= n;
    return all.subarray(0, n);
  }

  /** Waits for the probe's 'R' (it has opened the port). */
  async ready(): Promise<void> {
    const b = await this.take(1, 30_000);
    if (b[0] !== 0x52) throw new Error(`raw port: expected the probe's R, got ${b.toString('hex')}`);
  }

  /** One-byte echo round trips (the probe runs `echo`): `warmup` untimed, then `n` timed (ms). */
  async echo(n: number, warmup = 20): Promise<number[]> {
    const out: number[] = [];
    for (let i = 0; i < n + warmup; i++) {
      const t0 = now();
      this.socket.write('x');
      await this.take(1);
      if (i >= warmup) out.push(now() - t0);
    }
    this.socket.write('q');
    return out;
  }

  /** Host to guest: writes `total` bytes (the probe runs `sink`) and waits for its 'k'; MB/s. */
  async sink(total: number): Promise<number> {
    const block = Buffer.alloc(64 * 1024, 0x73);
    const t0 = now();
    for (let sent = 0; sent < total; sent += block.length) {
      const part = sent + block.length > total ? block.subarray(0, total - sent) : block;
      if (!this.socket.write(part)) await new Promise((r) => this.socket.once('drain', r));
    }
    const ack = await this.take(1, 120_000);
    if (ack[0] !== 0x6b) throw new Error(`raw port: expected k, got ${ack.toString('hex')}`);
    return total / 1e6 / ((now() - t0) / 1000);
  }

  /** Guest to host: reads `total` bytes (the probe runs `source`, its R already taken); MB/s. */
  async source(total: number): Promise<number> {
    const t0 = now();
    await this.take(total, 120_000);
    return total / 1e6 / ((now() - t0) / 1000);
  }
}
