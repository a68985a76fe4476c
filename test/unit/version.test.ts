/** unit: version skew between a client and a running service. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { PROTOCOL_VERSION, RUNTIME_VERSION, compareVersions, compareWithService, serviceIdentity } from '../../runtime/common/version';

test('versions order numerically, a pre-release before its release', () => {
  const cases: [string, string, number][] = [
    ['0.1.0', '0.1.0', 0],
    ['0.1.0', '0.2.0', -1],
    ['1.10.0', '1.9.3', 1],
    ['1.0', '1.0.0', 0],
    ['v2.0.0', '2.0.0', 0],
    ['1.0.0-beta', '1.0.0', -1],
    ['1.0.0-alpha', '1.0.0-beta', -1],
  ];
  for (const [a, b, want] of cases) assert.equal(compareVersions(a, b), want, `${a} vs ${b}`);
});

test('a client meets a service: protocol first, then version; a service without a protocol is older', () => {
  const client = { version: '0.2.0', protocol: 2 };
  assert.equal(compareWithService({ version: '0.2.0', protocol: 2 }, client), 'same');
  assert.equal(compareWithService({ version: '0.1.0', protocol: 2 }, client), 'older');
  assert.equal(compareWithService({ version: '0.3.0', protocol: 2 }, client), 'newer');
  assert.equal(compareWithService({ version: '9.0.0', protocol: 1 }, client), 'older', 'an older protocol is older whatever the version says');
  assert.equal(compareWithService({ version: '0.0.1', protocol: 3 }, client), 'newer');
  assert.equal(compareWithService({ version: '0.2.0' }, client), 'older');
});

test('the identity is the baked version unless a test pretends otherwise', () => {
  assert.match(RUNTIME_VERSION, /^\d+\.\d+\.\d+/);
  assert.deepEqual(serviceIdentity('/h', {}), { pid: process.pid, home: '/h', version: RUNTIME_VERSION, protocol: PROTOCOL_VERSION });
  assert.equal(serviceIdentity('/h', { SANDBOXVM_TEST_SERVICE_VERSION: '0.0.1' }).version, '0.0.1');
  assert.equal(serviceIdentity('/h', { SANDBOXVM_TEST_SERVICE_PROTOCOL: '0' }).protocol, 0);
});
