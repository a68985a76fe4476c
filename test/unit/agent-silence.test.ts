/**
 * unit: an agent that goes silent (stopped, or its guest stalled) and comes back, against the host
 * end of the channel with mocked clocks; the status snapshot's heartbeat time and how it prints;
 * the disk-size floor; `--timeout` bounding a whole command.
 */
import { afterEach, beforeEach, mock, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { FrameType, StreamId, encodeControl, encodeFrame } from '../../runtime/protocol/frames';
import type { SessionHandlers } from '../../runtime/worker/agentLink';
import { AGENT_SILENT_MS, heartbeatAgeMs, notRespondingMessage, type VmInfo } from '../../runtime/common/status';
import { agentSummary } from '../../runtime/cli/format';
import { checkDiskSize } from '../../runtime/service/diskSize';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import { boundedByTimeout, TIMED_OUT_STATUS, DEADLINE_GRACE_MS } from '../../runtime/cli/deadline';
import type { CommandContext } from '../../runtime/cli/context';
import { FakeGuest } from './fakeGuest';

let guest: FakeGuest | undefined;
beforeEach(() => mock.timers.enable({ apis: ['setInterval', 'setTimeout', 'Date'], now: 1_000_000 }));
afterEach(() => {
  guest?.dispose();
  guest = undefined;
  mock.timers.reset();
});

function recorder() {
  const r = { exit: undefined as undefined | { error?: string } };
  const handlers: SessionHandlers = {
    onStarted: () => undefined,
    onData: () => undefined,
    onEof: () => undefined,
    onExit: (_code, _signal, error) => (r.exit = { error }),
  };
  return { r, handlers };
}

async function connectedGuest(): Promise<FakeGuest> {
  const g = new FakeGuest();
  g.link.vmName = 'dev';
  g.hello();
  await g.settle();
  assert.equal(g.link.connected, true);
  guest = g;
  return g;
}

const beat = (g: FakeGuest) => g.push(encodeControl(0, { t: 'heartbeat', uptime: 1, time: Date.now() }));

test('silence: after AGENT_SILENT_MS, unanswered opens and calls fail at once, new ones are refused with the age; running sessions live on', async () => {
  const g = await connectedGuest();
  let changes = 0;
  g.link.onDidChange(() => changes++);
  // An old session that started long ago and says nothing (a `sleep`): it lives on.
  const old = recorder();
  const oldSession = g.link.openSession({ kind: 'exec', argv: ['sleep', '100'] }, old.handlers);
  g.push(encodeControl(oldSession.id, { t: 'started', pid: 5 }));
  await g.settle();
  for (let t = 0; t < 20; t++) {
    mock.timers.tick(1000);
    beat(g);
    await g.settle();
  }
  // Then the agent stops. Opened just before: one never started, one started but silent, one talking.
  const unstarted = recorder();
  g.link.openSession({ kind: 'exec', argv: ['echo', 'hi'] }, unstarted.handlers);
  const quiet = recorder();
  const quietSession = g.link.openSession({ kind: 'exec', argv: ['echo', 'hi'] }, quiet.handlers);
  g.push(encodeControl(quietSession.id, { t: 'started', pid: 6 }));
  const talking = recorder();
  const talkingSession = g.link.openSession({ kind: 'exec', argv: ['yes'] }, talking.handlers);
  g.push(encodeControl(talkingSession.id, { t: 'started', pid: 7 }));
  g.push(encodeFrame(FrameType.Data, talkingSession.id, Buffer.from('y\n'), StreamId.Stdout));
  await g.settle();
  const call = g.link.call('info', {});
  const callResult = call.then(
    () => 'resolved',
    (e: SandboxError) => e.message,
  );
  assert.equal(g.link.status.responding, true);
  mock.timers.tick(AGENT_SILENT_MS + 1000);
  await g.settle();
  assert.equal(g.link.status.responding, false);
  assert.ok(changes >= 1, 'the change is published');
  assert.match(unstarted.r.exit?.error ?? '', /^the guest agent is not responding \(last heartbeat 6 s ago\); see `sandboxvm logs dev`$/);
  assert.match(quiet.r.exit?.error ?? '', /not responding/);
  assert.match(await callResult, /info: the guest agent is not responding/);
  assert.equal(talking.r.exit, undefined, 'a session with output runs on (the relay moves its bytes)');
  assert.equal(old.r.exit, undefined, 'an old session runs on');
  assert.ok(g.fromHost.some((m) => m.message.t === 'close' && m.session === quietSession.id), 'the failed session is closed in the guest');
  mock.timers.tick(2000);
  assert.throws(
    () => g.link.openSession({ kind: 'exec', argv: ['true'] }, recorder().handlers),
    (e: SandboxError) => e.code === ErrorCode.AgentUnavailable && /last heartbeat 8 s ago/.test(e.message),
  );
  await assert.rejects(g.link.call('info', {}), /not responding \(last heartbeat 8 s ago\)/);
  // The agent comes back: one heartbeat and it counts as responding again, published.
  const before = changes;
  beat(g);
  await g.settle();
  assert.equal(g.link.status.responding, true);
  assert.equal(g.link.status.lastHeartbeatAt, Date.now());
  assert.ok(changes > before);
  g.link.openSession({ kind: 'exec', argv: ['true'] }, recorder().handlers);
});

test('silence: a paused VM is not silent', async () => {
  const g = await connectedGuest();
  g.link.watchPaused = true;
  mock.timers.tick(AGENT_SILENT_MS * 3);
  await g.settle();
  assert.equal(g.link.status.responding, true);
});

test('status: the heartbeat age is computed when read, from the published time', () => {
  assert.equal(heartbeatAgeMs(undefined), undefined);
  assert.equal(heartbeatAgeMs({ connected: true }), undefined);
  assert.equal(heartbeatAgeMs({ connected: true, lastHeartbeatAt: 1000 }, 4500), 3500);
  assert.equal(heartbeatAgeMs({ connected: true, lastHeartbeatAt: 5000 }, 4500), 0, 'never negative');
  assert.equal(notRespondingMessage(7400, 'b3'), 'the guest agent is not responding (last heartbeat 7 s ago); see `sandboxvm logs b3`');
  const vm = (agent: object) => ({ runtime: { agent } }) as unknown as VmInfo;
  assert.equal(agentSummary(vm({ connected: true, responding: true, lastHeartbeatAt: 0 }), 600_000), 'ok', 'a responding agent is ok however old the snapshot');
  assert.equal(agentSummary(vm({ connected: true, responding: false, lastHeartbeatAt: 1000 }), 13_000), 'not responding (last heartbeat 12s ago)');
  assert.equal(agentSummary(vm({ connected: false })), 'not connected');
  assert.equal(agentSummary({} as VmInfo), '-');
});

test('disk size: at least the base image, and the message names the minimum', () => {
  const image = 4 * 1024 ** 3;
  checkDiskSize(4, image);
  checkDiskSize(20, image);
  assert.throws(() => checkDiskSize(2, image), (e: SandboxError) => e.code === ErrorCode.BadArgument && e.message === 'the disk must be at least 4G, the size of the base image (got 2G); use --disk 4G or more');
  assert.throws(() => checkDiskSize(4, image + 1), /at least 5G/);
});

test('--timeout bounds the whole command: a command stuck anywhere ends with 124', async () => {
  const ctx = { command: 'exec', options: { timeout: '5s' } } as unknown as CommandContext;
  const writes: string[] = [];
  const write = mock.method(process.stderr, 'write', (s: string) => (writes.push(s), true));
  try {
    const result = boundedByTimeout(() => new Promise<number>(() => undefined))(ctx);
    mock.timers.tick(5000 + DEADLINE_GRACE_MS);
    assert.equal(await result, TIMED_OUT_STATUS);
    assert.match(writes.join(''), /exec did not finish within 5 s \(--timeout\)/);
    // A command that finishes in time keeps its own status; without --timeout nothing is bounded.
    assert.equal(await boundedByTimeout(async () => 3)(ctx), 3);
    assert.equal(await boundedByTimeout(async () => 4)({ command: 'exec', options: {} } as unknown as CommandContext), 4);
  } finally {
    write.mock.restore();
  }
});
