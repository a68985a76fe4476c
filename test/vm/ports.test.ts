/**
 * vm: port forwarding over the channel (runtime/worker/portForwarder.ts).
 * Procedure: boot a VM and start an echo server in the guest (Node, port 7001 on 0.0.0.0; it echoes
 * every byte and half-closes when the client does). Then:
 * - the port is forwarded to the host's 127.0.0.1 automatically (`port list --json` names the host
 *   port); four concurrent connections each send 4 MiB of random bytes and half-close: each gets
 *   its 4 MiB back, counted and sha256-compared;
 * - a manual forward `port add <vm> 7001:<free port>` carries the same; it is in vm.json and `info`,
 *   and takes the guest port over from the automatic forward;
 * - a manual forward to a host port another program holds fails with one sentence, exit 1, and
 *   leaves vm.json as it was; a forward to a guest port nothing listens on is refused by the guest
 *   (the client sees the connection closed, no bytes) and shown as not listening;
 * - with 32 MiB in flight on the manual forward, the VM is saved (the connection closes; what came
 *   back is a prefix of what was sent) and started again: the forward is back on the same host
 *   port and a new 4 MiB transfer is whole; the same with `kill -9` of the worker (twice);
 * - `port remove` stops the listener and the automatic forward comes back; `port auto off` removes it;
 * - with the `isolated` network policy (no NIC in the guest) a forward carries the same echo.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as net from 'node:net';
import { TestHome, waitFor } from './fixture';

const MiB = 1024 * 1024;
const VM = 'fwd';
const GUEST_PORT = 7001;
const ECHO_SERVER = `require('net').createServer({ allowHalfOpen: true }, (s) => { s.on('error', () => {}); s.pipe(s); }).listen(${GUEST_PORT}, '0.0.0.0')`;

interface Forward {
  origin: 'auto' | 'manual';
  guestPort: number;
  hostPort: number;
  address: string;
  state: string;
  error?: string;
  guestListening?: boolean;
}

interface Transfer {
  sent: number;
  received: number;
  sentSha: string;
  receivedSha: string;
  /** The received bytes are a prefix of the sent ones. */
  prefix: boolean;
  error?: string;
}

/**
 * Sends `bytes` random bytes to 127.0.0.1:`port`, half-closes, and collects what comes back until
 * the server closes. `onReceived` is called with the running count (to act mid-transfer).
 */
function transfer(port: number, bytes: number, onReceived?: (n: number) => void): Promise<Transfer> {
  const data = randomBytes(bytes);
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    const chunks: Buffer[] = [];
    let received = 0;
    let error: string | undefined;
    let sent = 0;
    socket.on('connect', () => {
      // 64 KiB at a time with backpressure, so a broken connection stops the sending.
      const pump = () => {
        while (sent < bytes) {
          const n = Math.min(64 * 1024, bytes - sent);
          const ok = socket.write(data.subarray(sent, sent + n));
          sent += n;
          if (!ok) return void socket.once('drain', pump);
        }
        socket.end();
      };
      pump();
    });
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      received += d.length;
      onReceived?.(received);
    });
    socket.on('error', (err) => (error = (err as NodeJS.ErrnoException).code ?? err.message));
    socket.on('close', () => {
      const got = Buffer.concat(chunks);
      resolve({
        sent,
        received,
        sentSha: sha(data),
        receivedSha: sha(got),
        prefix: got.equals(data.subarray(0, got.length)),
        error,
      });
    });
  });
}

function sha(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

describe('vm: port forwarding', { timeout: 1_200_000 }, () => {
  let home: TestHome;
  let manualPort: number;

  before(async () => {
    home = new TestHome();
    await home.bootedVm(VM);
    await home.ok(['exec', VM, '--', 'sh', '-c', `setsid /opt/sandboxvm/bin/node -e "${ECHO_SERVER}" >/dev/null 2>&1 &`]);
  });
  after(() => home.dispose());

  const forwards = async (): Promise<Forward[]> => JSON.parse(await home.ok(['port', 'list', VM, '--json'])).forwards;
  const waitForward = (what: string, pick: (f: Forward) => boolean, timeoutMs = 60_000) =>
    waitFor(what, async () => (await forwards()).find((f) => pick(f) && f.state === 'active'), timeoutMs);

  const wholeEcho = async (port: number, connections: number, bytes: number) => {
    const results = await Promise.all(Array.from({ length: connections }, () => transfer(port, bytes)));
    for (const r of results) {
      assert.equal(r.error, undefined, `a connection failed: ${r.error}`);
      assert.equal(r.sent, bytes);
      assert.equal(r.received, bytes, `received ${r.received} of ${bytes}`);
      assert.equal(r.receivedSha, r.sentSha);
    }
  };

  test('a guest port is forwarded to the host automatically; 4 x 4 MiB echo whole', async () => {
    const auto = await waitForward('the automatic forward of 7001', (f) => f.origin === 'auto' && f.guestPort === GUEST_PORT);
    assert.equal(auto.address, '127.0.0.1');
    const t0 = Date.now();
    await wholeEcho(auto.hostPort, 4, 4 * MiB);
    process.stderr.write(`# 4 x 4 MiB each way through the automatic forward in ${Date.now() - t0} ms\n`);
  });

  test('a manual forward to another host port; kept in vm.json and shown by info', async () => {
    manualPort = await freePort();
    const out = await home.ok(['port', 'add', VM, `${GUEST_PORT}:${manualPort}`]);
    assert.match(out, new RegExp(`127\\.0\\.0\\.1:${manualPort}`));
    const config = JSON.parse(fs.readFileSync(`${home.vmDir(VM)}/vm.json`, 'utf8'));
    assert.deepEqual(config.ports.forwards, [{ guestPort: GUEST_PORT, hostPort: manualPort, address: '127.0.0.1' }]);
    assert.match(await home.ok(['info', VM]), new RegExp(`7001/tcp -> 127\\.0\\.0\\.1:${manualPort}`));
    // The manual forward takes the guest port over from the automatic one.
    assert.deepEqual((await forwards()).filter((f) => f.guestPort === GUEST_PORT).map((f) => f.origin), ['manual']);
    await wholeEcho(manualPort, 2, 4 * MiB);
  });

  test('a host port in use is refused in one sentence and changes nothing; a closed guest port refuses connections', async () => {
    const taken = net.createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', () => r()));
    const port = (taken.address() as net.AddressInfo).port;
    try {
      const before = fs.readFileSync(`${home.vmDir(VM)}/vm.json`, 'utf8');
      const r = await home.cli(['port', 'add', VM, `${GUEST_PORT}:${port}`]);
      assert.equal(r.code, 1);
      assert.match(r.stderr, new RegExp(`^sandboxvm: host port ${port} .* is already in use by another program; forward to another one`));
      assert.equal(r.stderr.trim().split('\n').length, 1);
      assert.equal(fs.readFileSync(`${home.vmDir(VM)}/vm.json`, 'utf8'), before);
      assert.ok(!(await forwards()).some((f) => f.hostPort === port));
    } finally {
      taken.close();
    }
    const closedPort = await freePort();
    await home.ok(['port', 'add', VM, `7999:${closedPort}`]);
    const f = await waitFor('7999 shown as not listening', async () => (await forwards()).find((x) => x.hostPort === closedPort && x.guestListening === false));
    assert.equal(f.state, 'active');
    const r = await transfer(closedPort, 1024);
    assert.equal(r.received, 0);
    await home.ok(['port', 'remove', VM, String(closedPort)]);
    assert.ok(!(await forwards()).some((x) => x.hostPort === closedPort));
  });

  /** Starts a 32 MiB echo on the manual forward and runs `act` once 2 MiB came back. */
  const interrupted = async (act: () => Promise<void>) => {
    let acted: Promise<void> | undefined;
    const r = await transfer(manualPort, 32 * MiB, (n) => {
      if (n >= 2 * MiB && !acted) acted = act();
    });
    assert.ok(acted, `the transfer ended before 2 MiB came back: ${JSON.stringify(r)}`);
    await acted;
    assert.ok(r.prefix, 'the bytes that came back before the cut are not what was sent');
    assert.ok(r.received < 32 * MiB, 'the transfer was not cut');
    return r;
  };

  test('the forward works after save and start, with a transfer in flight during the save', async () => {
    const r = await interrupted(async () => {
      await home.ok(['save', VM]);
    });
    process.stderr.write(`# the save cut the connection after ${r.received} bytes (${r.error ?? 'clean close'})\n`);
    await home.ok(['start', VM]);
    await waitForward('the manual forward after the restore', (f) => f.origin === 'manual' && f.hostPort === manualPort);
    await wholeEcho(manualPort, 2, 4 * MiB);
  });

  test('the forward works after kill -9 of the worker, with a transfer in flight (twice)', async () => {
    for (let round = 0; round < 2; round++) {
      const info = JSON.parse(await home.ok(['info', VM, '--json']));
      const worker = info.runtime.workerPid as number;
      const r = await interrupted(async () => void process.kill(worker, "SIGKILL"));
      process.stderr.write(`# kill -9 cut the connection after ${r.received} bytes (${r.error ?? 'clean close'})\n`);
      await waitFor('a new worker', async () => {
        const i = JSON.parse(await home.ok(['info', VM, '--json']));
        return i.state === 'running' && i.runtime?.workerPid !== worker && i.runtime?.agent?.connected ? i : undefined;
      }, 120_000);
      await waitForward('the manual forward after the takeover', (f) => f.origin === 'manual' && f.hostPort === manualPort);
      await wholeEcho(manualPort, 2, 4 * MiB);
    }
  });

  test('port remove and port auto off stop the listeners', async () => {
    await home.ok(['port', 'remove', VM, String(manualPort)]);
    const gone = await transfer(manualPort, 16);
    assert.equal(gone.error, 'ECONNREFUSED');
    const auto = await waitForward('the automatic forward back once the manual one is gone', (f) => f.origin === 'auto' && f.guestPort === GUEST_PORT);
    await wholeEcho(auto.hostPort, 1, 1 * MiB);
    await home.ok(['port', 'auto', VM, 'off']);
    assert.deepEqual((await forwards()).filter((f) => f.origin === 'auto'), []);
    const config = JSON.parse(fs.readFileSync(`${home.vmDir(VM)}/vm.json`, 'utf8'));
    assert.deepEqual(config.ports, { auto: false, forwards: [] });
    assert.equal((await transfer(auto.hostPort, 16)).error, 'ECONNREFUSED');
  });

  test('with the isolated network policy (no NIC in the guest) the forward works all the same', async () => {
    await home.ok(['stop', VM]);
    await home.ok(['set', VM, '--network', 'isolated']);
    await home.ok(['port', 'auto', VM, 'on']);
    await home.ok(['start', VM]);
    assert.equal((await home.ok(['exec', VM, '--', 'ls', '/sys/class/net'])).trim(), 'lo');
    await home.ok(['exec', VM, '--', 'sh', '-c', `setsid /opt/sandboxvm/bin/node -e "${ECHO_SERVER}" >/dev/null 2>&1 &`]);
    const auto = await waitForward('the automatic forward in an isolated VM', (f) => f.origin === 'auto' && f.guestPort === GUEST_PORT);
    await wholeEcho(auto.hostPort, 2, 4 * MiB);
  });
});
