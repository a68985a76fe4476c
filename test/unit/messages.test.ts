/** unit: validation of control messages from the (hostile) guest. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseAgentMessage } from '../../runtime/protocol/messages';

const parse = (v: unknown) => parseAgentMessage(Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)));

test('messages: valid messages pass with only known fields', () => {
  const hello = parse({ t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 5, hostname: 'h', kernel: 'k', extra: 'x'.repeat(10) });
  assert.deepEqual(hello, { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 5, hostname: 'h', kernel: 'k' });
  const withSessions = parse({ t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 5, hostname: 'h', kernel: 'k', sessions: [{ id: 7, kind: 'pty', extra: 1 }] });
  assert.deepEqual(withSessions, { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 5, hostname: 'h', kernel: 'k', sessions: [{ id: 7, kind: 'pty' }] });
  assert.deepEqual(parse({ t: 'exit', code: 3, signal: null }), { t: 'exit', code: 3, signal: null });
  assert.deepEqual(parse({ t: 'started', pid: 42 }), { t: 'started', pid: 42 });
});

test('messages: invalid messages are rejected with a reason', () => {
  const bad: unknown[] = [
    'not json',
    '[1,2]',
    'null',
    { t: 'nope' },
    { t: 'hello', version: 'one' },
    { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: -1, hostname: 'h', kernel: 'k' },
    { t: 'hello', version: 1, epoch: 'e'.repeat(65), agentVersion: '1', pid: 1, hostname: 'h', kernel: 'k' },
    { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 1, hostname: 'h', kernel: 'k', sessions: 'all' },
    { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 1, hostname: 'h', kernel: 'k', sessions: [{ id: 0, kind: 'pty' }] },
    { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 1, hostname: 'h', kernel: 'k', sessions: [{ id: 3, kind: 'shell' }] },
    { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 1, hostname: 'h', kernel: 'k', sessions: [{ id: 3, kind: 'pty' }, { id: 3, kind: 'exec' }] },
    { t: 'hello', version: 1, epoch: 'e', agentVersion: '1', pid: 1, hostname: 'h', kernel: 'k', sessions: Array.from({ length: 257 }, (_, i) => ({ id: i + 1, kind: 'exec' })) },
    { t: 'exit', code: 1e9, signal: null },
    { t: 'exit', code: 0, signal: 5 },
    { t: 'started', pid: 1.5 },
    { t: 'heartbeat', uptime: 'x', time: 1 },
    { t: 'error', message: 'x'.repeat(5000) },
  ];
  for (const b of bad) assert.equal(typeof parse(b), 'string', JSON.stringify(b).slice(0, 60));
});

