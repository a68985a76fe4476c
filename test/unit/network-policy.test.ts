/** unit: network policies: parsing, vm.json migration from the boolean, passt's argv, finding passt. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { migrateNetwork, parseNetworkPolicy, parseVmConfig } from '../../runtime/common/config';
import { buildPasstArgv, locatePasst } from '../../runtime/qemu/passt';
import { SandboxError } from '../../runtime/common/errors';

const stored = (network: unknown) =>
  JSON.stringify({
    id: 'id-1',
    name: 'dev',
    cpus: 1,
    memoryMiB: 512,
    diskGiB: 10,
    image: { hash: 'h', kernel: 'k', initrd: 'i', disk: 'd' },
    ...(network === undefined ? {} : { network }),
    createdAt: '2026-01-01T00:00:00Z',
  });

test('policy: the three names parse; anything else is one sentence listing them', () => {
  for (const p of ['isolated', 'internet', 'host']) assert.equal(parseNetworkPolicy(p), p);
  for (const bad of ['', 'Internet', 'lan', 'none', true, 1, undefined]) {
    assert.throws(() => parseNetworkPolicy(bad), (e: SandboxError) => e.code === 'BadArgument' && /use isolated, internet or host$/.test(e.message), String(bad));
  }
});

const migrations: [unknown, string][] = [
  [false, 'isolated'],
  [true, 'internet'],
  [undefined, 'internet'],
  ['isolated', 'isolated'],
  ['internet', 'internet'],
  ['host', 'host'],
];
for (const [from, to] of migrations) {
  test(`vm.json: network ${JSON.stringify(from)} reads as ${to}`, () => {
    assert.equal(migrateNetwork(from), to);
    assert.equal(parseVmConfig(stored(from), 'dev').network, to);
  });
}

test('vm.json: an unknown network value is refused, not guessed', () => {
  for (const bad of ['lan', 0, null, {}, 'HOST']) assert.throws(() => parseVmConfig(stored(bad), 'dev'), /network .* is not isolated, internet or host/, JSON.stringify(bad));
});

test('passt argv: the inherited fd, the guest image addresses, no ports forwarded, gateway not mapped by default', () => {
  const argv = buildPasstArgv({ fd: 3, logFile: '/vms/dev/passt.log' });
  const after = (flag: string) => argv[argv.indexOf(flag) + 1];
  assert.equal(after('--fd'), '3');
  assert.equal(after('--address'), '10.0.2.15');
  assert.equal(after('--netmask'), '24');
  assert.equal(after('--gateway'), '10.0.2.2');
  assert.equal(after('--dns-forward'), '10.0.2.3');
  assert.equal(after('--tcp-ports'), 'none');
  assert.equal(after('--udp-ports'), 'none');
  assert.equal(after('--log-file'), '/vms/dev/passt.log');
  assert.ok(argv.includes('--foreground'), 'the worker is its parent: it must not daemonize');
  assert.ok(argv.includes('--ipv4-only'), 'no IPv6 gateway that could map to ::1');
  assert.ok(argv.includes('--no-map-gw'), "the gateway is not the host's loopback");
  assert.equal(argv.includes('--runas'), false, 'never asks to run as anyone');
  assert.equal(buildPasstArgv({ fd: 3, logFile: '/l', mapGateway: true }).includes('--no-map-gw'), false);
});

test('locating passt: an override that is not there names the package and the way out', () => {
  assert.throws(
    () => locatePasst({ SANDBOXVM_PASST: '/nonexistent/passt', PATH: '' }, 'dev'),
    (e: SandboxError) => e.code === 'BootFailed' && e.message === 'the network policy internet needs passt, which is not installed: sudo apt-get install passt (or give dev another policy: `sandboxvm set dev --network host`)',
  );
  assert.equal(locatePasst({ SANDBOXVM_PASST: process.execPath }), process.execPath);
});
