/**
 * unit: the guest agent without the relay (vsock hosts, or no relay binary) keeps what an exec
 * sent until the host grants it back and keeps its end until released, so a new host end resumes
 * it from the client's offsets: every byte once, then the exit. Runs a real process on this host
 * through the agent's own session code, fed frames as a host would send them.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { FrameDecoder, FrameType, StreamId, encodeControl, encodeWindow, type Frame } from '../../runtime/protocol/frames';
import { Agent } from '../../guest-agent/src/agent';

class ScriptedHost {
  readonly frames: Frame[] = [];
  private readonly decoder = new FrameDecoder();
  readonly agent: Agent;
  constructor() {
    this.agent = new Agent((frame) => this.decoder.push(frame, (f) => this.frames.push(f)), () => undefined);
  }
  send(frame: Buffer): void {
    this.agent.receive(frame);
  }
  /** Control messages on `session`, in the frames from index `from` on. */
  controls(session: number, from = 0): any[] {
    return this.frames.slice(from).filter((f) => f.type === FrameType.Control && f.session === session).map((f) => JSON.parse(f.payload.toString()));
  }
  /** The agent's answer to a hello sent now. */
  async greet(epoch: string): Promise<any> {
    const mark = this.frames.length;
    this.send(encodeControl(0, { t: 'hello', version: 1, epoch, time: Date.now() }));
    return this.until('the hello', () => this.controls(0, mark).find((m) => m.t === 'hello'));
  }
  async until<T>(what: string, probe: () => T | undefined, timeoutMs = 20_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v !== undefined) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

/** Output of `session` on stdout in the frames from index `from` on. */
function stdout(frames: Frame[], session: number, from = 0): Buffer {
  return Buffer.concat(frames.slice(from).filter((f) => f.type === FrameType.Data && f.session === session && f.stream === StreamId.Stdout).map((f) => f.payload));
}

test('agent (no relay): an exec is resumed from the client\'s offset by a new host end; nothing lost, nothing doubled; released after its end', async () => {
  const host = new ScriptedHost();
  const epoch = 'e1';
  await host.greet(epoch);
  // 3 MiB of numbered lines: more than a window, so the guest must wait for grants.
  host.send(encodeControl(7, { t: 'open', kind: 'exec', argv: ['sh', '-c', 'seq 1 400000; exit 3'] }));
  await host.until('a full window of output', () => (stdout(host.frames, 7).length >= 1024 * 1024 ? true : undefined));
  const expected = Buffer.from(Array.from({ length: 400000 }, (_, i) => `${i + 1}\n`).join(''));
  const first = stdout(host.frames, 7);
  assert.equal(first.length, 1024 * 1024, 'one window, no more, without grants');
  assert.ok(first.equals(expected.subarray(0, first.length)));

  // The worker dies having delivered 300000 bytes to its client and granted back 100000.
  host.send(encodeWindow(7, StreamId.Stdout, 100_000));
  const had = 300_000;
  const mark = host.frames.length;
  assert.deepEqual((await host.greet(epoch)).sessions, [{ id: 7, kind: 'exec' }]);
  host.send(encodeControl(7, { t: 'resume', stdout: had, stderr: 0 }));
  await host.until('resumed', () => (host.controls(7).some((m) => m.t === 'resumed') ? true : undefined));
  const resumedAt = host.frames.findIndex((f, i) => i >= mark && f.type === FrameType.Control && f.session === 7 && JSON.parse(f.payload.toString()).t === 'resumed');
  // The client grants as it takes: the rest arrives, then the exit.
  let received = had;
  const pump = setInterval(() => {
    const got = stdout(host.frames, 7, resumedAt + 1).length + had;
    if (got > received) {
      host.send(encodeWindow(7, StreamId.Stdout, got - received));
      received = got;
    }
  }, 5);
  const exit = await host.until('the exit', () => host.controls(7).find((m) => m.t === 'exit'));
  clearInterval(pump);
  assert.deepEqual(exit, { t: 'exit', code: 3, signal: null });
  const all = Buffer.concat([expected.subarray(0, had), stdout(host.frames, 7, resumedAt + 1)]);
  assert.equal(all.length, expected.length);
  assert.equal(createHash('sha256').update(all).digest('hex'), createHash('sha256').update(expected).digest('hex'));

  // Ended but not released: still listed, and a resume replays its end; released: gone.
  assert.deepEqual((await host.greet(epoch)).sessions, [{ id: 7, kind: 'exec' }]);
  const again = host.frames.length;
  host.send(encodeControl(7, { t: 'resume' }));
  assert.deepEqual(await host.until('the end replayed', () => host.controls(7, again).find((m) => m.t === 'exit')), { t: 'exit', code: 3, signal: null });
  host.send(encodeControl(7, { t: 'release' }));
  assert.deepEqual((await host.greet(epoch)).sessions, []);
  host.agent.dispose();
});
