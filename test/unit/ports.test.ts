/** unit: port forwarding's pure parts: specs, addresses, vm.json's `ports`, the guest's listening list, presentation. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { bindFailure, checkBindAddress, describeForward, parseForwardSpec, parseListening, parsePortsConfig, type ForwardStatus } from '../../runtime/common/ports';
import { formatPortLists } from '../../runtime/cli/commands/ports';
import { forwardLooks, reachableAddress } from '../../extension/ports/portPresentation';
import type { VmInfo } from '../../runtime/common/status';

test('forward specs: guest[:host], ports 1-65535', () => {
  const table: [string, { guestPort: number; hostPort: number } | RegExp][] = [
    ['8080', { guestPort: 8080, hostPort: 8080 }],
    ['8080:9090', { guestPort: 8080, hostPort: 9090 }],
    [' 22:2222 ', { guestPort: 22, hostPort: 2222 }],
    ['0', /invalid port "0"/],
    ['65536', /ports 1-65535/],
    ['80:0', /invalid port/],
    ['http', /use <guest-port>\[:<host-port>\]/],
    ['8080:', /invalid port/],
    ['1:2:3', /invalid port/],
  ];
  for (const [text, want] of table) {
    if (want instanceof RegExp) assert.throws(() => parseForwardSpec(text), want, text);
    else assert.deepEqual(parseForwardSpec(text), want, text);
  }
});

test('bind addresses are IP literals only', () => {
  assert.equal(checkBindAddress('127.0.0.1'), '127.0.0.1');
  assert.equal(checkBindAddress('0.0.0.0'), '0.0.0.0');
  assert.equal(checkBindAddress('::1'), '::1');
  for (const bad of ['localhost', '', '1.2.3', 42, undefined, '127.0.0.1 ']) assert.throws(() => checkBindAddress(bad), /invalid address/);
});

test("vm.json's ports: defaults when missing, everything checked", () => {
  assert.deepEqual(parsePortsConfig(undefined), { auto: true, forwards: [] });
  assert.deepEqual(parsePortsConfig({ auto: false, forwards: [{ guestPort: 80, hostPort: 8080, address: '127.0.0.1', extra: 1 }] }), { auto: false, forwards: [{ guestPort: 80, hostPort: 8080, address: '127.0.0.1' }] });
  for (const bad of [null, {}, { auto: 'yes', forwards: [] }, { auto: true, forwards: [{ guestPort: 0, hostPort: 1, address: '127.0.0.1' }] }, { auto: true, forwards: [{ guestPort: 1, hostPort: 1, address: 'evil.example' }] }, { auto: true, forwards: new Array(65).fill({ guestPort: 1, hostPort: 1, address: '127.0.0.1' }) }]) {
    assert.throws(() => parsePortsConfig(bad), /vm\.json|invalid address/, JSON.stringify(bad)?.slice(0, 80));
  }
});

test("the guest's listening list: one target per port, loopback preferred, garbage skipped", () => {
  const m = parseListening(['tcp 0.0.0.0:22', 'tcp6 [::]:22', 'tcp 127.0.0.1:3000', 'tcp6 [::1]:5000', 'tcp 10.0.2.15:8080', 'tcp6 [fe800000000000000000000000000001]:9000', 'udp 0.0.0.0:53', 'tcp 0.0.0.0:99999', 'tcp6 [::1]:6000', 'tcp 127.0.0.1:6000', 'garbage']);
  assert.deepEqual([...m.values()], [
    { port: 22, connectTo: '127.0.0.1' },
    { port: 3000, connectTo: '127.0.0.1' },
    { port: 5000, connectTo: '::1' },
    { port: 8080, connectTo: '10.0.2.15' },
    { port: 6000, connectTo: '127.0.0.1' },
  ]);
  assert.equal(parseListening(new Array(10_000).fill('tcp 0.0.0.0:1')).size, 1);
});

const fwd = (over: Partial<ForwardStatus>): ForwardStatus => ({ origin: 'auto', guestPort: 8080, hostPort: 8080, address: '127.0.0.1', state: 'active', guestListening: true, connections: 0, ...over });

test('forwards are described with their state; bind failures say what to do', () => {
  assert.equal(describeForward(fwd({})), '8080/tcp -> 127.0.0.1:8080');
  assert.equal(describeForward(fwd({ address: '::1', hostPort: 9000 })), '8080/tcp -> [::1]:9000');
  assert.match(describeForward(fwd({ guestListening: false })), /nothing listens on 8080 in the guest yet/);
  assert.match(describeForward(fwd({ state: 'failed', error: 'host port 8080 is taken' })), /\(failed: host port 8080 is taken\)$/);
  assert.match(bindFailure('dev', { guestPort: 80, hostPort: 8080, address: '127.0.0.1' }, 'EADDRINUSE'), /^host port 8080 \(127\.0\.0\.1:8080\) is already in use by another program; forward to another one with `sandboxvm port add dev 80:<another host port>`$/);
  assert.match(bindFailure('dev', { guestPort: 80, hostPort: 80, address: '127.0.0.1' }, 'EACCES'), /needs privileges/);
  const lines = formatPortLists([{ vm: 'dev', state: 'running', auto: true, forwards: [fwd({}), fwd({ origin: 'manual', hostPort: 9000, connections: 2 })] }]);
  assert.deepEqual(lines, ['dev (running; automatic forwarding on)', '  auto   8080/tcp -> 127.0.0.1:8080', '  manual 8080/tcp -> 127.0.0.1:9000  2 connection(s)']);
});

test('the tree shows forwards, then listening ports without one; nothing when stopped', () => {
  const info = { name: 'dev', state: 'running', runtime: { ports: [fwd({}), fwd({ origin: 'manual', guestPort: 22, hostPort: 2222 }), fwd({ origin: 'manual', guestPort: 1, hostPort: 1, state: 'failed', error: 'host port 1 needs privileges' })] } } as unknown as VmInfo;
  const looks = forwardLooks(info, ['tcp 0.0.0.0:8080', 'tcp 0.0.0.0:5432']);
  assert.deepEqual(looks.map((l) => [l.label, l.description, l.contextValue]), [
    ['8080/tcp -> 127.0.0.1:8080', 'automatic', 'vmForward'],
    ['22/tcp -> 127.0.0.1:2222', 'manual', 'vmForwardManual'],
    ['1/tcp -> 127.0.0.1:1', 'failed', 'vmFailedForwardManual'],
    ['5432/tcp', 'all addresses, not forwarded', 'vmPort'],
  ]);
  assert.deepEqual(forwardLooks({ ...info, state: 'stopped' } as VmInfo, ['tcp 0.0.0.0:8080']), []);
  assert.equal(reachableAddress({ address: '0.0.0.0', hostPort: 8080 }), '127.0.0.1:8080');
  assert.equal(reachableAddress({ address: '::1', hostPort: 8080 }), '[::1]:8080');
});
