/**
 * The welcome views' inputs: the service's host.status pieces (QEMU missing, base image ready or
 * not, what a build lacks) and the extension's folding of them into context-key values.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { baseDir, recipeHashes } from '../../runtime/image/baseImage';
import { imageStatus, qemuStatus, type HostStatus } from '../../runtime/service/hostStatus';
import { hostRequirements, imagePhase, qemuPhase } from '../../extension/model/hostState';

const ok: HostStatus = { qemu: { ok: true, path: '/usr/bin/qemu-system-x86_64', version: '7.2.0' }, image: { ready: true, buildable: true, missing: [] } };

test('phases: unknown before the first answer, then what the service said', () => {
  assert.equal(qemuPhase(undefined), 'unknown');
  assert.equal(imagePhase(undefined, false), 'unknown');
  assert.equal(qemuPhase(ok), 'ok');
  assert.equal(imagePhase(ok, false), 'ready');
  assert.equal(imagePhase(ok, true), 'building');
  const old: HostStatus = { ...ok, qemu: { ok: false, code: 'QemuTooOld', message: 'QEMU 6.2.0 at /usr/bin/q is too old', fix: 'sudo apt-get install qemu-system-x86 qemu-utils' } };
  assert.equal(qemuPhase(old), 'tooOld');
  assert.deepEqual(hostRequirements({ ...old, qemu: { ...old.qemu, message: 'QEMU 6.2.0 at /usr/bin/q is too old: 7.0 or newer is needed; install it with: sudo apt-get install qemu-system-x86 qemu-utils (or set SANDBOXVM_QEMU to its path)' } as HostStatus['qemu'] }), [
    { what: 'QEMU 6.2.0 at /usr/bin/q is too old: 7.0 or newer is needed.', fix: 'sudo apt-get install qemu-system-x86 qemu-utils' },
  ]);
  const noImage: HostStatus = { ...ok, image: { ready: false, buildable: true, missing: [] } };
  assert.equal(imagePhase(noImage, false), 'missing');
  assert.deepEqual(hostRequirements(noImage), []);
  const cannot: HostStatus = { ...ok, image: { ready: false, buildable: false, missing: [{ what: 'fakeroot (package fakeroot) is not installed', fix: 'sudo apt-get install fakeroot' }] } };
  assert.equal(imagePhase(cannot, false), 'unbuildable');
  assert.deepEqual(hostRequirements(cannot), [{ what: 'fakeroot (package fakeroot) is not installed.', fix: 'sudo apt-get install fakeroot' }]);
});

test('qemuStatus: a QEMU that is not there is reported with the command that installs it', async () => {
  const saved = process.env.SANDBOXVM_QEMU;
  process.env.SANDBOXVM_QEMU = '/nonexistent/qemu-system-x86_64';
  try {
    const s = await qemuStatus();
    assert.equal(s.ok, false);
    if (s.ok) return;
    assert.equal(s.code, 'QemuMissing');
    assert.match(s.message, /QEMU was not found \(\/nonexistent\/qemu-system-x86_64\)/);
    assert.equal(s.fix, 'sudo apt-get install qemu-system-x86 qemu-utils');
  } finally {
    if (saved === undefined) delete process.env.SANDBOXVM_QEMU;
    else process.env.SANDBOXVM_QEMU = saved;
  }
});

test('imageStatus: not ready in an empty cache, ready once the recipe\'s base directory is complete', async () => {
  const cacheDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbvm-hoststatus-'));
  const agentDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbvm-agent-'));
  fs.writeFileSync(path.join(agentDir, 'agent.js'), '// agent\n');
  try {
    const recipe = { cacheDir, agentDir, nodeBinary: process.execPath };
    const before = await imageStatus(recipe);
    assert.equal(before.ready, false);
    assert.equal(before.error, undefined);
    assert.match(before.hash ?? '', /^[0-9a-f]{16}$/);
    const dir = baseDir(cacheDir, (await recipeHashes({ agentDir, nodeBinary: process.execPath })).stage2);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'base.qcow2'), '');
    fs.writeFileSync(path.join(dir, 'manifest.json'), '{}');
    const after = await imageStatus(recipe);
    assert.deepEqual({ ready: after.ready, buildable: after.buildable, missing: after.missing }, { ready: true, buildable: true, missing: [] });
  } finally {
    fs.rmSync(cacheDir, { recursive: true, force: true });
    fs.rmSync(agentDir, { recursive: true, force: true });
  }
});
