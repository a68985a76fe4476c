/**
 * Disk hygiene, pure parts: the undo-point pruning choice (count and disk), the image GC on fake
 * image caches (qcow2 headers written by hand: no QEMU), a VM's disk usage from stat, and the
 * parsers of fstrim's and qemu-img convert's output.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { undoPointsToPrune, type CheckpointIndex, type CheckpointNode } from '../../runtime/service/checkpointTree';
import { collectImages, readBackingFile, refsDir, registerHome, registerImageUse, REF_GRACE_MS } from '../../runtime/image/imageGc';
import { measure as diskUsage } from '../../runtime/service/diskUsage';
import { parseConvertProgress, parseFstrim } from '../../runtime/service/compact';
import { parseUndoLimits, UNDO_LIMITS } from '../../runtime/common/config';
import { vmLook } from '../../extension/tree/vmPresentation';
import { detailsStatus } from '../../extension/details/detailsMessages';

const MiB = 2 ** 20;

function node(id: string, minute: number, undo = true, extra: Partial<CheckpointNode> = {}): CheckpointNode {
  return { id, name: id, layer: `layers/${id.padEnd(16, '0')}.qcow2`, createdAt: `2026-01-01T00:${String(minute).padStart(2, '0')}:00.000Z`, state: 'running', memory: true, undo: undo || undefined, ...extra };
}

function indexOf(nodes: CheckpointNode[]): CheckpointIndex {
  return { version: 1, nodes };
}

test('undo pruning by count keeps the newest N, oldest first, and leaves plain checkpoints alone', () => {
  const idx = indexOf([node('aaaaaaa1', 1), node('bbbbbbb2', 2, false), node('ccccccc3', 3), node('ddddddd4', 4), node('eeeeeee5', 5)]);
  assert.deepEqual(undoPointsToPrune(idx, 2).map((n) => n.id), ['aaaaaaa1', 'ccccccc3']);
  assert.deepEqual(undoPointsToPrune(idx, 10), []);
});

test('undo pruning by disk drops the oldest until the rest fit, never the newest', () => {
  const sizes: Record<string, number> = { aaaaaaa1: 300 * MiB, ccccccc3: 200 * MiB, ddddddd4: 100 * MiB, eeeeeee5: 150 * MiB };
  const idx = indexOf([node('aaaaaaa1', 1), node('bbbbbbb2', 2, false), node('ccccccc3', 3), node('ddddddd4', 4), node('eeeeeee5', 5)]);
  const sizeOf = (id: string) => sizes[id] ?? 999 * MiB;
  // 750 MiB in all; a 300 MiB budget: drop 300 (a), 200 (c): 250 left.
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 300 * MiB, sizeOf }).map((n) => n.id), ['aaaaaaa1', 'ccccccc3']);
  // Fits: nothing.
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 750 * MiB, sizeOf }), []);
  // A budget smaller than the newest alone: everything but the newest.
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 1 * MiB, sizeOf }).map((n) => n.id), ['aaaaaaa1', 'ccccccc3', 'ddddddd4']);
  // Count first, then disk over what is left: keep 3 drops a; the other three (450 MiB) over 200 MiB drop c and d.
  assert.deepEqual(undoPointsToPrune(idx, 3, { maxBytes: 200 * MiB, sizeOf }).map((n) => n.id), ['aaaaaaa1', 'ccccccc3', 'ddddddd4']);
  // The plain checkpoint's size never counts.
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 450 * MiB, sizeOf }).map((n) => n.id), ['aaaaaaa1']);
});

test('undo pruning by disk does not charge the oldest undo point for what the VM wrote before it', () => {
  // a's layer holds 1 GiB written before the first undo point; every memory state is 100 MiB.
  const layers: Record<string, number> = { aaaaaaa1: 1024 * MiB, ccccccc3: 20 * MiB, ddddddd4: 20 * MiB, eeeeeee5: 20 * MiB };
  const sizeOf = (id: string) => layers[id] + 100 * MiB;
  const layerOf = (id: string) => layers[id];
  const idx = indexOf([node('aaaaaaa1', 1), node('ccccccc3', 3), node('ddddddd4', 4), node('eeeeeee5', 5)]);
  // Cost: 4 x 100 memory + 3 x 20 layers = 460 MiB.
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 460 * MiB, sizeOf, layerOf }), []);
  // 400 MiB: a goes (then c's layer is the oldest: 3 x 100 + 2 x 20 = 340).
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 400 * MiB, sizeOf, layerOf }).map((n) => n.id), ['aaaaaaa1']);
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 340 * MiB, sizeOf, layerOf }).map((n) => n.id), ['aaaaaaa1']);
  // Charging every layer, the same budget would take c too (c, d, e: 360 MiB).
  assert.deepEqual(undoPointsToPrune(idx, 10, { maxBytes: 340 * MiB, sizeOf }).map((n) => n.id), ['aaaaaaa1', 'ccccccc3']);
});

test('undo limits are checked: whole numbers in range, or one sentence', () => {
  assert.deepEqual(parseUndoLimits({ maxCount: 3, maxDiskMiB: 512 }, UNDO_LIMITS), { maxCount: 3, maxDiskMiB: 512 });
  assert.equal(parseUndoLimits(undefined, UNDO_LIMITS), undefined);
  assert.throws(() => parseUndoLimits({ maxCount: 0 }, UNDO_LIMITS), /undo-point count must be between 1 and 1000/);
  assert.throws(() => parseUndoLimits({ maxDiskMiB: 1.5 }, UNDO_LIMITS), /disk budget must be between/);
  assert.throws(() => parseUndoLimits({ maxCount: '5' }, UNDO_LIMITS), /count must be/);
});

// ---------------------------------------------------------------------------------------------
// Image GC on a fake cache

/** A file with a qcow2 header naming `backing` (relative or absolute), as qemu-img writes one. */
function fakeQcow2(file: string, backing?: string, payload = 4096): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const buf = Buffer.alloc(Math.max(payload, 1024));
  buf.writeUInt32BE(0x514649fb, 0);
  buf.writeUInt32BE(3, 4);
  if (backing) {
    const name = Buffer.from(backing);
    buf.writeBigUInt64BE(512n, 8);
    buf.writeUInt32BE(name.length, 16);
    name.copy(buf, 512);
  }
  fs.writeFileSync(file, buf);
}

function fakeImage(cache: string, hash16: string, opts: { refs?: boolean; stage1?: string } = {}): string {
  const dir = path.join(cache, `base-${hash16}`);
  fakeQcow2(path.join(dir, 'base.qcow2'), undefined, 64 * 1024);
  for (const f of ['vmlinuz', 'initrd.img']) fs.writeFileSync(path.join(dir, f), 'x');
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ stage1Hash: opts.stage1 ?? 'f'.repeat(64) }));
  fs.writeFileSync(path.join(cache, `build-${hash16}.log`), 'log');
  if (opts.refs) fs.mkdirSync(refsDir(cache, hash16), { recursive: true });
  return dir;
}

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

const OLD = Date.now() - 2 * REF_GRACE_MS;

function age(file: string, ms: number): void {
  fs.utimesSync(file, ms / 1000, ms / 1000);
}

test('readBackingFile resolves a relative backing name against the overlay, and ignores non-qcow2 files', () => {
  const d = tmp('sbx-gc-');
  fakeQcow2(path.join(d, 'vm', 'disk.qcow2'), '../img/base.qcow2');
  assert.equal(readBackingFile(path.join(d, 'vm', 'disk.qcow2')), path.join(d, 'img', 'base.qcow2'));
  fs.writeFileSync(path.join(d, 'plain'), 'not a qcow2');
  assert.equal(readBackingFile(path.join(d, 'plain')), undefined);
  fakeQcow2(path.join(d, 'proto.qcow2'), 'nbd://example:10809/x');
  assert.equal(readBackingFile(path.join(d, 'proto.qcow2')), undefined);
  fs.rmSync(d, { recursive: true, force: true });
});

test('image GC: current, used, referenced, templates and old images, automatic and explicit', async () => {
  const cache = tmp('sbx-gc-cache-');
  const homeA = tmp('sbx-gc-homeA-'); // registered in homes/
  const homeB = tmp('sbx-gc-homeB-'); // not registered: only references lead there
  await registerHome(cache, homeA);

  const current = fakeImage(cache, '1111111111111111', { refs: true, stage1: 'a'.repeat(64) });
  // Used through a checkpoint chain in a registered home: layer -> disk.qcow2 -> base.
  const used = fakeImage(cache, '2222222222222222', { stage1: 'b'.repeat(64) });
  fakeQcow2(path.join(homeA, 'vms', 'dev', 'disk.qcow2'), path.join(used, 'base.qcow2'));
  fakeQcow2(path.join(homeA, 'vms', 'dev', 'layers', '0123456789abcdef.qcow2'), '../disk.qcow2');
  fs.writeFileSync(path.join(homeA, 'vms', 'dev', 'disk.qcow2.extra'), 'not a disk');
  // Referenced by a VM in an unregistered home whose disk still uses it.
  const referenced = fakeImage(cache, '3333333333333333');
  await registerImageUse(path.join(referenced, 'base.qcow2'), path.join(homeB, 'vms', 'web'));
  fakeQcow2(path.join(homeB, 'vms', 'web', 'disk.qcow2'), path.join(referenced, 'base.qcow2'));
  // Referenced by a VM that is gone (an old reference): goes.
  const orphaned = fakeImage(cache, '4444444444444444');
  await registerImageUse(path.join(orphaned, 'base.qcow2'), path.join(homeB, 'vms', 'gone'));
  for (const f of fs.readdirSync(refsDir(cache, '4444444444444444'))) age(path.join(refsDir(cache, '4444444444444444'), f), OLD);
  // A reference to a VM whose disk now stands on another image (rebased): goes too.
  const rebased = fakeImage(cache, '5555555555555555');
  await registerImageUse(path.join(rebased, 'base.qcow2'), path.join(homeB, 'vms', 'moved'));
  fakeQcow2(path.join(homeB, 'vms', 'moved', 'disk.qcow2'), path.join(current, 'base.qcow2'));
  for (const f of fs.readdirSync(refsDir(cache, '5555555555555555'))) age(path.join(refsDir(cache, '5555555555555555'), f), OLD);
  // A fresh reference without a disk yet (a VM being created): kept.
  const creating = fakeImage(cache, '6666666666666666');
  await registerImageUse(path.join(creating, 'base.qcow2'), path.join(homeB, 'vms', 'new'));
  // From before references: kept by the automatic GC, removed by prune.
  const legacy = fakeImage(cache, '7777777777777777');
  // From before references but used by a VM in a registered home: kept by both.
  const legacyUsed = fakeImage(cache, '8888888888888888');
  fakeQcow2(path.join(homeA, 'vms', 'old', 'disk.qcow2'), path.join(legacyUsed, 'base.qcow2'));
  // A template of an old image that a VM is a clone of: both kept.
  const tplImage = fakeImage(cache, '9999999999999999', { refs: true });
  const tpl = path.join(cache, 'templates', 't1');
  fakeQcow2(path.join(tpl, 'disk.qcow2'), path.join(tplImage, 'base.qcow2'));
  fs.writeFileSync(path.join(tpl, 'template.json'), JSON.stringify({ baseImage: { hash: '9'.repeat(64), disk: '/x/base.qcow2' } }));
  fakeQcow2(path.join(homeA, 'vms', 'clone', 'disk.qcow2'), path.join(tpl, 'disk.qcow2'));
  // A template of an old image nobody uses: it goes, and then its image.
  const tpl2Image = fakeImage(cache, 'aaaaaaaaaaaaaaaa', { refs: true });
  const tpl2 = path.join(cache, 'templates', 't2');
  fakeQcow2(path.join(tpl2, 'disk.qcow2'), path.join(tpl2Image, 'base.qcow2'));
  fs.writeFileSync(path.join(tpl2, 'template.json'), JSON.stringify({ baseImage: 'a'.repeat(16) }));
  // The template of the current image: kept though no VM uses it.
  const tpl3 = path.join(cache, 'templates', 't3');
  fakeQcow2(path.join(tpl3, 'disk.qcow2'), path.join(current, 'base.qcow2'));
  fs.writeFileSync(path.join(tpl3, 'template.json'), JSON.stringify({ baseImage: '1'.repeat(64) }));
  for (const s of ['a', 'b', 'c']) fs.mkdirSync(path.join(cache, `stage1-${s.repeat(16)}`));

  const exists = (p: string) => fs.existsSync(p);
  const dry = await collectImages({ cacheDir: cache, currentHash: '1'.repeat(64), explicit: false, dryRun: true });
  assert.deepEqual(dry.removed.map((r) => path.basename(r.path)).sort(), ['base-4444444444444444', 'base-5555555555555555', 'base-aaaaaaaaaaaaaaaa', 't2']);
  assert.ok(dry.freedBytes > 3 * 64 * 1024);
  assert.ok(exists(orphaned) && exists(tpl2), 'a dry run removes nothing');

  const auto = await collectImages({ cacheDir: cache, currentHash: '1'.repeat(64), explicit: false });
  assert.deepEqual(auto.removed.map((r) => path.basename(r.path)).sort(), ['base-4444444444444444', 'base-5555555555555555', 'base-aaaaaaaaaaaaaaaa', 't2']);
  for (const gone of [orphaned, rebased, tpl2Image, tpl2, path.join(cache, 'build-4444444444444444.log'), refsDir(cache, '4444444444444444')]) assert.ok(!exists(gone), `${gone} removed`);
  for (const image of fs.readdirSync(cache).filter((f) => f.startsWith('base-'))) assert.deepEqual(fs.readdirSync(path.join(cache, image)).sort(), ['base.qcow2', 'initrd.img', 'manifest.json', 'vmlinuz'], 'a published image folder is never written');
  for (const kept of [current, used, referenced, creating, legacy, legacyUsed, tplImage, tpl, tpl3, path.join(cache, 'stage1-cccccccccccccccc')]) assert.ok(exists(kept), `${kept} kept`);
  const why = (p: string) => auto.kept.find((k) => k.path === p)?.reason ?? '';
  assert.match(why(used), /used by .*vms\/dev/);
  assert.match(why(referenced), /used by .*vms\/web/);
  assert.match(why(creating), /being created/);
  assert.match(why(legacy), /image prune/);
  assert.match(why(tplImage), /used by .*vms\/clone/, 'the clone stands on the template, which stands on the image');

  const pruned = await collectImages({ cacheDir: cache, currentHash: '1'.repeat(64), currentStage1: 'a'.repeat(64), explicit: true });
  assert.deepEqual(pruned.removed.map((r) => path.basename(r.path)).sort(), ['base-7777777777777777', 'stage1-cccccccccccccccc']);
  for (const kept of [legacyUsed, path.join(cache, 'stage1-aaaaaaaaaaaaaaaa'), path.join(cache, 'stage1-bbbbbbbbbbbbbbbb')]) assert.ok(exists(kept), `${kept} kept by prune`);

  // Once the VM is gone and its reference is old, the image goes.
  fs.rmSync(path.join(homeB, 'vms', 'web'), { recursive: true });
  for (const f of fs.readdirSync(refsDir(cache, '3333333333333333'))) age(path.join(refsDir(cache, '3333333333333333'), f), OLD);
  const later = await collectImages({ cacheDir: cache, currentHash: '1'.repeat(64), explicit: false });
  assert.ok(later.removed.some((r) => r.path === referenced) && !exists(referenced));
  for (const d of [cache, homeA, homeB]) fs.rmSync(d, { recursive: true, force: true });
});

test('image GC skips while a live build holds the lock, and registering on a removed image fails', async () => {
  const cache = tmp('sbx-gc-lock-');
  const old = fakeImage(cache, 'bbbbbbbbbbbbbbbb', { refs: true });
  fs.writeFileSync(path.join(cache, 'build.lock'), `${process.pid}\n`);
  const r = await collectImages({ cacheDir: cache, currentHash: 'a'.repeat(64), explicit: false });
  assert.match(r.skipped ?? '', /build is under way/);
  assert.ok(fs.existsSync(old));
  fs.writeFileSync(path.join(cache, 'build.lock'), '999999999\n'); // a dead holder: broken
  const r2 = await collectImages({ cacheDir: cache, currentHash: 'a'.repeat(64), explicit: false });
  assert.equal(r2.skipped, undefined);
  assert.ok(!fs.existsSync(old));
  assert.ok(!fs.existsSync(path.join(cache, 'build.lock')), 'the lock is released');
  await assert.rejects(registerImageUse(path.join(old, 'base.qcow2'), path.join(cache, 'vm')), /base image .* (removed|may have just been removed)/);
  await collectImages({ cacheDir: cache, explicit: false });
  assert.ok(!fs.existsSync(refsDir(cache, 'bbbbbbbbbbbbbbbb')), 'the reference to the removed image goes at the next GC');
  fs.rmSync(cache, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Disk usage

test('disk usage counts the top, the checkpoints and the saved state, hard links once, the base apart', () => {
  const d = tmp('sbx-du-');
  const vm = path.join(d, 'vm');
  const base = path.join(d, 'base.qcow2');
  fs.mkdirSync(path.join(vm, 'layers'), { recursive: true });
  fs.mkdirSync(path.join(vm, 'checkpoints', 'abcd0123'), { recursive: true });
  const write = (f: string, n: number) => fs.writeFileSync(f, Buffer.alloc(n, 1));
  write(base, 3 * MiB);
  write(path.join(vm, 'disk.qcow2'), 1 * MiB); // a checkpoint's frozen layer
  write(path.join(vm, 'layers', '0123456789abcdef.qcow2'), 2 * MiB); // the top
  fs.writeFileSync(path.join(vm, 'checkpoints.json'), JSON.stringify({ version: 1, top: 'layers/0123456789abcdef.qcow2', nodes: [] }));
  write(path.join(vm, 'checkpoints', 'abcd0123', 'memory.state'), 4 * MiB);
  fs.linkSync(path.join(vm, 'checkpoints', 'abcd0123', 'memory.state'), path.join(vm, 'saved.state'));
  let u = diskUsage(vm, base);
  assert.equal(u.diskBytes, 2 * MiB);
  assert.equal(u.checkpointsBytes, 5 * MiB);
  assert.equal(u.savedStateBytes, 0, 'a saved state that is a checkpoint too is counted once');
  assert.equal(u.totalBytes, 7 * MiB);
  assert.equal(u.sharedBaseBytes, 3 * MiB);
  fs.rmSync(path.join(vm, 'saved.state'));
  write(path.join(vm, 'saved.state'), 1 * MiB);
  u = diskUsage(vm, base);
  assert.equal(u.savedStateBytes, 1 * MiB);
  assert.equal(u.totalBytes, 8 * MiB);
  fs.rmSync(d, { recursive: true, force: true });
});

test('fstrim and qemu-img convert output parsers', () => {
  assert.equal(parseFstrim('/: 9.5 GiB (10222325760 bytes) trimmed\n'), 10222325760);
  assert.equal(parseFstrim('fstrim: /: the discard operation is not supported'), undefined);
  assert.equal(parseConvertProgress('    (0.00/100%)\r    (42.17/100%)\r'), 42.17);
  assert.equal(parseConvertProgress('nothing'), undefined);
});

test('the tree tooltip and the details panel say the disk use', () => {
  const info = {
    name: 'dev',
    state: 'stopped',
    config: { id: 'x', cpus: 1, memoryMiB: 512, diskGiB: 10, network: 'internet', createdAt: '2026-01-01T00:00:00Z', imageHash: 'a'.repeat(64) },
    paths: { dir: '/d', disk: '/d/disk.qcow2', consoleLog: '/d/console.log', workerLog: '/d/worker.log' },
    disk: { totalBytes: 700 * MiB, diskBytes: 100 * MiB, checkpointsBytes: 600 * MiB, savedStateBytes: 0, sharedBaseBytes: 250 * MiB },
  } as const;
  assert.ok(vmLook(info as never).tooltip.replace(/\\/g, '').includes('- Disk use: 700.0 MiB on the host (checkpoints 600.0 MiB); the base image (250.0 MiB) is shared'));
  assert.equal(detailsStatus(info as never).diskUse, '700.0 MiB on the host (checkpoints 600.0 MiB); the base image (250.0 MiB) is shared');
  assert.doesNotMatch(vmLook({ ...info, disk: undefined } as never).tooltip, /Disk use/);
});

test('disk usage is cached for a few seconds per VM, and forgotten on demand', async () => {
  const { diskUsage: cached, forgetDiskUsage } = await import('../../runtime/service/diskUsage.js');
  const d = tmp('sbx-duc-');
  fs.writeFileSync(path.join(d, 'disk.qcow2'), Buffer.alloc(MiB, 1));
  const a = cached(d, path.join(d, 'none'));
  fs.writeFileSync(path.join(d, 'disk.qcow2'), Buffer.alloc(2 * MiB, 1));
  assert.equal(cached(d, path.join(d, 'none')).diskBytes, a.diskBytes, 'served from the cache');
  assert.equal(cached(d, path.join(d, 'none'), Date.now() + 6000).diskBytes, 2 * MiB, 'measured again once old');
  fs.writeFileSync(path.join(d, 'disk.qcow2'), Buffer.alloc(3 * MiB, 1));
  forgetDiskUsage(d);
  assert.equal(cached(d, path.join(d, 'none')).diskBytes, 3 * MiB, 'measured again once forgotten');
  fs.rmSync(d, { recursive: true, force: true });
});
