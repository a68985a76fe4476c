/**
 * unit: the VM archive's manifest parser (runtime/transfer/manifest.ts), the qcow2 header reader
 * (qcow2Header.ts), the tar records (tarWriter.ts) read back through the pull's strict reader, and
 * import's refusals that come before anything is written (importArchive.ts).
 */
import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ARCHIVE_VERSION, entryKind, maxEntryBytes, parseManifest } from '../../runtime/transfer/manifest';
import { parseQcow2Header, withBacking, Qcow2Error } from '../../runtime/transfer/qcow2Header';
import { END_MARKER, fileHeader, padding } from '../../runtime/transfer/tarWriter';
import { readTar } from '../../runtime/sync/pull/tarFeed';
import { importArchive } from '../../runtime/transfer/importArchive';
import { writeArchive } from '../../runtime/transfer/exportArchive';
import type { VmConfig } from '../../runtime/common/config';

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
    assert.deepEqual(entryKind('disks/foreign.qcow2'), { kind: 'foreign', target: 'image/foreign.qcow2' });
    const foreign = base();
    foreign.entries.splice(3, 0, { name: 'disks/foreign.qcow2', size: 10, sha256: SHA });
    assert.equal(parse(foreign).entries[3].name, 'disks/foreign.qcow2');
    foreign.entries[3].size = 2 ** 40;
    refused(foreign, /claims 1099511627776 bytes, more than a foreign of this VM can hold/);
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

/**
 * Export and import without a guest, of a VM folder whose disk sits on two foreign layers (as a
 * linked clone of an instant-created VM: disk -> source layer -> template disk -> base): the
 * archive has one foreign layer on the base, the import's chain is its own folder plus the base,
 * and `qemu-img compare` finds the guest-visible disk unchanged. Refusals of the foreign shape.
 */
describe('unit: export and import of a disk on foreign layers', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'foreign-'));
  const run = (args: string[]) => {
    const r = spawnSync(args[0], args.slice(1), { encoding: 'utf8' });
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  };
  const img = (file: string, backing?: string) => run(['qemu-img', 'create', '-q', '-f', 'qcow2', ...(backing ? ['-b', backing, '-F', 'qcow2'] : []), file, '1G']);
  const write = (file: string, pattern: number, at: string, len: string) => run(['qemu-io', '-f', 'qcow2', '-c', `write -P ${pattern} ${at} ${len}`, file]);
  const imageDir = path.join(dir, 'cache', 'base-' + 'c'.repeat(16));
  const vmDir = path.join(dir, 'src');
  const vmsDir = path.join(dir, 'vms');
  const config = (): VmConfig => ({
    id: '00000000-0000-4000-8000-000000000000',
    name: 'src',
    cpus: 1,
    memoryMiB: 256,
    diskGiB: 1,
    image: { hash: 'c'.repeat(64), kernel: path.join(imageDir, 'vmlinuz'), initrd: path.join(imageDir, 'initrd.img'), disk: path.join(imageDir, 'base.qcow2') },
    network: 'isolated',
    createdAt: new Date().toISOString(),
    template: path.join(dir, 'templates', 't'),
  });
  const exportTo = async (file: string, from = vmDir) => {
    const out = fs.openSync(file, 'w');
    const progress: string[] = [];
    try {
      await writeArchive({ vmDir: from, config: config(), state: 'stopped', exporter: 'test', scratchDir: dir }, async (b) => void fs.writeSync(out, b), (_d, _t, m) => progress.push(m));
    } finally {
      fs.closeSync(out);
    }
    return progress;
  };
  const importFrom = (file: string, name: string) => importArchive(fs.createReadStream(file) as unknown as AsyncIterable<Buffer>, { vmsDir, imageCacheDir: path.join(dir, 'cache'), qemuImg: 'qemu-img', name, exists: () => false });

  test('the archive holds one foreign layer on the base; the import is complete and independent', async () => {
    fs.mkdirSync(imageDir, { recursive: true });
    fs.mkdirSync(path.join(dir, 'templates', 't'), { recursive: true });
    fs.mkdirSync(vmDir);
    fs.writeFileSync(path.join(imageDir, 'vmlinuz'), 'kernel');
    fs.writeFileSync(path.join(imageDir, 'initrd.img'), 'initrd');
    img(path.join(imageDir, 'base.qcow2'));
    write(path.join(imageDir, 'base.qcow2'), 0x11, '0', '4M');
    img(path.join(dir, 'templates', 't', 'disk.qcow2'), path.join(imageDir, 'base.qcow2'));
    write(path.join(dir, 'templates', 't', 'disk.qcow2'), 0x22, '1M', '2M');
    img(path.join(dir, 'source-layer.qcow2'), path.join(dir, 'templates', 't', 'disk.qcow2'));
    write(path.join(dir, 'source-layer.qcow2'), 0x33, '2M', '4M');
    img(path.join(vmDir, 'disk.qcow2'), path.join(dir, 'source-layer.qcow2'));
    write(path.join(vmDir, 'disk.qcow2'), 0x44, '5M', '1M');

    const archive = path.join(dir, 'a.tar');
    const progress = await exportTo(archive);
    assert.ok(progress.some((m) => /collecting the disk's shared layers/.test(m)), progress.join('; '));
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('foreign')), [], 'the temporary is removed');
    const listing = run(['tar', 'tf', archive]).trim().split('\n');
    assert.deepEqual(listing, ['manifest.json', 'image/vmlinuz', 'image/initrd.img', 'disks/base.qcow2', 'disks/foreign.qcow2', 'disks/disk.qcow2']);

    const r = await importFrom(archive, 'copy');
    const copy = path.join(vmsDir, 'copy');
    assert.equal(r.config.template, undefined);
    assert.equal(r.config.linkedTo, undefined);
    const chain = (JSON.parse(run(['qemu-img', 'info', '--backing-chain', '--output=json', path.join(copy, 'disk.qcow2')])) as { filename: string }[]).map((c) => c.filename);
    assert.deepEqual(chain, [path.join(copy, 'disk.qcow2'), path.join(copy, 'image', 'foreign.qcow2'), path.join(imageDir, 'base.qcow2')]);
    const cmp = spawnSync('qemu-img', ['compare', path.join(vmDir, 'disk.qcow2'), path.join(copy, 'disk.qcow2')], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, `the guest-visible disk is unchanged: ${cmp.stdout}${cmp.stderr}`);
    for (const f of chain.slice(0, 2)) run(['qemu-img', 'check', f]);
    const identity = JSON.parse(fs.readFileSync(path.join(copy, 'identity.json'), 'utf8'));
    assert.equal(identity.hostname, 'copy');
    assert.match(identity.machineId, /^[0-9a-f]{32}$/);
    const again = await importFrom(archive, 'copy2');
    assert.notEqual(JSON.parse(fs.readFileSync(path.join(vmsDir, 'copy2', 'identity.json'), 'utf8')).machineId, identity.machineId, 'two imports, two machine ids');
    assert.equal(again.config.name, 'copy2');
  });

  test('a standalone disk (a full clone\'s) exports as the part that differs from the base plus an empty overlay', async () => {
    const full = path.join(dir, 'full');
    fs.mkdirSync(full);
    run(['qemu-img', 'convert', '-O', 'qcow2', path.join(vmDir, 'disk.qcow2'), path.join(full, 'disk.qcow2')]);
    write(path.join(full, 'disk.qcow2'), 0x55, '7M', '1M');
    const archive = path.join(dir, 'full.tar');
    await exportTo(archive, full);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('foreign')), [], 'the temporaries are removed');
    const entries = JSON.parse(run(['tar', 'xOf', archive, 'manifest.json'])).entries as { name: string; size: number }[];
    const foreign = entries.find((e) => e.name === 'disks/foreign.qcow2')!;
    assert.ok(foreign.size < fs.statSync(path.join(full, 'disk.qcow2')).size, 'only what differs from the base');
    await importFrom(archive, 'fullcopy');
    const copy = path.join(vmsDir, 'fullcopy', 'disk.qcow2');
    const cmp = spawnSync('qemu-img', ['compare', path.join(full, 'disk.qcow2'), copy], { encoding: 'utf8' });
    assert.equal(cmp.status, 0, `the guest-visible disk is unchanged: ${cmp.stdout}${cmp.stderr}`);
    const chain = (JSON.parse(run(['qemu-img', 'info', '--backing-chain', '--output=json', copy])) as { filename: string }[]).map((c) => c.filename);
    assert.equal(chain.at(-1), path.join(imageDir, 'base.qcow2'));
  });

  test('a foreign layer on anything but base.qcow2, or a lowest layer beside it on base.qcow2, is refused', async () => {
    const parts = (foreignBacking: string, diskBacking: string) => {
      const w = fs.mkdtempSync(path.join(dir, 'craft-'));
      run(['qemu-img', 'create', '-q', '-f', 'qcow2', path.join(w, 'base.qcow2'), '1M']);
      const f = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-u', '-b', foreignBacking, '-F', 'qcow2', path.join(w, 'foreign.qcow2'), '1M'], { encoding: 'utf8' });
      assert.equal(f.status, 0, f.stderr);
      run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-u', '-b', diskBacking, '-F', 'qcow2', path.join(w, 'disk.qcow2'), '1M']);
      const entries: [string, Buffer][] = [
        ['image/vmlinuz', Buffer.from('k')],
        ['image/initrd.img', Buffer.from('i')],
        ['disks/base.qcow2', fs.readFileSync(path.join(w, 'base.qcow2'))],
        ['disks/foreign.qcow2', fs.readFileSync(path.join(w, 'foreign.qcow2'))],
        ['disks/disk.qcow2', fs.readFileSync(path.join(w, 'disk.qcow2'))],
      ];
      const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
      const manifest = Buffer.from(JSON.stringify({ format: 'sandboxvm-vm-archive', version: 1, exportedAt: '', exporter: 't', vm: { name: 'crafted', cpus: 1, memoryMiB: 256, diskGiB: 1, network: 'isolated', createdAt: '', state: 'stopped', imageHash: 'd'.repeat(64) }, entries: entries.map(([name, b]) => ({ name, size: b.length, sha256: sha(b) })) }));
      const out = [fileHeader('manifest.json', manifest.length), manifest, padding(manifest.length)];
      for (const [name, b] of entries) out.push(fileHeader(name, b.length), b, padding(b.length));
      out.push(END_MARKER);
      const file = path.join(w, 'a.tar');
      fs.writeFileSync(file, Buffer.concat(out));
      return file;
    };
    const before = fs.readdirSync(vmsDir);
    await importFrom(parts('base.qcow2', 'foreign.qcow2'), 'good');
    assert.ok(fs.existsSync(path.join(vmsDir, 'good')), 'the well-formed shape imports (the control)');
    await assert.rejects(importFrom(parts('/etc/passwd', 'foreign.qcow2'), 'bad1'), /disks\/foreign\.qcow2 in the archive names "\/etc\/passwd" as its backing file; only base\.qcow2/);
    await assert.rejects(importFrom(parts('base.qcow2', 'base.qcow2'), 'bad2'), /disks\/disk\.qcow2 in the archive names "base\.qcow2" as its backing file; only foreign\.qcow2/);
    await assert.rejects(importFrom(parts('disk.qcow2', 'foreign.qcow2'), 'bad3'), /disks\/foreign\.qcow2 in the archive names "disk\.qcow2"/);
    assert.deepEqual(fs.readdirSync(vmsDir).sort(), [...before, 'good'].sort(), 'nothing left of the refused imports');
    fs.rmSync(dir, { recursive: true, force: true });
  });
});
