/**
 * unit: the VM archive's manifest parser (runtime/transfer/manifest.ts), the qcow2 header reader
 * (qcow2Header.ts), the tar records (tarWriter.ts) read back through the pull's strict reader, and
 * import's refusals that come before anything is written (importArchive.ts).
 */
import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ARCHIVE_VERSION, entryKind, maxEntryBytes, parseManifest } from '../../runtime/transfer/manifest';
import { parseQcow2Header, withBacking, Qcow2Error } from '../../runtime/transfer/qcow2Header';
import { END_MARKER, fileHeader, padding } from '../../runtime/transfer/tarWriter';
import { readTar } from '../../runtime/sync/pull/tarFeed';
import { importArchive } from '../../runtime/transfer/importArchive';

const SHA = 'a'.repeat(64);
const base = () => ({
  format: 'sandboxvm-vm-archive',
  version: 1,
  exportedAt: '2026-01-01T00:00:00.000Z',
  exporter: 'sandboxvm 0.1.0',
  vm: { name: 'dev', cpus: 1, memoryMiB: 512, diskGiB: 10, network: 'internet', createdAt: '2026-01-01T00:00:00.000Z', state: 'stopped', imageHash: 'b'.repeat(64) },
  entries: [
    { name: 'image/vmlinuz', size: 10, sha256: SHA },
    { name: 'image/initrd.img', size: 10, sha256: SHA },
    { name: 'disks/base.qcow2', size: 10, sha256: SHA },
    { name: 'disks/disk.qcow2', size: 10, sha256: SHA },
  ] as Record<string, unknown>[],
});
const parse = (m: unknown) => parseManifest(JSON.stringify(m));
const refused = (m: unknown, pattern: RegExp) => assert.throws(() => parse(m), (err: Error) => pattern.test(err.message) && /nothing was imported/.test(err.message), `expected ${pattern}`);

describe('unit: VM archive manifest', () => {
  test('a valid manifest parses, settings and entries kept', () => {
    const m = parse(base());
    assert.equal(m.vm.name, 'dev');
    assert.equal(m.entries.length, 4);
  });

  test('not JSON, another format, a newer version', () => {
    assert.throws(() => parseManifest('{'), /not JSON/);
    refused({ ...base(), format: 'docker' }, /not a sandboxvm VM archive/);
    refused({ ...base(), version: ARCHIVE_VERSION + 1 }, new RegExp(`newer sandboxvm \\(archive version ${ARCHIVE_VERSION + 1}\\); this sandboxvm reads archive version ${ARCHIVE_VERSION}`));
    refused({ ...base(), version: 0 }, /no valid version/);
  });

  test('entry names: no paths outside the fixed shapes', () => {
    for (const name of ['../../x', '/etc/passwd', 'disks/../../x.qcow2', 'disks/ABCDEF0123456789.qcow2', 'checkpoints/1234567/memory.state', 'vm.json', 'disks/base.qcow2/', 'manifest.json', '']) {
      const m = base();
      m.entries.push({ name, size: 1, sha256: SHA });
      refused(m, /not a file a VM archive may hold/);
    }
    assert.equal(entryKind('disks/0123456789abcdef.qcow2')?.target, 'layers/0123456789abcdef.qcow2');
    assert.equal(entryKind('checkpoints/0123abcd/epoch')?.kind, 'epoch');
  });

  test('sizes bounded per kind, hashes well formed, duplicates refused', () => {
    const big = base();
    big.entries[3] = { name: 'disks/disk.qcow2', size: 2 ** 40, sha256: SHA };
    refused(big, /claims 1099511627776 bytes, more than a layer/);
    const epoch = base();
    epoch.entries.push({ name: 'checkpoints.json', size: 10, sha256: SHA }, { name: 'checkpoints/0123abcd/epoch', size: 65, sha256: SHA });
    refused(epoch, /claims 65 bytes/);
    const neg = base();
    neg.entries[0] = { ...neg.entries[0], size: -1 };
    refused(neg, /no valid size/);
    const sha = base();
    sha.entries[0] = { ...sha.entries[0], sha256: 'xyz' };
    refused(sha, /no valid sha256/);
    const dup = base();
    dup.entries.push({ ...dup.entries[0] });
    refused(dup, /twice/);
    assert.equal(maxEntryBytes('memory', { memoryMiB: 512, diskGiB: 10 }), 768 * 2 ** 20);
  });

  test('settings go through create\'s ranges; non-loopback forwards are dropped', () => {
    refused({ ...base(), vm: { ...base().vm, cpus: 1000 } }, /cpus must be between/);
    refused({ ...base(), vm: { ...base().vm, name: '../x' } }, /invalid VM name/);
    refused({ ...base(), vm: { ...base().vm, network: 'bridge' } }, /network/);
    refused({ ...base(), vm: { ...base().vm, state: 'running' } }, /state must be stopped or saved/);
    const m = parse({ ...base(), vm: { ...base().vm, ports: { auto: true, forwards: [{ guestPort: 80, hostPort: 8080, address: '0.0.0.0' }, { guestPort: 22, hostPort: 2222, address: '127.0.0.1' }] } } });
    assert.deepEqual(m.vm.ports?.forwards.map((f) => f.hostPort), [2222]);
  });

  test('saved state consistent with the state; sameAs only to an earlier twin', () => {
    refused({ ...base(), vm: { ...base().vm, state: 'saved' } }, /saved state is missing/);
    const saved = base();
    saved.vm.state = 'saved';
    saved.entries.push({ name: 'saved.state', size: 100, sha256: SHA }, { name: 'checkpoints.json', size: 10, sha256: SHA }, { name: 'checkpoints/0123abcd/memory.state', size: 100, sha256: SHA, sameAs: 'saved.state' });
    assert.equal(parse(saved).entries.at(-1)?.sameAs, 'saved.state');
    const wrong = structuredClone(saved);
    wrong.entries.at(-1)!.size = 99;
    refused(wrong, /no earlier entry with its bytes/);
    const missing = base();
    missing.entries.splice(2, 1);
    refused(missing, /no disks\/base.qcow2/);
  });
});

describe('unit: qcow2 header', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'qcow2h-'));
  const img = (args: string[]) => {
    const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
  };
  const head = (f: string) => fs.readFileSync(f).subarray(0, 65536);

  test('backing names are read and rewritten to a shorter sibling name', () => {
    img([path.join(dir, 'base.qcow2'), '1M']);
    img(['-b', path.join(dir, 'base.qcow2'), '-F', 'qcow2', path.join(dir, 'top.qcow2'), '1M']);
    assert.equal(parseQcow2Header(head(path.join(dir, 'base.qcow2'))).backing, undefined);
    const h = head(path.join(dir, 'top.qcow2'));
    assert.equal(parseQcow2Header(h).backing, path.join(dir, 'base.qcow2'));
    const patched = withBacking(h, 'base.qcow2');
    assert.equal(parseQcow2Header(patched).backing, 'base.qcow2');
    const copy = path.join(dir, 'copy.qcow2');
    fs.writeFileSync(copy, Buffer.concat([patched, fs.readFileSync(path.join(dir, 'top.qcow2')).subarray(patched.length)]));
    const info = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', copy], { encoding: 'utf8', cwd: dir }).stdout);
    assert.equal(info['backing-filename'], 'base.qcow2');
  });

  test('an external data file, a raw file and a truncated header are refused', () => {
    img(['-o', `data_file=${path.join(dir, 'data.raw')}`, path.join(dir, 'ext.qcow2'), '1M']);
    assert.throws(() => parseQcow2Header(head(path.join(dir, 'ext.qcow2'))), Qcow2Error);
    assert.throws(() => parseQcow2Header(Buffer.alloc(4096)), /not a qcow2/);
    assert.throws(() => parseQcow2Header(head(path.join(dir, 'top.qcow2')).subarray(0, 80)), Qcow2Error);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('unit: archive tar records', () => {
  test('headers (octal and base-256 sizes) read back through the strict reader', async () => {
    const body = Buffer.from('hello');
    const chunks = [fileHeader('a/b.txt', body.length), body, padding(body.length), END_MARKER];
    const seen: { name: string; size: number; type: string; data: string }[] = [];
    for await (const e of readTar((async function* () { yield* chunks; })())) {
      let data = '';
      for await (const p of e.body) data += p.toString();
      seen.push({ name: e.name, size: e.size, type: e.type, data });
    }
    assert.deepEqual(seen, [{ name: 'a/b.txt', size: 5, type: '0', data: 'hello' }]);
    const huge = fileHeader('x', 10 * 2 ** 30);
    assert.equal(huge[124], 0x80);
    const it = readTar((async function* () { yield huge; })())[Symbol.asyncIterator]();
    assert.equal((await it.next()).value?.size, 10 * 2 ** 30);
  });
});

describe('unit: import refuses before writing', () => {
  const feed = (b: Buffer) => (async function* () { yield b; })();
  const attempt = async (b: Buffer, pattern: RegExp) => {
    const vmsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'imp-'));
    try {
      await assert.rejects(importArchive(feed(b), { vmsDir, imageCacheDir: vmsDir, qemuImg: '/nonexistent', exists: () => false }), pattern);
      assert.deepEqual(fs.readdirSync(vmsDir), [], 'nothing written');
    } finally {
      fs.rmSync(vmsDir, { recursive: true, force: true });
    }
  };
  const tar = (name: string, body: Buffer) => Buffer.concat([fileHeader(name, body.length), body, padding(body.length), END_MARKER]);

  test('junk, an empty stream, another first entry, a newer version', async () => {
    await attempt(Buffer.from('not a tar at all '.repeat(64)), /not a sandboxvm VM archive: it is not a tar stream; nothing was imported/);
    await attempt(Buffer.alloc(0), /the archive is truncated/);
    await attempt(tar('readme.txt', Buffer.from('hi')), /does not start with manifest\.json/);
    const m = JSON.stringify({ format: 'sandboxvm-vm-archive', version: 7 });
    await attempt(tar('manifest.json', Buffer.from(m)), /archive version 7\); this sandboxvm reads archive version 1/);
  });
});
