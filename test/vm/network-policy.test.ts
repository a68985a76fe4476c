/**
 * vm: network policies against real guests.
 * Procedure: the test listens on the host's 127.0.0.1 and on each of the host's other IPv4
 * addresses, each listener answering with its own address. A VM created with the default policy
 * (`internet`, through passt) has eth0 with 10.0.2.15 and a default route, reaches an outside
 * address without DNS (when the host itself can), reaches the host's other addresses (documented:
 * `internet` blocks the host's loopback only), and cannot reach the loopback listener through the
 * gateway (no connection arrives there). passt runs as a user other than root. Changing the policy
 * while it runs, or while it is saved, is refused and changes nothing; after save and restore the
 * policy holds with a new passt and the old one gone; after kill -9 of the worker the new worker
 * adopts passt, the network works, and stopping the VM ends passt. Set to `host` while stopped, the
 * next boot reaches the loopback listener through 10.0.2.2; set to `isolated`, the guest has `lo`
 * alone. A home without passt refuses to start an `internet` VM, naming the package.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as dns from 'node:dns/promises';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { TestHome, waitFor } from './fixture';

/** A guest-side TCP probe: prints {ok, data} or {error} as one JSON line; never hangs past 5 s. */
const PROBE = `
const net = require('net');
const [host, port] = process.argv.slice(1);
const s = net.connect({ host, port: Number(port) });
const done = (r) => { console.log(JSON.stringify(r)); process.exit(0); };
setTimeout(() => done({ error: 'timeout' }), 5000);
let data = '';
s.on('data', (d) => { data += d; if (data.includes('\\n')) done({ ok: true, data: data.trim() }); });
s.on('error', (e) => done({ error: e.code || e.message }));
`;

interface ProbeResult {
  ok?: boolean;
  data?: string;
  error?: string;
}

interface Listener {
  address: string;
  port: number;
  server: net.Server;
  /** Connections it accepted. */
  accepted: number;
}

function listen(address: string): Promise<Listener> {
  return new Promise((resolve, reject) => {
    const l = { address, port: 0, accepted: 0 } as Listener;
    l.server = net.createServer((socket) => {
      l.accepted++;
      socket.end(`hello from ${address}\n`);
      socket.on('error', () => undefined);
    });
    l.server.once('error', reject);
    l.server.listen(0, address, () => {
      l.port = (l.server.address() as net.AddressInfo).port;
      resolve(l);
    });
  });
}

/** The host's IPv4 addresses other than loopback. */
function otherAddresses(): string[] {
  return Object.values(os.networkInterfaces())
    .flat()
    .filter((a): a is os.NetworkInterfaceInfo => !!a && a.family === 'IPv4' && !a.internal)
    .map((a) => a.address);
}

describe('vm: network policy', { timeout: 900_000 }, () => {
  let home: TestHome;
  let loopback: Listener;
  const others: Listener[] = [];

  const probe = async (vm: string, host: string, port: number): Promise<ProbeResult> => {
    const out = await home.ok(['exec', vm, '--', 'node', '-e', PROBE, host, String(port)]);
    return JSON.parse(out.trim().split('\n').pop()!) as ProbeResult;
  };
  const info = async (vm: string) => JSON.parse(await home.ok(['info', vm, '--json']));
  const config = (vm: string) => JSON.parse(fs.readFileSync(path.join(home.vmDir(vm), 'vm.json'), 'utf8'));
  const uidOf = (pid: number) => Number(/^Uid:\s+(\d+)/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  const alive = (pid: number) => fs.existsSync(`/proc/${pid}`);

  /** What the default policy must allow and block, checked on a running `internet` VM. */
  async function checkInternet(vm: string): Promise<void> {
    const before = loopback.accepted;
    const viaGateway = await probe(vm, '10.0.2.2', loopback.port);
    assert.equal(viaGateway.ok, undefined, `internet reached the host's loopback: ${JSON.stringify(viaGateway)}`);
    assert.equal(loopback.accepted, before, 'a connection from the guest arrived on the host loopback listener');
    for (const l of others) {
      const r = await probe(vm, l.address, l.port);
      assert.deepEqual(r, { ok: true, data: `hello from ${l.address}` }, `the host's address ${l.address} (reachable under internet, as documented)`);
    }
  }

  before(async () => {
    home = new TestHome();
    loopback = await listen('127.0.0.1');
    for (const a of otherAddresses()) others.push(await listen(a));
    await home.bootedVm('net');
  });
  after(async () => {
    await home.dispose();
    for (const l of [loopback, ...others]) l?.server.close();
  });

  test('internet (the default): an address and a route, outbound, never the host loopback; passt is not root', async (t) => {
    const vm = await info('net');
    assert.equal(vm.config.network, 'internet');
    assert.equal(config('net').network, 'internet');
    const passtPid = vm.runtime.passtPid as number;
    assert.ok(passtPid > 1 && alive(passtPid), 'passt runs');
    assert.notEqual(uidOf(passtPid), 0, 'passt never runs as root');
    const ifaces = await home.ok(['exec', 'net', '--', 'sh', '-c', 'ip -4 -br addr show dev eth0; ip route show default']);
    assert.match(ifaces, /eth0\s+UP\s+10\.0\.2\.15\/24/);
    assert.match(ifaces, /default via 10\.0\.2\.2 dev eth0/);
    await checkInternet('net');
    // Outbound without DNS: an address the host itself reaches (only apt and npm hosts are reachable here).
    const outside = await dns.lookup('deb.debian.org', { family: 4 }).catch(() => undefined);
    const hostReaches = outside && (await new Promise<boolean>((resolve) => {
      const s = net.connect({ host: outside.address, port: 80, timeout: 5000 }, () => (s.destroy(), resolve(true)));
      s.on('error', () => resolve(false)).on('timeout', () => (s.destroy(), resolve(false)));
    }));
    if (!hostReaches) {
      t.diagnostic('the host reaches no outside address: outbound not checked');
      return;
    }
    const http = await home.ok(['exec', 'net', '--', 'node', '-e', `require('http').get({ host: '${outside!.address}', path: '/debian/', headers: { host: 'deb.debian.org' } }, (r) => { console.log('status', r.statusCode); process.exit(0); }).on('error', (e) => { console.log('error', e.message); process.exit(0); })`]);
    assert.match(http, /status \d{3}/, `outbound HTTP through passt: ${http}`);
  });

  test('changing the policy while running is refused and changes nothing', async () => {
    const r = await home.cli(['set', 'net', '--network', 'host']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /cannot change net's network policy while it is running: stop it first/);
    assert.equal(config('net').network, 'internet');
    assert.equal((await info('net')).config.network, 'internet');
    const bad = await home.cli(['set', 'net', '--network', 'everything']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid network policy "everything": use isolated, internet or host/);
  });

  test('save and restore: refused while saved; the policy holds with a new passt, the old one gone', async () => {
    const oldPasst = (await info('net')).runtime.passtPid as number;
    await home.ok(['save', 'net']);
    await waitFor('the old passt to end', () => !alive(oldPasst) || undefined, 10_000);
    const r = await home.cli(['set', 'net', '--network', 'host']);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /while it is saved: the saved state has its network device in it; start it and stop it/);
    assert.equal(config('net').network, 'internet');
    await home.ok(['start', 'net']);
    const vm = await info('net');
    assert.equal(vm.runtime.boot.kind, 'restore');
    assert.ok(vm.runtime.passtPid !== oldPasst && alive(vm.runtime.passtPid), 'a new passt');
    await checkInternet('net');
  });

  test('kill -9 of the worker: passt is adopted with QEMU, the network works, stopping ends passt', async () => {
    const before = await info('net');
    const passtPid = before.runtime.passtPid as number;
    process.kill(before.runtime.workerPid, 'SIGKILL');
    const after = await waitFor('a new worker', async () => {
      const vm = await info('net');
      return vm.state === 'running' && vm.runtime?.workerPid !== before.runtime.workerPid && vm.runtime?.agent.connected ? vm : undefined;
    }, 120_000);
    assert.equal(after.runtime.qemuPid, before.runtime.qemuPid);
    assert.equal(after.runtime.passtPid, passtPid, 'the new worker knows passt');
    assert.ok(alive(passtPid));
    await checkInternet('net');
    await home.ok(['stop', 'net']);
    await waitFor('passt to end with the VM', () => !alive(passtPid) || undefined, 10_000);
  });

  test('host, set while stopped: the next boot reaches the host loopback through 10.0.2.2, without passt', async () => {
    const out = await home.ok(['set', 'net', '--network', 'host']);
    assert.match(out, /net: network policy host/);
    assert.equal(config('net').network, 'host');
    await home.ok(['start', 'net']);
    const vm = await info('net');
    assert.equal(vm.config.network, 'host');
    assert.equal(vm.runtime.passtPid, undefined);
    const before = loopback.accepted;
    assert.deepEqual(await probe('net', '10.0.2.2', loopback.port), { ok: true, data: 'hello from 127.0.0.1' });
    assert.equal(loopback.accepted, before + 1);
    await home.ok(['stop', 'net']);
  });

  test('isolated: no interface but lo', async () => {
    await home.ok(['set', 'net', '--network', 'isolated']);
    await home.ok(['start', 'net']);
    const links = await home.ok(['exec', 'net', '--', 'ls', '/sys/class/net']);
    assert.deepEqual(links.trim().split(/\s+/), ['lo']);
    assert.equal((await info('net')).runtime.passtPid, undefined);
    await home.ok(['stop', 'net']);
  });

  test('create --network, and a host without passt: only internet is refused, naming the package', async () => {
    const bare = new TestHome({ SANDBOXVM_PASST: '/nonexistent/passt' });
    try {
      await bare.ok(['create', 'web', '--memory', '512M', '--network', 'internet']);
      const r = await bare.cli(['start', 'web']);
      assert.equal(r.code, 1);
      assert.match(r.stderr, /the network policy internet needs passt, which is not installed: sudo apt-get install passt/);
      assert.equal(JSON.parse(await bare.ok(['info', 'web', '--json'])).state, 'stopped');
      await bare.ok(['create', 'h', '--memory', '512M', '--network', 'host']);
      assert.equal(JSON.parse(await bare.ok(['info', 'h', '--json'])).config.network, 'host');
      const bad = await bare.cli(['create', 'x', '--network', 'lan']);
      assert.equal(bad.code, 1);
      assert.match(bad.stderr, /invalid network policy "lan"/);
      assert.equal(fs.existsSync(bare.vmDir('x')), false);
    } finally {
      await bare.dispose();
    }
  });
});
