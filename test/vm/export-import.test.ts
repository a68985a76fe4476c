/**
 * vm: export and import (runtime/transfer) against real guests.
 * Procedure, in one home:
 *  1. A VM with two checkpoints: `c1` of it running (a random file hashed, memory included), then
 *     a second file, the VM stopped, `c2`. The stopped VM is exported to a file, imported under
 *     another name: the import starts, both files hash as in the source, `qemu-img check` passes
 *     on every layer, and applying `c1` brings back the first file's version with the VM running.
 *  2. A saved VM: a counter process (counts SIGUSR1s in a shell variable) at 3, the VM saved,
 *     exported through a pipe (`export - | import -`), imported: it restores running, the same
 *     process with the value 3.
 *  3. Refusals, each with one sentence, a non-zero exit and nothing left in the VMs folder (no VM,
 *     no staging folder) nor a transfer socket: an archive cut at several offsets, a flipped byte,
 *     a manifest of a newer version, an entry `../../x` (in the manifest, and in the tar only), an
 *     entry that is a symlink, a qcow2 whose backing file is /etc/passwd, an oversized claimed
 *     size, a name that exists. The crafted archives are small
 *     (1 MiB disks); a well-formed one imports, so each refusal is the one change made to it.
 *  4. A running VM (the saved one restored, its counter bumped to 5, a file written) is exported
 *     while it runs (through a checkpoint, deleted after): it runs on, the copy restores with the
 *     file, without what the source wrote after, and the same process at 5.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TestHome } from './fixture';
import { END_MARKER, fileHeader, padding } from '../../runtime/transfer/tarWriter';

const SRC = 'src';
const COUNTER = `n=0; trap 'n=$((n+1))' USR1; trap 'echo $n > /root/count.out' USR2; echo $$ > /root/counter.pid; while :; do sleep 0.2; done`;

describe('vm: export and import', { timeout: 3_600_000 }, () => {
  let home: TestHome;
  let work: string;

  before(async () => {
    home = new TestHome();
    work = fs.mkdtempSync('/tmp/sbx-export-');
    await home.bootedVm(SRC);
  });
  after(async () => {
    await home.dispose();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const sh = (vm: string, script: string) => home.ok(['exec', vm, '--', 'sh', '-c', script], { timeoutMs: 120_000 });
  const hashOf = async (vm: string, file: string) => (await sh(vm, `sha256sum ${file} | cut -d" " -f1`)).trim();
  const newData = async (vm: string, file: string) => (await sh(vm, `head -c 262144 /dev/urandom > ${file} && sync && sha256sum ${file} | cut -d" " -f1`)).trim();
  const state = async (vm: string) => JSON.parse(await home.ok(['info', vm, '--json'])).state as string;
  const counter = async (vm: string) => {
    const out = await sh(vm, 'rm -f /root/count.out; kill -USR2 $(cat /root/counter.pid); for i in $(seq 50); do [ -s /root/count.out ] && break; sleep 0.1; done; echo $(cat /root/counter.pid) $(cat /root/count.out)');
    const [pid, value] = out.trim().split(' ').map(Number);
    return { pid, value };
  };
  const layers = (vm: string) => {
    const dir = home.vmDir(vm);
    const l = path.join(dir, 'layers');
    return [path.join(dir, 'disk.qcow2'), ...(fs.existsSync(l) ? fs.readdirSync(l).map((f) => path.join(l, f)) : [])].filter((f) => fs.existsSync(f));
  };
  /** The VMs folder and the home hold nothing of a failed import. */
  const nothingLeft = (before: string[]) => {
    assert.deepEqual(home.files(), before, 'the VMs folder is as before');
    assert.deepEqual(fs.readdirSync(home.dir).filter((f) => f.startsWith('.transfer-')), [], 'no transfer socket left');
  };

  let archive = '';
  let h1 = '';
  let h2 = '';

  test('a stopped VM with two checkpoints: exported, imported under another name, it boots with the same files and a checkpoint applies', async () => {
    h1 = await newData(SRC, '/root/one');
    await home.ok(['checkpoint', 'create', SRC, 'c1']);
    h2 = await newData(SRC, '/root/one');
    await newData(SRC, '/root/two');
    const h2b = await hashOf(SRC, '/root/two');
    await home.ok(['stop', SRC]);
    await home.ok(['checkpoint', 'create', SRC, 'c2']);

    archive = path.join(work, 'src.tar');
    const r = await home.cli(['export', SRC, archive]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /Exported src to .*src\.tar/);
    assert.deepEqual(fs.readdirSync(work), ['src.tar'], 'no temporary left beside the archive');
    const listing = spawnSync('tar', ['tf', archive], { encoding: 'utf8' }).stdout.trim().split('\n');
    assert.equal(listing[0], 'manifest.json');
    assert.ok(listing.includes('checkpoints.json') && listing.some((n) => /^checkpoints\/[0-9a-f]{8}\/memory\.state$/.test(n)), listing.join(' '));

    const imported = await home.ok(['import', archive, '--name', 'dst']);
    assert.match(imported, /Imported dst \(exported as src\): stopped/);
    for (const f of layers('dst')) {
      const c = spawnSync('qemu-img', ['check', f], { encoding: 'utf8' });
      assert.equal(c.status, 0, `${f}: ${c.stdout}${c.stderr}`);
    }
    const list = JSON.parse(await home.ok(['checkpoint', 'list', 'dst', '--json']));
    assert.deepEqual(list.tree.map((v: { name: string }) => v.name), ['c1']);
    assert.equal(list.tree[0].children[0].name, 'c2');

    await home.ok(['start', 'dst'], { timeoutMs: 300_000 });
    assert.equal(await hashOf('dst', '/root/one'), h2);
    assert.equal(await hashOf('dst', '/root/two'), h2b);
    const applied = JSON.parse(await home.ok(['checkpoint', 'apply', 'dst', 'c1', '--discard-current', '--json'], { timeoutMs: 300_000 }));
    assert.equal(applied.info.state, 'running', 'the running checkpoint comes back running');
    assert.equal(await hashOf('dst', '/root/one'), h1);
    await home.ok(['rm', '--force', 'dst']);
  });

  test('a saved VM streamed through a pipe restores running with a process and its memory intact', async () => {
    if ((await state(SRC)) !== 'running') await home.ok(['start', SRC], { timeoutMs: 300_000 });
    const pid = Number((await sh(SRC, `rm -f /root/count.out; setsid sh -c '${COUNTER.replace(/'/g, `'\\''`)}' </dev/null >/dev/null 2>&1 & sleep 0.5; cat /root/counter.pid`)).trim());
    await sh(SRC, 'for i in 1 2 3; do kill -USR1 $(cat /root/counter.pid); sleep 0.3; done');
    assert.deepEqual(await counter(SRC), { pid, value: 3 });
    await home.ok(['save', SRC]);
    const cli = `${process.execPath} ${path.join(__dirname, '..', '..', 'bin', 'sandboxvm')}`;
    const piped = spawnSync('bash', ['-o', 'pipefail', '-c', `${cli} export ${SRC} - | ${cli} import - --name saved2`], { env: home.env, encoding: 'utf8', timeout: 600_000 });
    assert.equal(piped.status, 0, piped.stderr);
    assert.match(piped.stdout, /Imported saved2 \(exported as src\): saved/);
    assert.equal(await state('saved2'), 'saved');
    await home.ok(['start', 'saved2'], { timeoutMs: 300_000 });
    assert.equal(await state('saved2'), 'running');
    assert.deepEqual(await counter('saved2'), { pid, value: 3 }, 'the same process, with its count');
    await home.ok(['rm', '--force', 'saved2']);
    nothingLeft(home.files());
  });

  // --- crafted archives -------------------------------------------------------------------

  interface Part {
    name: string;
    data: Buffer;
    /** A tar type flag other than a regular file ('2': a symlink). */
    type?: string;
    /** Left out of the manifest. */
    unlisted?: boolean;
  }

  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const qcow2 = (name: string, args: string[]) => {
    const f = path.join(work, name);
    fs.rmSync(f, { force: true });
    const r = spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', ...args, f, '1M'], { encoding: 'utf8', cwd: work });
    assert.equal(r.status, 0, r.stderr);
    return fs.readFileSync(f);
  };
  const goodParts = (): Part[] => [
    { name: 'image/vmlinuz', data: Buffer.from('not a kernel') },
    { name: 'image/initrd.img', data: Buffer.from('not an initrd') },
    { name: 'disks/base.qcow2', data: qcow2('base.qcow2', []) },
    { name: 'disks/disk.qcow2', data: qcow2('disk.qcow2', ['-b', 'base.qcow2', '-F', 'qcow2']) },
  ];
  const manifestOf = (parts: Part[]) => ({
    format: 'sandboxvm-vm-archive',
    version: 1,
    exportedAt: new Date().toISOString(),
    exporter: 'test',
    vm: { name: 'crafted', cpus: 1, memoryMiB: 256, diskGiB: 1, network: 'isolated', createdAt: new Date().toISOString(), state: 'stopped', imageHash: 'c'.repeat(64) },
    entries: parts.filter((p) => !p.unlisted).map((p) => ({ name: p.name, size: p.data.length, sha256: sha(p.data) })),
  });
  const header = (name: string, size: number, type = '0') => {
    const h = fileHeader(name, size);
    if (type === '0') return h;
    h.write(type, 156, 'latin1');
    h.write('/etc/passwd', 157, 'latin1');
    h.fill(0x20, 148, 156);
    let sum = 0;
    for (const b of h) sum += b;
    h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
    return h;
  };
  const craft = (file: string, parts: Part[], edit: (m: ReturnType<typeof manifestOf>) => void = () => undefined) => {
    const m = manifestOf(parts);
    edit(m);
    const mb = Buffer.from(JSON.stringify(m));
    const out = [header('manifest.json', mb.length), mb, padding(mb.length)];
    for (const p of parts) {
      const size = p.type && p.type !== '0' ? 0 : p.data.length;
      out.push(header(p.name, size, p.type), p.type && p.type !== '0' ? Buffer.alloc(0) : p.data, padding(size));
    }
    out.push(END_MARKER);
    const f = path.join(work, file);
    fs.writeFileSync(f, Buffer.concat(out));
    return f;
  };
  const refused = async (file: string, pattern: RegExp, extra: string[] = []) => {
    const before = home.files();
    const r = await home.cli(['import', file, '--name', 'bad', ...extra]);
    assert.notEqual(r.code, 0, `${path.basename(file)} was imported: ${r.stdout}`);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, `one sentence: ${r.stderr}`);
    assert.match(lines[0], pattern);
    nothingLeft(before);
  };

  test('a well-formed crafted archive imports (the control for the refusals below)', async () => {
    const before = home.files();
    const out = await home.ok(['import', craft('good.tar', goodParts()), '--name', 'control']);
    assert.match(out, /Imported control/);
    const info = spawnSync('qemu-img', ['info', '--output=json', path.join(home.vmDir('control'), 'disk.qcow2')], { encoding: 'utf8' });
    assert.equal(JSON.parse(info.stdout)['backing-filename'], path.join(home.vmDir('control'), 'image', 'base.qcow2'));
    await home.ok(['rm', 'control']);
    assert.deepEqual(home.files(), before);
  });

  test('truncated archives, at several offsets, are refused', async () => {
    const good = fs.readFileSync(craft('good.tar', goodParts()));
    for (const at of [0, 100, 512, 1500, Math.floor(good.length / 2), good.length - 1024, good.length - 600, good.length - 1030]) {
      const f = path.join(work, `cut-${at}.tar`);
      fs.writeFileSync(f, good.subarray(0, at));
      await refused(f, /truncated|does not start with manifest\.json|nothing was imported/);
      fs.rmSync(f);
    }
    const half = path.join(work, 'half.tar');
    spawnSync('sh', ['-c', `head -c ${Math.floor(fs.statSync(archive).size / 2)} ${archive} > ${half}`]);
    await refused(half, /the archive is truncated/);
    fs.rmSync(half);
  });

  test('a flipped byte is refused by its sha256', async () => {
    const f = craft('flip.tar', goodParts());
    const b = fs.readFileSync(f);
    const at = b.indexOf(Buffer.from('not an initrd'));
    b[at + 3] ^= 0x01;
    fs.writeFileSync(f, b);
    await refused(f, /image\/initrd\.img in the archive is damaged \(its sha256 does not match the manifest\); nothing was imported/);
  });

  test('a manifest of a newer version is refused naming the version this sandboxvm reads', async () => {
    await refused(craft('newer.tar', goodParts(), (m) => (m.version = 2)), /newer sandboxvm \(archive version 2\); this sandboxvm reads archive version 1/);
  });

  test('an entry ../../x is refused, listed in the manifest or only in the tar', async () => {
    const outside = path.join(home.dir, 'vms', '..', '..', 'x');
    const before = fs.existsSync(outside) ? fs.statSync(outside).mtimeMs : undefined;
    await refused(craft('dotdot.tar', [...goodParts(), { name: '../../x', data: Buffer.from('x') }]), /entry "..\/..\/x", which is not a file a VM archive may hold/);
    await refused(craft('dotdot2.tar', [...goodParts(), { name: '../../x', data: Buffer.from('x'), unlisted: true }]), /holds "..\/..\/x", which its manifest does not list/);
    assert.equal(fs.existsSync(outside) ? fs.statSync(outside).mtimeMs : undefined, before, 'nothing written outside the VMs folder');
  });

  test('an entry that is a symlink is refused', async () => {
    const parts = goodParts();
    parts[0] = { ...parts[0], type: '2' };
    await refused(craft('link.tar', parts, (m) => (m.entries[0].size = 0)), /image\/vmlinuz in the archive is not a regular file/);
  });

  test('a qcow2 whose backing file is /etc/passwd is refused before QEMU opens it', async () => {
    const parts = goodParts();
    parts[3] = { name: 'disks/disk.qcow2', data: qcow2('evil.qcow2', ['-b', '/etc/passwd', '-F', 'raw']) };
    await refused(craft('evil.tar', parts), /disks\/disk\.qcow2 in the archive names "\/etc\/passwd" as its backing file; only base\.qcow2 \(its parent inside the archive\) is allowed/);
    const data = goodParts();
    data[3] = { name: 'disks/disk.qcow2', data: qcow2('datafile.qcow2', ['-o', `data_file=${path.join(work, 'stolen.raw')}`]) };
    await refused(craft('datafile.tar', data), /disks\/disk\.qcow2 in the archive is refused: it keeps its data in an external file/);
  });

  test('an oversized claimed size is refused before anything is written', async () => {
    await refused(craft('huge.tar', goodParts(), (m) => (m.entries[3].size = 2 ** 40)), /entry "disks\/disk\.qcow2" claims 1099511627776 bytes, more than a layer of this VM can hold/);
  });

  test('a name that exists is refused', async () => {
    await refused(craft('dup.tar', goodParts()), /a VM named src already exists; import under another name/, ['--name', SRC]);
  });

  test('a running VM is exported through a checkpoint: it runs on, the copy restores that instant with its process', async () => {
    if ((await state(SRC)) !== 'running') await home.ok(['start', SRC], { timeoutMs: 300_000 });
    const { pid, value } = await counter(SRC);
    assert.equal(value, 3, 'the counter restored with the saved source');
    await sh(SRC, 'for i in 1 2; do kill -USR1 $(cat /root/counter.pid); sleep 0.3; done');
    const before = await newData(SRC, '/root/before');
    const file = path.join(work, 'running.tar');
    const r = await home.cli(['export', SRC, file], { timeoutMs: 600_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await state(SRC), 'running', 'the source runs on');
    await newData(SRC, '/root/after');
    const ckpts = JSON.parse(await home.ok(['checkpoint', 'list', SRC, '--json']));
    assert.equal(JSON.stringify(ckpts.tree).includes('"export '), false, 'the export\'s checkpoint is deleted');

    assert.match(await home.ok(['import', file, '--name', 'live']), /Imported live \(exported as src\): saved/);
    fs.rmSync(file);
    await home.ok(['start', 'live'], { timeoutMs: 300_000 });
    assert.equal(await hashOf('live', '/root/before'), before);
    assert.equal((await sh('live', 'test -e /root/after && echo yes || echo no')).trim(), 'no', 'what the source wrote after the export is not in the copy');
    assert.deepEqual(await counter('live'), { pid, value: 5 });
    await home.ok(['rm', '--force', 'live']);
  });
});

/**
 * Disks that sit on more than the base image (instant create: a template's disk; a linked clone:
 * its source's layers). The archive holds that foreign chain as one layer on the base
 * (disks/foreign.qcow2), so the imported disk is complete (`qemu-img compare` with the source's
 * chain), independent (its chain is only its own folder and the base image) and boots with the
 * files. A never-started VM made from a template exports as stopped, and each import takes its own
 * machine id (and its name as hostname) at its first start, booted or restored.
 */
describe('vm: export and import of VMs on a template or a linked source', { timeout: 3_600_000 }, () => {
  let home: TestHome;
  let work: string;

  before(async () => {
    home = new TestHome();
    work = fs.mkdtempSync('/tmp/sbx-export-');
    await home.ok(['image', 'template'], { timeoutMs: 1_200_000 });
  });
  after(async () => {
    await home.dispose();
    fs.rmSync(work, { recursive: true, force: true });
  });

  const sh = (vm: string, script: string) => home.ok(['exec', vm, '--', 'sh', '-c', script], { timeoutMs: 120_000 }).then((s) => s.trim());
  const hashOf = (vm: string, file: string) => sh(vm, `sha256sum ${file} | cut -d" " -f1`);
  const newData = (vm: string, file: string) => sh(vm, `head -c 1048576 /dev/urandom > ${file} && sync && sha256sum ${file} | cut -d" " -f1`);
  const info = async (vm: string) => JSON.parse(await home.ok(['info', vm, '--json']));
  const chainOf = (vm: string) => {
    const r = spawnSync('qemu-img', ['info', '-U', '--backing-chain', '--output=json', path.join(home.vmDir(vm), 'disk.qcow2')], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stderr);
    return (JSON.parse(r.stdout) as { filename: string }[]).map((c) => c.filename);
  };
  /** The imported VM's chain: its own folder, then the base image; every file of its own clean. */
  const independent = async (vm: string, others: string[]) => {
    const base = (await info(vm)).config.imageHash as string;
    const chain = chainOf(vm);
    const own = chain.filter((f) => f.startsWith(home.vmDir(vm) + '/'));
    assert.ok(own.length >= 2, `a foreign layer and the disk in ${vm}'s folder: ${chain.join(' -> ')}`);
    assert.deepEqual(chain.slice(0, own.length), own, 'its own files first');
    assert.equal(chain.length, own.length + 1, `then only the base image: ${chain.join(' -> ')}`);
    assert.match(chain[own.length], new RegExp(`base-${base.slice(0, 16)}/base\\.qcow2$`));
    for (const f of chain) {
      assert.ok(!f.includes('/templates/'), `no template in the chain: ${f}`);
      for (const o of others) assert.ok(!f.startsWith(home.vmDir(o) + '/'), `nothing of ${o} in the chain: ${f}`);
    }
    for (const f of own) {
      const c = spawnSync('qemu-img', ['check', '-U', f], { encoding: 'utf8' });
      assert.equal(c.status, 0, `${f}: ${c.stdout}${c.stderr}`);
    }
    const cfg = JSON.parse(fs.readFileSync(path.join(home.vmDir(vm), 'vm.json'), 'utf8'));
    assert.equal(cfg.template, undefined);
    assert.equal(cfg.linkedTo, undefined);
  };
  const sameDisk = (a: string, b: string) => {
    const r = spawnSync('qemu-img', ['compare', '-U', path.join(home.vmDir(a), 'disk.qcow2'), path.join(home.vmDir(b), 'disk.qcow2')], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${a} and ${b} differ as the guest sees them: ${r.stdout}${r.stderr}`);
  };
  const exportTo = async (vm: string, file: string) => {
    const t0 = Date.now();
    const r = await home.cli(['export', vm, file], { timeoutMs: 1_200_000 });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(fs.readdirSync(work).filter((f) => f.startsWith('.')), [], 'no temporary left beside the archive');
    return { ms: Date.now() - t0, bytes: fs.statSync(file).size, listing: spawnSync('tar', ['tf', file], { encoding: 'utf8' }).stdout.trim().split('\n') };
  };
  const machineId = (vm: string) => sh(vm, 'cat /etc/machine-id');

  test('a never-started VM made from a template exports as stopped; each import boots with its own machine id', async () => {
    await home.ok(['create', 'inst']);
    const i = await info('inst');
    assert.equal(i.state, 'saved');
    assert.ok(i.config.template, 'made from the template');
    const file = path.join(work, 'fresh.tar');
    const e = await exportTo('inst', file);
    assert.ok(!e.listing.includes('saved.state') && e.listing.includes('disks/foreign.qcow2'), e.listing.join(' '));
    assert.match(await home.ok(['import', file, '--name', 'fresh2']), /Imported fresh2 \(exported as inst\): stopped/);
    assert.match(await home.ok(['import', file, '--name', 'fresh3']), /Imported fresh3 \(exported as inst\): stopped/);
    await independent('fresh2', ['inst']);
    sameDisk('inst', 'fresh2');
    await home.ok(['start', 'inst'], { timeoutMs: 300_000 });
    await home.ok(['start', 'fresh2'], { timeoutMs: 300_000 });
    await home.ok(['start', 'fresh3'], { timeoutMs: 300_000 });
    assert.equal((await info('fresh2')).runtime.boot.kind, 'boot');
    const ids = [await machineId('inst'), await machineId('fresh2'), await machineId('fresh3')];
    assert.equal(new Set(ids).size, 3, `three machine ids: ${ids.join(' ')}`);
    assert.equal(await sh('fresh2', 'hostname'), 'fresh2');
    for (const vm of ['fresh2', 'fresh3']) await home.ok(['rm', '--force', vm]);
    fs.rmSync(file);
  });

  let before1 = '';
  test('an instant-created VM with a file: the archive holds the template\'s part, the import is complete and independent', async () => {
    before1 = await newData('inst', '/root/one');
    await home.ok(['stop', 'inst']);
    const file = path.join(work, 'inst.tar');
    const e = await exportTo('inst', file);
    const sizes = Object.fromEntries((JSON.parse(spawnSync('tar', ['xOf', file, 'manifest.json'], { encoding: 'utf8' }).stdout).entries as { name: string; size: number }[]).map((x) => [x.name, x.size]));
    console.log(`# instant-created VM: export ${e.ms} ms, archive ${e.bytes} bytes (foreign layer ${sizes['disks/foreign.qcow2']}, disk ${sizes['disks/disk.qcow2']}, base ${sizes['disks/base.qcow2']})`);
    assert.ok(e.listing.includes('disks/foreign.qcow2'), e.listing.join(' '));
    assert.match(await home.ok(['import', file, '--name', 'inst2']), /Imported inst2 \(exported as inst\): stopped/);
    fs.rmSync(file);
    await independent('inst2', ['inst']);
    sameDisk('inst', 'inst2');
    await home.ok(['start', 'inst2'], { timeoutMs: 300_000 });
    assert.equal(await hashOf('inst2', '/root/one'), before1);
    assert.equal(await sh('inst2', 'hostname'), 'inst2');
    await home.ok(['rm', '--force', 'inst2']);
  });

  test('a linked clone (a file from before the clone, one written after): both files come through, nothing of the source is needed', async () => {
    await home.ok(['clone', 'inst', 'lc']);
    assert.ok((await info('lc')).config.linkedTo, 'a linked clone');
    await home.ok(['start', 'lc'], { timeoutMs: 300_000 });
    const two = await newData('lc', '/root/two');
    await home.ok(['stop', 'lc']);
    const file = path.join(work, 'lc.tar');
    const e = await exportTo('lc', file);
    assert.ok(e.listing.includes('disks/foreign.qcow2'), e.listing.join(' '));
    assert.match(await home.ok(['import', file, '--name', 'lc2']), /Imported lc2 \(exported as lc\): stopped/);
    fs.rmSync(file);
    await independent('lc2', ['inst', 'lc']);
    sameDisk('lc', 'lc2');
    await home.ok(['start', 'lc2'], { timeoutMs: 300_000 });
    assert.equal(await hashOf('lc2', '/root/one'), before1);
    assert.equal(await hashOf('lc2', '/root/two'), two);
    await home.ok(['rm', '--force', 'lc2']);
  });

  test('an instant-created VM exported while it runs (through a checkpoint): the copy restores with its files and takes its own name', async () => {
    await home.ok(['start', 'inst'], { timeoutMs: 300_000 });
    const three = await newData('inst', '/root/three');
    const file = path.join(work, 'live.tar');
    const e = await exportTo('inst', file);
    assert.ok(e.listing.includes('disks/foreign.qcow2') && e.listing.includes('saved.state'), e.listing.join(' '));
    assert.match(await home.ok(['import', file, '--name', 'live2']), /Imported live2 \(exported as inst\): saved/);
    fs.rmSync(file);
    await independent('live2', ['inst', 'lc']);
    await home.ok(['start', 'live2'], { timeoutMs: 300_000 });
    assert.equal((await info('live2')).runtime.boot.kind, 'restore');
    assert.equal(await hashOf('live2', '/root/one'), before1);
    assert.equal(await hashOf('live2', '/root/three'), three);
    assert.equal(await sh('live2', 'hostname'), 'live2', 'a copy under a new name takes its own identity');
    assert.notEqual(await machineId('live2'), await machineId('inst'));
    await home.ok(['rm', '--force', 'live2']);
  });
});
