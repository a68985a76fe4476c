/** unit: names, sizes, accelerator choice, QEMU version parsing, the per-VM sequencer. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { validateVmName } from '../../runtime/common/names';
import { parseSizeMiB, checkRange, LIMITS } from '../../runtime/common/config';
import { chooseAccelerator, type NativeHost } from '../../runtime/accel/probe';
import { parseQemuVersion } from '../../runtime/qemu/locate';
import { SequencerByKey } from '../../runtime/service/sequencer';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';

test('names: DNS-label names pass, path-like and odd names fail with BadName', () => {
  for (const ok of ['dev', 'a', 'web-1', '0x', 'a'.repeat(63)]) assert.equal(validateVmName(ok), ok);
  for (const bad of ['', 'Dev', '../x', 'a/b', '-a', 'a-', 'a_b', 'a.b', '.', '..', 'a'.repeat(64), 'é', ' a', 'a\n']) {
    assert.throws(() => validateVmName(bad), (e: SandboxError) => e.code === ErrorCode.BadName && e.message.includes('lowercase'), bad);
  }
});

test('sizes: units and errors', () => {
  assert.equal(parseSizeMiB('1G', 'memory'), 1024);
  assert.equal(parseSizeMiB('512M', 'memory'), 512);
  assert.equal(parseSizeMiB('512', 'memory'), 512);
  assert.equal(parseSizeMiB('1.5GiB', 'memory'), 1536);
  assert.equal(parseSizeMiB('10g', 'disk'), 10240);
  assert.throws(() => parseSizeMiB('lots', 'memory'), /invalid memory "lots"/);
  assert.throws(() => checkRange(0, LIMITS.cpus, 'cpus'), /cpus must be between 1 and 64/);
});

const host = (o: Partial<NativeHost>): NativeHost => ({ platform: 'linux', kvmApiVersion: () => 'absent', cpuHasVirtualization: () => true, hvSupport: () => 0, whpxPresent: () => false, ...o });

test('accel: the probe decides', () => {
  const table: [NativeHost, string | undefined, string][] = [
    [host({ kvmApiVersion: () => 12 }), undefined, 'kvm'],
    [host({ kvmApiVersion: () => 11 }), undefined, 'tcg'],
    [host({ kvmApiVersion: () => 12, cpuHasVirtualization: () => false }), undefined, 'tcg'],
    [host({ kvmApiVersion: () => '/dev/kvm is not usable (ENOENT)' }), undefined, 'tcg'],
    [host({ kvmApiVersion: () => 12 }), 'tcg', 'tcg'],
    [host({ platform: 'darwin', hvSupport: () => 1 }), undefined, 'hvf'],
    [host({ platform: 'darwin', hvSupport: () => 0 }), undefined, 'tcg'],
    [host({ platform: 'win32', whpxPresent: () => true }), undefined, 'whpx'],
    [host({ platform: 'win32', whpxPresent: () => 'no dll' }), undefined, 'tcg'],
    [host({ platform: 'freebsd' }), undefined, 'tcg'],
  ];
  for (const [h, req, want] of table) assert.equal(chooseAccelerator(h, req).accel, want);
  assert.match(chooseAccelerator(host({}), undefined).reason, /no KVM: absent/);
});

test('qemu: version parsing', () => {
  assert.deepEqual(parseQemuVersion('QEMU emulator version 7.2.15 (Debian 1:7.2+dfsg-7+deb12u12)'), [7, 2, 15]);
  assert.deepEqual(parseQemuVersion('QEMU emulator version 8.1'), [8, 1, 0]);
  assert.equal(parseQemuVersion('nothing'), undefined);
});

test('sequencer: one key never interleaves, keys run in parallel, failures do not block', async () => {
  const seq = new SequencerByKey<string>();
  const log: string[] = [];
  const step = (key: string, id: string, ms: number, fail = false) =>
    seq.queue(key, async () => {
      log.push(`${id}+`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`${id}-`);
      if (fail) throw new Error(id);
    });
  const all = Promise.allSettled([step('a', 'a1', 30, true), step('a', 'a2', 5), step('b', 'b1', 10)]);
  await all;
  assert.ok(log.indexOf('a1-') < log.indexOf('a2+'), log.join(' '));
  assert.ok(log.indexOf('b1+') < log.indexOf('a1-'), 'b ran while a1 was running: ' + log.join(' '));
  assert.equal(seq.isBusy('a'), false);
});
