/**
 * unit: the worker's port forwarder against a scripted agent (no QEMU): automatic forwards follow
 * the guest's listening ports, each client connection is one `connect` session, bytes and EOFs go
 * both ways in order, a guest refusal resets the client, a taken host port fails in one sentence,
 * a save ends connections with EOF.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import { PortForwarder } from '../../runtime/worker/portForwarder';
import type { AgentLink, HostSession, SessionHandlers } from '../../runtime/worker/agentLink';
import type { OpenSession } from '../../runtime/protocol/messages';
import type { VmState } from '../../runtime/common/status';

class FakeSession {
  written: Buffer[] = [];
  eofAt?: number;
  closed = false;
  acked = 0;
  constructor(readonly request: Omit<OpenSession, 't'>, readonly handlers: SessionHandlers) {}
  write(data: Buffer): Promise<void> {
    this.written.push(Buffer.from(data));
    return Promise.resolve();
  }
  eof(): void {
    this.eofAt = Buffer.concat(this.written).length;
  }
  close(): void {
    this.closed = true;
  }
  ack(_stream: number, bytes: number): void {
    this.acked += bytes;
  }
}

class FakeAgent {
  connected = true;
  listening: string[] = [];
  sessions: FakeSession[] = [];
  call(method: string): Promise<unknown> {
    assert.equal(method, 'listening');
    return Promise.resolve(this.listening);
  }
  openSession(request: Omit<OpenSession, 't'>, handlers: SessionHandlers): HostSession {
    const s = new FakeSession(request, handlers);
    this.sessions.push(s);
    return s as unknown as HostSession;
  }
}

function setup(listening: string[], auto = true) {
  const agent = new FakeAgent();
  agent.listening = listening;
  let state: VmState = 'running';
  const logs: string[] = [];
  const forwarder = new PortForwarder({ auto, forwards: [] }, { agent: () => agent as unknown as AgentLink, state: () => state, vmName: 'dev', log: (m) => logs.push(m) });
  return { agent, forwarder, logs, setState: (s: VmState) => ((state = s), forwarder.vmStateChanged(s)) };
}

async function until<T>(probe: () => T | undefined, what: string, ms = 5000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

test('a listening guest port gets an automatic forward; bytes and half-closes go both ways in order', async () => {
  const guestPort = await freePort();
  const { agent, forwarder } = setup([`tcp 0.0.0.0:${guestPort}`, `tcp6 [::]:${guestPort}`]);
  await forwarder.start();
  try {
    const f = await until(() => forwarder.status().find((x) => x.guestPort === guestPort && x.state === 'active'), 'the automatic forward');
    assert.equal(f.origin, 'auto');
    assert.equal(f.address, '127.0.0.1');
    assert.equal(f.hostPort, guestPort, 'the same host port when it is free');
    const client = net.connect({ host: '127.0.0.1', port: f.hostPort, allowHalfOpen: true });
    const received: Buffer[] = [];
    let clientEnded = false;
    client.on('data', (d) => received.push(d));
    client.on('end', () => (clientEnded = true));
    const session = await until(() => agent.sessions[0], 'a connect session');
    assert.deepEqual(session.request, { kind: 'connect', address: '127.0.0.1', port: guestPort });
    const payload = Buffer.alloc(3 * 1024 * 1024, 'a');
    client.end(payload);
    await until(() => (session.eofAt !== undefined ? true : undefined), 'the EOF on stdin');
    assert.equal(session.eofAt, payload.length, 'the EOF came after every byte');
    assert.ok(Buffer.concat(session.written).equals(payload));
    session.handlers.onData(1, Buffer.from('hello '));
    session.handlers.onData(1, Buffer.from('world'));
    session.handlers.onEof(1);
    await until(() => (clientEnded ? true : undefined), 'the client EOF');
    assert.equal(Buffer.concat(received).toString(), 'hello world');
    assert.equal(session.acked, 11, 'output is acknowledged once the client socket took it');
    session.handlers.onExit(0, null);
    assert.equal(session.closed, false);
  } finally {
    forwarder.dispose();
  }
});

test('a guest that refuses the connection resets the client; a port that stops listening loses its forward', async () => {
  const guestPort = await freePort();
  const { agent, forwarder } = setup([`tcp 127.0.0.1:${guestPort}`]);
  await forwarder.start();
  try {
    const f = await until(() => forwarder.status().find((x) => x.guestPort === guestPort), 'the forward');
    const client = net.connect({ host: '127.0.0.1', port: f.hostPort });
    const closed = new Promise<string | undefined>((resolve) => {
      let code: string | undefined;
      client.on('error', (e) => (code = (e as NodeJS.ErrnoException).code));
      client.on('close', () => resolve(code));
    });
    const session = await until(() => agent.sessions[0], 'a connect session');
    session.handlers.onExit(null, null, `nothing is listening on 127.0.0.1:${guestPort} in the guest (connection refused)`);
    assert.equal(await closed, 'ECONNRESET');
    agent.listening = [];
    await until(() => (forwarder.status().length === 0 ? true : undefined), 'the forward to go', 10_000);
  } finally {
    forwarder.dispose();
  }
});

test('a host port in use: a manual add fails in one sentence; an automatic forward takes the next port', async () => {
  const taken = net.createServer();
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
  const port = (taken.address() as net.AddressInfo).port;
  const { forwarder } = setup([`tcp 0.0.0.0:${port}`]);
  try {
    await assert.rejects(forwarder.addManual({ guestPort: 80, hostPort: port, address: '127.0.0.1' }), new RegExp(`^SandboxError: host port ${port} \\(127\\.0\\.0\\.1:${port}\\) is already in use by another program; forward to another one with \`sandboxvm port add dev 80:<another host port>\`$`));
    assert.deepEqual(forwarder.status(), []);
    const kept = await forwarder.addManual({ guestPort: 80, hostPort: port, address: '127.0.0.1' }, false);
    assert.equal(kept.state, 'failed');
    assert.match(kept.error!, /already in use/);
    await forwarder.start();
    const auto = await until(() => forwarder.status().find((x) => x.origin === 'auto'), 'the automatic forward');
    assert.notEqual(auto.hostPort, port);
    assert.equal(auto.state, 'active');
    // Once the other program lets the port go, the failed manual forward takes it.
    await new Promise((r) => taken.close(r));
    const healed = await until(() => forwarder.status().find((x) => x.origin === 'manual' && x.state === 'active'), 'the manual forward to recover', 10_000);
    assert.equal(healed.hostPort, port);
    assert.equal(healed.error, undefined);
  } finally {
    forwarder.dispose();
    if (taken.listening) taken.close();
  }
});

test('a save ends every connection with EOF and closes its guest end; new connections are refused until running', async () => {
  const guestPort = await freePort();
  const { agent, forwarder, setState } = setup([`tcp 0.0.0.0:${guestPort}`]);
  await forwarder.start();
  try {
    const f = await until(() => forwarder.status().find((x) => x.state === 'active'), 'the forward');
    const client = net.connect({ host: '127.0.0.1', port: f.hostPort, allowHalfOpen: true });
    let ended = false;
    client.on('end', () => (ended = true));
    client.on('error', () => undefined);
    const session = await until(() => agent.sessions[0], 'a connect session');
    setState('saving');
    await until(() => (ended ? true : undefined), 'the client EOF');
    assert.equal(session.closed, true);
    session.handlers.onExit(null, null, 'closed by the host');
    const second = net.connect({ host: '127.0.0.1', port: f.hostPort });
    await new Promise<void>((resolve) => second.on('close', () => resolve()).on('error', () => undefined));
    assert.equal(agent.sessions.length, 1, 'no session is opened while saving');
  } finally {
    forwarder.dispose();
  }
});
