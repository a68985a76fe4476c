/**
 * vm: a terminal kept across a save still takes input after the restore when a forwarded port was
 * used before the save (the journey's steps: a web server in the guest, opened through its forward,
 * then save and start with the shell kept).
 * Procedure: boot a VM, start an HTTP server in the guest (port 8642, forwarded automatically), open
 * a pty session with keepOnDisconnect and check it echoes. Then, twice:
 * - a keep-alive HTTP connection to the forward gets "hello from ..." (left open during the save in
 *   one round, closed before it in the other);
 * - `save`: the session ends saying the VM was saved; `start`; a new client attaches the session
 *   and types a command: its output must come back within 20 s.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as http from 'node:http';
import { ServiceClient } from '../../runtime/client/serviceClient';
import type { Session, SessionClient, SessionExit } from '../../runtime/client/sessionClient';
import { TestHome, waitFor } from './fixture';

const VM = 'pty';
const GUEST_PORT = 8642;
const SERVER = `require('http').createServer((q, r) => r.end('hello from ' + require('os').hostname())).listen(${GUEST_PORT})`;

interface Terminal {
  client: SessionClient;
  session: Session;
  output: () => string;
  exit: Promise<SessionExit>;
}

/** A pty session (opened, or attached by `id`) whose output is collected as text. */
async function terminal(home: TestHome, id?: number): Promise<Terminal> {
  const service = await ServiceClient.connect({ home: home.dir, autoStart: false });
  const client = await service.attach(VM);
  let text = '';
  let onExit!: (r: SessionExit) => void;
  const exit = new Promise<SessionExit>((resolve) => (onExit = resolve));
  const events = { onData: (_stream: number, data: Buffer) => void (text += data.toString('utf8')), onExit: (r: SessionExit) => onExit(r) };
  const session = id === undefined
    ? await client.open({ kind: 'pty', cols: 80, rows: 24, keepOnDisconnect: true }, events)
    : (await client.attach(id, events, { keepOnDisconnect: true })).session;
  return { client, session, output: () => text, exit };
}

/** Types a command computing a fresh marker and waits for the marker in the output. */
async function echoes(t: Terminal, n: number, timeoutMs = 20_000): Promise<void> {
  const marker = `mark-${n * 7}`;
  await t.session.write(`echo mark-$((${n}*7))\n`);
  await waitFor(`the shell's answer ${marker} (the output so far: ${JSON.stringify(t.output().slice(-300))})`, () => t.output().includes(marker), timeoutMs);
}

/** GET / through the forward on `agent`'s connection (kept alive). */
function get(port: number, agent: http.Agent): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, agent, path: '/' }, (res) => {
      let body = '';
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve(body));
      res.on('error', reject);
    }).on('error', reject);
  });
}

describe('vm: a kept terminal after save and start, with a forwarded port used before', { timeout: 900_000 }, () => {
  let home: TestHome;
  let hostPort: number;
  let term: Terminal;
  let round = 1;

  before(async () => {
    home = new TestHome();
    await home.bootedVm(VM);
    term = await terminal(home);
    await echoes(term, round++);
    // Started from the shell, as a user does (a background job of the terminal).
    await term.session.write(`node -e "${SERVER}" &\n`);
  });
  after(async () => {
    term?.client.dispose();
    await home.dispose();
  });

  const forward = () => waitFor('the automatic forward of the guest port', async () => {
    const list = JSON.parse(await home.ok(['port', 'list', VM, '--json'])).forwards as { guestPort: number; hostPort: number; state: string }[];
    return list.find((f) => f.guestPort === GUEST_PORT && f.state === 'active')?.hostPort;
  }, 60_000);

  const saveStartAndType = async (agent: http.Agent, before: 'close' | 'keep' | 'idle') => {
    hostPort = await forward();
    assert.match(await get(hostPort, agent), /^hello from /);
    if (before === 'close') agent.destroy();
    // Node's server closes a keep-alive connection idle for 5 s: the guest's end goes first.
    if (before === 'idle') await new Promise((r) => setTimeout(r, 7000));
    await home.ok(['save', VM]);
    const r = await term.exit;
    assert.match(r.error ?? '', /the VM was saved/);
    term.client.dispose();
    await home.ok(['start', VM]);
    term = await terminal(home, term.session.id);
    await echoes(term, round++);
    agent.destroy();
  };

  test('the connection to the forward closed before the save', async () => {
    await saveStartAndType(new http.Agent({ keepAlive: true }), 'close');
  });

  test('a keep-alive connection to the forward open during the save', async () => {
    await saveStartAndType(new http.Agent({ keepAlive: true }), 'keep');
  });

  test('a keep-alive connection the guest closed when it idled, before the save', async () => {
    await saveStartAndType(new http.Agent({ keepAlive: true }), 'idle');
  });
});
