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

test('agentLink: sessions the agent kept for a crashed worker are held, bounded, and handed to the client that claims them', async () => {
  guest = new FakeGuest();
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: guest.epoch, agentVersion: 'fake', pid: 100, hostname: 'fake', kernel: '6.1', sessions: [{ id: 41, kind: 'pty' }, { id: 42, kind: 'exec' }, { id: 43, kind: 'exec' }] }));
  await guest.settle();
  assert.equal(guest.link.connected, true);
  assert.equal(guest.link.inheritedKind(41), 'pty');
  // Said while nobody listens: held for the claim.
  guest.push(encodeFrame(FrameType.Data, 41, Buffer.from('while you were away'), StreamId.Stdout));
  guest.push(encodeControl(42, { t: 'exit', code: 5, signal: null }));
  // A flood on an unclaimed session is not held without bound: the session is closed.
  const chunk = Buffer.alloc(60_000, 2);
  for (let sent = 0; sent <= 2 * INITIAL_WINDOW + chunk.length; sent += chunk.length) guest.push(encodeFrame(FrameType.Data, 43, chunk, StreamId.Stdout));
  await guest.settle();
  assert.ok(guest.fromHost.some((f) => f.session === 43 && f.message.t === 'close'), 'the flooding orphan was closed');
  assert.equal(guest.fromHost.filter((f) => f.session === 43 && f.message.t === 'close').length, 1, 'closed once, not once per frame');

  const pty = recorder();
  const claimed = guest.link.claimSession(41, pty.handlers);
  assert.equal(claimed.kind, 'pty');
  assert.equal(Buffer.concat(pty.r.data).toString(), 'while you were away');
  guest.push(encodeFrame(FrameType.Data, 41, Buffer.from(' and now'), StreamId.Stdout));
  await guest.settle();
  assert.equal(Buffer.concat(pty.r.data).toString(), 'while you were away and now');
  assert.throws(() => guest.link.claimSession(41, recorder().handlers), /no session 41 to attach to/);
  assert.throws(() => guest.link.claimSession(99, recorder().handlers), /no session 99 to attach to/);

  // One that ended before its client came back still tells how it ended.
  const done = recorder();
  guest.link.claimSession(42, done.handlers);
  assert.deepEqual(done.r.exit, { code: 5, signal: null, error: undefined });
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

test('agentLink: output held for unclaimed sessions is bounded in all, not only per session', async () => {
  guest = new FakeGuest();
  const sessions = Array.from({ length: 40 }, (_, i) => ({ id: 100 + i, kind: 'exec' }));
  guest.push(encodeControl(0, { t: 'hello', version: 1, epoch: guest.epoch, agentVersion: 'fake', pid: 100, hostname: 'fake', kernel: '6.1', sessions }));
  await guest.settle();
  const chunk = Buffer.alloc(60_000, 3);
  // 40 sessions x 1 MiB each: within each one's cap, but 40 MiB in all.
  for (const { id } of sessions) for (let sent = 0; sent + chunk.length <= INITIAL_WINDOW; sent += chunk.length) guest.push(encodeFrame(FrameType.Data, id, chunk, StreamId.Stdout));
  await guest.settle();
  const closed = new Set(guest.fromHost.filter((f) => f.message.t === 'close').map((f) => f.session));
  assert.ok(closed.size >= 20, `sessions past the shared budget were closed (${closed.size})`);
  assert.ok(closed.size < 40, 'the first ones, within the budget, were kept');
  assert.equal(guest.link.connected, true);
});

test('agentLink: an open goes out with `t` first (the guest relay recognises opens by that prefix)', async () => {
  await connected();
  const s = guest.link.openSession({ kind: 'exec', argv: ['true'], env: { t: 'x' } }, recorder().handlers);
  const sent = guest.fromHost.find((f) => f.session === s.id);
  assert.ok(sent?.text.startsWith('{"t":"open"'), sent?.text);
});
