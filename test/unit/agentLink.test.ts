/**
 * unit: the host end of the channel against a misbehaving guest (oversize and half-written frames,
 * floods beyond the window, unknown and reused session ids, malformed messages and answers, a
 * guest that never reads). Each must end at most the session or reset the channel, never throw.
 */
import { afterEach, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { FrameType, HEADER_SIZE, MAX_PAYLOAD, StreamId, encodeControl, encodeFrame, encodeWindow } from '../../runtime/protocol/frames';
import { INITIAL_WINDOW } from '../../runtime/protocol/messages';
import type { SessionHandlers } from '../../runtime/worker/agentLink';
import { FakeGuest } from './fakeGuest';

let guest: FakeGuest;
afterEach(() => guest?.dispose());

async function connected(): Promise<FakeGuest> {
  guest = new FakeGuest();
  guest.hello();
  await guest.settle();
  assert.equal(guest.link.connected, true);
  return guest;
}

function recorder() {
  const r = { data: [] as Buffer[], bytes: 0, exit: undefined as undefined | { code: number | null; signal: string | null; error?: string } };
  const handlers: SessionHandlers = {
    onStarted: () => undefined,
    onData: (_s, d) => {
      r.data.push(Buffer.from(d));
      r.bytes += d.length;
    },
    onEof: () => undefined,
    onExit: (code, signal, error) => (r.exit = { code, signal, error }),
  };
  return { r, handlers };
}

test('agentLink: nothing but the right hello counts before the handshake', async () => {
  guest = new FakeGuest();
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: 'wrong', agentVersion: 'x', pid: 1, hostname: 'h', kernel: 'k' }));
  guest.push(encodeControl(0, { t: 'heartbeat', uptime: 1, time: 1 }));
  await guest.settle();
  assert.equal(guest.link.connected, false);
  guest.hello();
  await guest.settle();
  assert.equal(guest.link.connected, true);
});

test('agentLink: an oversize frame resets the channel, fails sessions with the reason, and a new handshake recovers', async () => {
  await connected();
  const { r, handlers } = recorder();
  guest.link.openSession({ kind: 'exec', argv: ['x'] }, handlers);
  const oldEpoch = guest.epoch;
  const bad = Buffer.alloc(HEADER_SIZE);
  encodeFrame(FrameType.Data, 1, Buffer.alloc(0), 1).copy(bad);
  bad.writeUInt32BE(MAX_PAYLOAD + 1, 8);
  guest.push(bad);
  await guest.settle();
  assert.match(r.exit?.error ?? '', /reset after a protocol violation/);
  assert.equal(guest.link.connected, false);
  assert.notEqual(guest.epoch, oldEpoch, 'a new epoch is greeted');
  assert.ok(guest.link.violations.some((v) => /exceeds the limit/.test(v)));
  guest.hello();
  await guest.settle();
  assert.equal(guest.link.connected, true);
});

test('agentLink: a flood beyond the window ends that session only', async () => {
  await connected();
  const a = recorder();
  const b = recorder();
  const sa = guest.link.openSession({ kind: 'exec', argv: ['a'] }, a.handlers);
  const sb = guest.link.openSession({ kind: 'exec', argv: ['b'] }, b.handlers);
  const chunk = Buffer.alloc(60_000, 1);
  for (let sent = 0; sent <= INITIAL_WINDOW; sent += chunk.length) guest.push(encodeFrame(FrameType.Data, sa.id, chunk, StreamId.Stdout));
  guest.push(encodeFrame(FrameType.Data, sb.id, Buffer.from('fine'), StreamId.Stdout));
  await guest.settle();
  assert.match(a.r.exit?.error ?? '', /more than its window/);
  assert.ok(a.r.bytes <= INITIAL_WINDOW);
  assert.equal(b.r.exit, undefined);
  assert.equal(Buffer.concat(b.r.data).toString(), 'fine');
  assert.ok(guest.fromHost.some((f) => f.session === sa.id && f.message.t === 'close'), 'the host closed the flooding session');
  assert.equal(guest.link.connected, true);
});

test('agentLink: unknown and reused session ids change nothing', async () => {
  await connected();
  const a = recorder();
  const s = guest.link.openSession({ kind: 'exec', argv: ['a'] }, a.handlers);
  guest.push(encodeFrame(FrameType.Data, 9999, Buffer.from('stray'), StreamId.Stdout));
  guest.push(encodeControl(9999, { t: 'exit', code: 0, signal: null }));
  guest.push(encodeControl(s.id, { t: 'exit', code: 3, signal: null }));
  guest.push(encodeControl(s.id, { t: 'exit', code: 4, signal: null }));
  guest.push(encodeFrame(FrameType.Data, s.id, Buffer.from('late'), StreamId.Stdout));
  await guest.settle();
  assert.deepEqual(a.r.exit, { code: 3, signal: null, error: undefined });
  assert.equal(a.r.bytes, 0);
  assert.equal(guest.link.sessionCount, 0);
  assert.equal(guest.link.connected, true);
});

test('agentLink: data on stdin, credit on stdout and malformed messages end the session with a reason', async () => {
  await connected();
  const cases: [Buffer | ((id: number) => Buffer), RegExp][] = [
    [(id) => encodeFrame(FrameType.Data, id, Buffer.from('x'), StreamId.Stdin), /data on stdin/],
    [(id) => encodeWindow(id, StreamId.Stdout, 5), /granted credit on an output stream/],
    [(id) => encodeFrame(FrameType.Control, id, Buffer.from('{not json')), /invalid message/],
    [(id) => encodeControl(id, { t: 'exit', code: 'zero', signal: null }), /invalid message/],
    [(id) => encodeControl(id, { t: 'event', kind: 'change', path: 'x' }), /watches nothing/],
  ];
  for (const [frame, reason] of cases) {
    const rec = recorder();
    const s = guest.link.openSession({ kind: 'exec', argv: ['a'] }, rec.handlers);
    guest.push(typeof frame === 'function' ? frame(s.id) : frame);
    await guest.settle();
    assert.match(rec.r.exit?.error ?? '', reason);
  }
  assert.equal(guest.link.connected, true);
});

test('agentLink: half-written frames are held, bounded, and completed later', async () => {
  await connected();
  const rec = recorder();
  const s = guest.link.openSession({ kind: 'exec', argv: ['a'] }, rec.handlers);
  const frame = encodeFrame(FrameType.Data, s.id, Buffer.alloc(50_000, 7), StreamId.Stdout);
  guest.push(frame.subarray(0, 5));
  guest.push(frame.subarray(5, 30_000));
  await guest.settle();
  assert.equal(rec.r.bytes, 0);
  guest.push(frame.subarray(30_000));
  await guest.settle();
  assert.equal(rec.r.bytes, 50_000);
});

test('agentLink: a guest that never reads or grants credit bounds what the host holds', async () => {
  await connected();
  const rec = recorder();
  const s = guest.link.openSession({ kind: 'exec', argv: ['cat'] }, rec.handlers);
  guest.keepHostFrames = false;
  const before = guest.hostBytes;
  const chunk = Buffer.alloc(256 * 1024);
  const writes: Promise<void>[] = [];
  for (let i = 0; i < 4; i++) writes.push(s.write(chunk)); // exactly the window
  await Promise.all(writes);
  const pending = [s.write(chunk), s.write(chunk), s.write(chunk), s.write(chunk)]; // queued: no credit
  await assert.rejects(s.write(chunk), /more than 1048576 bytes of input pending/);
  await guest.settle();
  const sent = guest.hostBytes - before;
  assert.ok(sent >= INITIAL_WINDOW && sent < INITIAL_WINDOW + 64 * 1024, `sent ${sent}`);
  let settled = false;
  Promise.all(pending).then(() => (settled = true));
  await guest.settle();
  assert.equal(settled, false, 'queued input waits for credit');
  guest.push(encodeWindow(s.id, StreamId.Stdin, INITIAL_WINDOW));
  await Promise.all(pending);
});

test('agentLink: malformed call answers are refused', async () => {
  await connected();
  const answer = guest.link.call('list', { path: '/' });
  await guest.settle();
  const callFrame = guest.fromHost.find((f) => f.message.t === 'call')!;
  guest.push(encodeControl(callFrame.session, { t: 'result', ok: true, value: { entries: [{ name: '../../etc', type: 'file', size: 1, mode: 0o644, mtimeMs: 0 }], total: 1, next: null } }));
  await assert.rejects(answer, /malformed value/);
  const stat = guest.link.call('stat', { path: '/x' });
  await guest.settle();
  const statFrame = guest.fromHost.filter((f) => f.message.t === 'call').pop()!;
  guest.push(encodeControl(statFrame.session, { t: 'result', ok: false, error: 'ENOENT' }));
  await assert.rejects(stat, /stat failed in the guest: ENOENT/);
});

test('agentLink: sessions the agent kept are resumed from the client\'s offsets; what the guest says before `resumed` is ignored', async () => {
  guest = new FakeGuest();
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: guest.epoch, agentVersion: 'fake', pid: 100, hostname: 'fake', kernel: '6.1', sessions: [{ id: 41, kind: 'pty' }, { id: 42, kind: 'exec' }] }));
  await guest.settle();
  assert.equal(guest.link.connected, true);
  assert.equal(guest.link.inheritedKind(41), 'pty');
  // Said while nobody listens: the guest keeps it and replays it on resume; the host holds nothing.
  guest.push(encodeFrame(FrameType.Data, 41, Buffer.from('said before the claim'), StreamId.Stdout));
  guest.push(encodeControl(42, { t: 'exit', code: 5, signal: null }));
  await guest.settle();

  const pty = recorder();
  const claimed = guest.link.claimSession(41, pty.handlers, [1000, 20]);
  assert.equal(claimed.kind, 'pty');
  assert.deepEqual(guest.fromHost.find((f) => f.session === 41)?.message, { t: 'resume', stdout: 1000, stderr: 20 });
  // In flight before the guest took the resume: ignored (it is replayed after `resumed`).
  guest.push(encodeFrame(FrameType.Data, 41, Buffer.from('stale'), StreamId.Stdout));
  guest.push(encodeControl(41, { t: 'resumed' }));
  guest.push(encodeFrame(FrameType.Data, 41, Buffer.from('replayed'), StreamId.Stdout));
  guest.push(encodeControl(41, { t: 'exit', code: 0, signal: null }));
  await guest.settle();
  assert.equal(Buffer.concat(pty.r.data).toString(), 'replayed');
  assert.deepEqual(pty.r.exit, { code: 0, signal: null, error: undefined });
  assert.throws(() => guest.link.claimSession(41, recorder().handlers), /no session 41 to attach to/);
  assert.throws(() => guest.link.claimSession(99, recorder().handlers), /no session 99 to attach to/);

  // One that ended before its client came back: the guest replays its end after `resumed`.
  const done = recorder();
  guest.link.claimSession(42, done.handlers);
  assert.deepEqual(guest.fromHost.find((f) => f.session === 42)?.message, { t: 'resume' });
  assert.equal(done.r.exit, undefined, 'the exit said before the claim was not believed');
  guest.push(encodeControl(42, { t: 'resumed' }));
  guest.push(encodeControl(42, { t: 'exit', code: 5, signal: null }));
  await guest.settle();
  assert.deepEqual(done.r.exit, { code: 5, signal: null, error: undefined });
  guest.link.release(42);
  assert.deepEqual(guest.fromHost.filter((f) => f.session === 42).map((f) => f.message.t), ['resume', 'release']);
});

test('agentLink: a hello listing sessions for another epoch, or a malformed list, adopts nothing', async () => {
  guest = new FakeGuest();
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: 'someone-else', agentVersion: 'fake', pid: 100, hostname: 'fake', kernel: '6.1', sessions: [{ id: 7, kind: 'pty' }] }));
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: guest.epoch, agentVersion: 'fake', pid: 100, hostname: 'fake', kernel: '6.1', sessions: [{ id: 7, kind: 'nope' }] }));
  await guest.settle();
  assert.equal(guest.link.connected, false);
  assert.equal(guest.link.inheritedKind(7), undefined);
  guest.hello();
  await guest.settle();
  assert.equal(guest.link.connected, true);
  assert.equal(guest.link.inheritedKind(7), undefined);
});

test('agentLink: unclaimed sessions cost the host nothing, whatever they send', async () => {
  guest = new FakeGuest();
  const sessions = Array.from({ length: 40 }, (_, i) => ({ id: 100 + i, kind: 'exec' }));
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: guest.epoch, agentVersion: 'fake', pid: 100, hostname: 'fake', kernel: '6.1', sessions }));
  await guest.settle();
  const chunk = Buffer.alloc(60_000, 3);
  for (const { id } of sessions) for (let sent = 0; sent + chunk.length <= 2 * INITIAL_WINDOW; sent += chunk.length) guest.push(encodeFrame(FrameType.Data, id, chunk, StreamId.Stdout));
  await guest.settle();
  assert.equal(guest.link.connected, true);
  assert.equal(guest.fromHost.filter((f) => f.message.t === 'close').length, 0, 'none closed');
  assert.equal(guest.link.inheritedKind(100), 'exec', 'still claimable');
  // Nothing was held for them: a client that claims one gets only what follows `resumed`.
  const { r, handlers } = recorder();
  guest.link.claimSession(100, handlers);
  guest.push(encodeControl(100, { t: 'resumed' }));
  guest.push(encodeFrame(FrameType.Data, 100, Buffer.from('x'), StreamId.Stdout));
  await guest.settle();
  assert.equal(r.bytes, 1);
});

test('agentLink: quiesce (before a save) stops delivery and acknowledges what clients were handed, before a call that fences it', async () => {
  await connected();
  const { r, handlers } = recorder();
  const s = guest.link.openSession({ kind: 'exec', argv: ['cat'] }, handlers);
  guest.push(encodeFrame(FrameType.Data, s.id, Buffer.alloc(5000, 1), StreamId.Stdout));
  await guest.settle();
  assert.equal(r.bytes, 5000);
  s.ack(StreamId.Stdout, 1000); // the client consumed some; the rest is in its socket
  const mark = guest.fromHost.length;
  const quiesced = guest.link.quiesce(2000);
  guest.push(encodeFrame(FrameType.Data, s.id, Buffer.alloc(7000, 2), StreamId.Stdout));
  await guest.settle();
  assert.equal(r.bytes, 5000, 'nothing more is handed to the client');
  const call = guest.fromHost.at(-1)!;
  assert.equal(call.message.t, 'call', 'the fencing call went out last');
  assert.ok(guest.fromHost.length > mark);
  guest.push(encodeControl(call.session, { t: 'result', ok: true, value: { name: '/', type: 'dir', size: 0, mode: 0o755, mtimeMs: 0 } }));
  await quiesced;
  const granted = guest.grants.filter((g) => g.session === s.id && g.stream === StreamId.Stdout).reduce((n, g) => n + g.bytes, 0);
  assert.equal(granted, 5000, 'all 5000 bytes handed over were acknowledged to the guest');
  guest.link.thaw();
  assert.deepEqual(guest.fromHost.filter((f) => f.session === s.id).at(-1)?.message, { t: 'resume' });
});

test('agentLink: an open goes out with `t` first (the guest relay recognises opens by that prefix)', async () => {
  await connected();
  const s = guest.link.openSession({ kind: 'exec', argv: ['true'], env: { t: 'x' } }, recorder().handlers);
  const sent = guest.fromHost.find((f) => f.session === s.id);
  assert.ok(sent?.text.startsWith('{"t":"open"'), sent?.text);
});
