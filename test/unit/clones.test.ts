/** unit: templates' keys and staleness, which configurations use them, and Clone VM...'s name suggestion. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { staleReason, templateFingerprint, templatePrefix, templatesWanted, type TemplateRecord, type TemplateSpec } from '../../runtime/service/templates';
import { suggestName } from '../../extension/clones/cloneChoices';

const spec: TemplateSpec = { cpus: 1, memoryMiB: 1024, diskGiB: 10, network: 'internet' };
const image = { hash: 'a'.repeat(64), disk: '/c/base-a/base.qcow2', kernel: '/c/base-a/vmlinuz', initrd: '/c/base-a/initrd.img' };

test('templates: the fingerprint changes with anything a restore must match, and only then', () => {
  const fp = templateFingerprint(spec, 'tcg', '7.2.22');
  assert.equal(fp, templateFingerprint({ ...spec }, 'tcg', '7.2.22'));
  for (const [s, accel, v] of [
    [{ ...spec, cpus: 2 }, 'tcg', '7.2.22'],
    [{ ...spec, memoryMiB: 512 }, 'tcg', '7.2.22'],
    [{ ...spec, diskGiB: 20 }, 'tcg', '7.2.22'],
    [{ ...spec, network: 'isolated' }, 'tcg', '7.2.22'],
    [spec, 'kvm', '7.2.22'],
    [spec, 'tcg', '8.0.0'],
  ] as [TemplateSpec, string, string][]) {
    assert.notEqual(templateFingerprint(s, accel, v), fp);
  }
});

test('templates: a new base image hash means another folder; a record for another image or configuration is stale', () => {
  const fp = templateFingerprint(spec, 'tcg', '7.2.22');
  assert.notEqual(templatePrefix(image.hash, fp), templatePrefix('b'.repeat(64), fp));
  const record = { format: 3, baseImage: { ...image }, fingerprint: fp, spec, accel: 'tcg', qemuVersion: '7.2.22', createdAt: '' } as TemplateRecord;
  assert.equal(staleReason(record, image, fp), undefined);
  assert.match(staleReason(record, { ...image, hash: 'b'.repeat(64) }, fp)!, /made for base image aaaaaaaaaaaaaaaa, not bbbbbbbbbbbbbbbb/);
  assert.match(staleReason(record, image, 'f'.repeat(64))!, /another configuration/);
  assert.match(staleReason({ ...record, format: 1 }, image, fp)!, /format 1/);
});

test('templates: only the default configuration is made from one, and SANDBOXVM_TEMPLATES=0 turns them off', () => {
  assert.equal(templatesWanted(spec, {}), true);
  assert.equal(templatesWanted({ ...spec, memoryMiB: 512 }, {}), false);
  assert.equal(templatesWanted(spec, { SANDBOXVM_TEMPLATES: '0' }), false);
});

test('Clone VM...: suggests <name>-clone, then numbered, always a valid VM name', () => {
  assert.equal(suggestName('dev', () => false), 'dev-clone');
  const taken = new Set(['dev-clone', 'dev-clone-2']);
  assert.equal(suggestName('dev', (n) => taken.has(n)), 'dev-clone-3');
  assert.ok(suggestName('x'.repeat(63), () => false).length <= 63);
});
