/**
 * unit: fuzzing the host end of the channel. A seeded generator feeds AgentLink at least 1,000,000
 * frames (valid, mutated, truncated, oversize, garbage) in random chunk sizes, while sessions open
 * and close. Passes when nothing throws, the loop finishes (no hang), and what the host holds stays
 * bounded: decoder buffer, session count, violation log and heap.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { FrameType, HEADER_SIZE, MAX_PAYLOAD, encodeControl, encodeFrame, encodeWindow } from '../../runtime/protocol/frames';
import { MAX_SESSIONS } from '../../runtime/protocol/messages';
import type { HostSession, SessionHandlers } from '../../runtime/worker/agentLink';
import { FakeGuest } from './fakeGuest';

const FRAMES = Number(process.env.SANDBOXVM_FUZZ_FRAMES ?? 1_000_000);

/** xorshift32: small, seeded, reproducible. */
function rng(seed: number) {
  let x = seed >>> 0 || 1;
  const next = () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 0x100000000;
  };
  return { next, int: (n: number) => Math.floor(next() * n) };
}

test(`fuzz: ${FRAMES} generated frames into the host end`, { timeout: 600_000 }, async () => {
  const seed = Number(process.env.SANDBOXVM_FUZZ_SEED ?? Date.now() % 1_000_000);
  process.stderr.write(`# fuzz seed ${seed} (SANDBOXVM_FUZZ_SEED to replay)\n`);
  const r = rng(seed);
  const guest = new FakeGuest();
  guest.keepHostFrames = false;
  const open: HostSession[] = [];
  const handlers: SessionHandlers = { onStarted() {}, onData() {}, onEof() {}, onExit() {}, onEvent() {} };
  const payload = Buffer.alloc(MAX_PAYLOAD + 16, 0x61);
  const heapBefore = process.memoryUsage().heapUsed;
  let maxBuffered = 0;
  let batch: Buffer[] = [];
  let batchBytes = 0;

  const sessionId = () => (open.length > 0 && r.next() < 0.8 ? open[r.int(open.length)].id : r.int(2 ** 32));
  const controls: (() => object)[] = [
    () => ({ t: 'hello', version: 1, epoch: guest.epoch, agentVersion: 'f', pid: 1 + r.int(3), hostname: 'h', kernel: 'k' }),
    () => ({ t: 'heartbeat', uptime: r.next() * 100, time: Date.now() }),
    () => ({ t: 'started', pid: r.int(100000) }),
    () => ({ t: 'exit', code: r.int(300) - 20, signal: r.next() < 0.5 ? null : 'SIGKILL' }),
    () => ({ t: 'error', message: 'x'.repeat(r.int(5000)) }),
    () => ({ t: 'result', ok: r.next() < 0.5, value: { entries: [] } }),
    () => ({ t: 'event', kind: 'change', path: 'p' }),
    () => ({ t: 'bogus', junk: r.int(10) }),
    () => ({ t: 'hello', version: 'x' }),
  ];

  function frame(): Buffer {
    const kind = r.int(100);
    const id = sessionId();
    if (kind < 30) return encodeFrame(FrameType.Data, id, payload.subarray(0, r.int(r.next() < 0.9 ? 2048 : MAX_PAYLOAD)), 1 + r.int(2));
    if (kind < 55) return encodeControl(r.next() < 0.3 ? 0 : id, controls[r.int(controls.length)]());
    if (kind < 65) return encodeWindow(id, r.int(3), r.int(2 ** 32));
    if (kind < 70) return encodeFrame(FrameType.Eof, id, undefined, r.int(3));
    if (kind < 80) {
      // A valid frame with one byte flipped somewhere (header or payload).
      const f = Buffer.from(encodeControl(id, controls[r.int(controls.length)]()));
      f[r.int(f.length)] ^= 1 << r.int(8);
      return f;
    }
    if (kind < 85) {
      // A header claiming more than the limit.
      const f = Buffer.alloc(HEADER_SIZE);
      encodeFrame(FrameType.Data, id, Buffer.alloc(0), 1).copy(f);
      f.writeUInt32BE(MAX_PAYLOAD + 1 + r.int(2 ** 20), 8);
      return f;
    }
    if (kind < 90) return Buffer.from(Array.from({ length: 1 + r.int(40) }, () => r.int(256)));
    if (kind < 95) return encodeFrame(FrameType.Control, id, Buffer.from('{"t":"exit","code":'));
    const f = encodeFrame(FrameType.Data, id, payload.subarray(0, r.int(4000)), 1);
    return f.subarray(0, r.int(f.length)); // truncated
  }

  for (let i = 0; i < FRAMES; i++) {
    if (i % 1000 === 0) {
      // Keep sessions coming and going, as a real host does, while the guest misbehaves.
      if (guest.link.connected && open.length < 64) {
        try {
          open.push(guest.link.openSession({ kind: 'exec', argv: ['x'] }, handlers));
        } catch {
          // too many sessions or not connected: both are answers, not crashes
        }
      }
      for (let k = open.length - 1; k >= 0; k--) if (open[k].ended) open.splice(k, 1);
      if (!guest.link.connected && r.next() < 0.5) guest.hello();
    }
    const f = frame();
    batch.push(f);
    batchBytes += f.length;
    if (batchBytes > 64 * 1024 || batch.length > 64) {
      const all = Buffer.concat(batch, batchBytes);
      batch = [];
      batchBytes = 0;
      // Random chunking: frames split anywhere, several per chunk.
      for (let o = 0; o < all.length; ) {
        const n = 1 + r.int(r.next() < 0.5 ? 64 : 70_000);
        guest.push(all.subarray(o, o + n));
        o += n;
      }
      await guest.settle();
      maxBuffered = Math.max(maxBuffered, (guest.link as any).decoder.buffered);
    }
  }
  await guest.settle();
  const heapGrowthMiB = (process.memoryUsage().heapUsed - heapBefore) / 2 ** 20;
  process.stderr.write(`# ${guest.link.violations.length} violations logged (capped), max decoder buffer ${maxBuffered} bytes, heap +${heapGrowthMiB.toFixed(1)} MiB\n`);
  assert.ok(maxBuffered <= HEADER_SIZE + MAX_PAYLOAD + 70_000, `decoder held ${maxBuffered} bytes`);
  assert.ok(guest.link.sessionCount <= MAX_SESSIONS);
  assert.ok(guest.link.violations.length <= 1000);
  assert.ok(guest.link.violations.length > 0, 'the fuzzer did provoke violations');
  assert.ok(heapGrowthMiB < 200, `heap grew ${heapGrowthMiB} MiB`);
  guest.dispose();
});
