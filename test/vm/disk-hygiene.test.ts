/**
 * vm: disk hygiene against a real guest.
 * Procedure:
 *  1. Discard: 300 MB of random data written in the guest grows the writable disk on the host by
 *     about as much; deleting it shrinks it again at once (the guest mounts / with discard and
 *     the drive has discard=unmap). With discard turned off in the guest, a delete returns
 *     nothing until `sandboxvm compact` (fstrim through the agent) returns it.
 *  2. Compact of a stopped VM rewrites its disk (progress shown, bytes reported); a file's hash
 *     is the same after the VM boots again; a `kill -9` of the service in the middle of a compact
 *     leaves the old disk working (the VM boots, the file is intact) and the leftover goes at
 *     the next compact; a saved VM compacted restores onto the rewritten disk.
 *  3. Undo points past both budgets: with the VM's limit of 3 (the client asking for 50), five
 *     undo points leave three; then undo points holding 40 MB and a memory state (m) each, under
 *     a budget of 2.5 (m + 45 MiB), are pruned to two by the budget. Each time the newest stays, the ones kept are the newest, and space came back.
 *  4. Image GC with a temporary image cache (the real image hard-linked in as the current one,
 *     plus an "old" image, an overlay on it): a VM whose disk is rebased onto the old image keeps
 *     it through `image prune`; once the VM is removed, prune removes it and says the bytes.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import type { CheckpointList } from '../../runtime/service/checkpoints';
import type { CheckpointView } from '../../runtime/service/checkpointTree';
import type { GcResult } from '../../runtime/image/imageGc';
import { registerImageUse } from '../../runtime/image/imageGc';
import { TestHome, waitFor } from './fixture';

const MB = 1e6;
const MiB = 2 ** 20;

const blocks = (file: string) => fs.statSync(file).blocks * 512;

describe('vm: disk hygiene', { timeout: 3_600_000 }, () => {
  let home: TestHome;
  const VM = 'dh';

  before(async () => {
    home = new TestHome();
    await home.bootedVm(VM);
  });
  after(async () => {
    await home.dispose();
  });

  const sh = (script: string) => home.ok(['exec', VM, '--', 'sh', '-c', script], { timeoutMs: 300_000 });
  const info = async () => JSON.parse(await home.ok(['info', VM, '--json']));
  const disk = async () => (await info()).paths.disk as string;

  test('a deleted file returns its space to the host: online discard, and compact (fstrim) when discard is off', async () => {
    const file = await disk();
    const t0 = blocks(file);
    await sh('dd if=/dev/urandom of=/root/big bs=1M count=300 status=none && sync');
    const written = blocks(file);
    const t1 = Date.now();
    await sh('rm /root/big && sync');
    // ext4 sends its discards after the journal commit that freed the blocks: they land within a moment.
    const deleted = await waitFor('the freed space back on the host', () => (written - blocks(file) > 250 * MB ? blocks(file) : undefined), 30_000).catch(() => blocks(file));
    console.log(`discard: space back ${Date.now() - t1} ms after the rm was issued`);
    console.log(`discard: ${(t0 / MiB).toFixed(1)} MiB -> ${(written / MiB).toFixed(1)} MiB after 300 MB written -> ${(deleted / MiB).toFixed(1)} MiB after rm`);
    assert.ok(written - t0 > 280 * MB, `300 MB written grew the disk by ${written - t0} bytes`);
    assert.ok(written - deleted > 250 * MB, `the delete returned only ${written - deleted} bytes`);

    await sh('mount -o remount,nodiscard / && dd if=/dev/urandom of=/root/big bs=1M count=300 status=none && sync && rm /root/big && sync');
    const kept = blocks(file);
    assert.ok(kept - deleted > 250 * MB, `without discard the space stays allocated (${kept - deleted} bytes)`);
    const t2 = Date.now();
    const r = JSON.parse(await home.ok(['compact', VM, '--json']));
    const after = blocks(file);
    console.log(`compact (running, fstrim): reclaimed ${(r.reclaimedBytes / MiB).toFixed(1)} MiB in ${Date.now() - t2} ms (service: ${r.elapsedMs} ms); disk ${(kept / MiB).toFixed(1)} -> ${(after / MiB).toFixed(1)} MiB`);
    assert.equal(r.method, 'trim');
    assert.ok(r.reclaimedBytes > 250 * MB, `compact reclaimed ${r.reclaimedBytes}`);
    assert.ok(kept - after > 250 * MB);
    await sh('mount -o remount,discard /');
    await home.ok(['pause', VM]);
    const paused = await home.cli(['compact', VM]);
    assert.equal(paused.code, 1);
    assert.match(paused.stderr, /cannot compact dh while it is paused/);
    await home.ok(['resume', VM]);
    const unknown = await home.cli(['compact', 'nosuch']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /no VM named nosuch/);
    const text = await home.ok(['info', VM]);
    assert.match(text, /Disk usage: +[\d.]+ [KMG]iB \(disk [\d.]+ [KMG]iB, checkpoints [\d.]+ [KMG]?i?B\); base image [\d.]+ MiB shared, not counted/);
  });

  test('compact of a stopped VM rewrites its disk; the data is intact; a kill -9 mid-compact leaves the old disk working', async () => {
    const hash = (await sh('head -c 200000000 /dev/urandom > /root/keep && sync && sha256sum /root/keep | cut -d" " -f1')).trim();
    // Fragment: many files written and deleted without discard, so the disk holds freed clusters.
    await sh('mount -o remount,nodiscard / && mkdir -p /root/m && for i in $(seq 200); do head -c 300000 /dev/urandom > /root/m/f$i; done && sync && rm -rf /root/m && sync');
    await home.ok(['stop', VM]);
    const file = await disk();
    const before = blocks(file);
    const r = await home.cli(['compact', VM, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout);
    console.log(`compact (stopped, rewrite): ${(res.beforeBytes / MiB).toFixed(1)} -> ${(res.afterBytes / MiB).toFixed(1)} MiB, reclaimed ${(res.reclaimedBytes / MiB).toFixed(1)} MiB in ${res.elapsedMs} ms`);
    assert.equal(res.method, 'rewrite');
    assert.match(r.stderr, /Compacting dh/, 'progress is shown');
    // The rewrite keeps the guest's bytes: blocks the guest freed without discard still hold data
    // and stay (only fstrim, when it runs, returns them); what goes is qcow2's own slack.
    assert.ok(res.afterBytes <= before + MiB, `the rewrite grew the disk: ${before} -> ${res.afterBytes}`);
    assert.equal(res.reclaimedBytes, Math.max(0, res.beforeBytes - res.afterBytes));
    assert.equal(spawnSync('qemu-img', ['check', '-q', file]).status, 0);

    // kill -9 of the service while qemu-img writes the copy.
    const child = home.cli(['compact', VM]);
    const tmp = `${file}.compact`;
    await waitFor('the compact copy', () => fs.existsSync(tmp), 60_000);
    process.kill(home.servicePid()!, 'SIGKILL');
    await child;
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(fs.existsSync(file));
    await home.ok(['start', VM]);
    assert.equal((await sh('sha256sum /root/keep | cut -d" " -f1')).trim(), hash, 'the file is intact after the interrupted compact');
    await home.ok(['stop', VM]);
    if (fs.existsSync(tmp)) {
      await home.ok(['compact', VM]);
      assert.ok(!fs.existsSync(tmp), 'the next compact removes the leftover');
    }
    // A saved VM: the rewrite keeps the guest's bytes, so its saved state restores onto it.
    await home.ok(['start', VM]);
    await home.ok(['save', VM]);
    const saved = JSON.parse(await home.ok(['compact', VM, '--json']));
    assert.equal(saved.method, 'rewrite');
    await home.ok(['start', VM]);
    assert.equal((await sh('sha256sum /root/keep | cut -d" " -f1')).trim(), hash, 'restored onto the rewritten disk');
    assert.equal((await sh('rm -f /root/keep; mount -o remount,discard /; echo ok')).trim(), 'ok');
  });

  test('undo points past both budgets: at most N, within the disk budget, oldest first, never the newest, space reclaimed', async () => {
    await home.ok(['set', VM, '--undo-points', '3', '--undo-disk', '100000']);
    assert.deepEqual((await info()).config.undoPoints, { maxCount: 3, maxDiskMiB: 100000 });
    const client = await ServiceClient.connect({ home: home.dir, autoStart: false });
    try {
      const made: string[] = [];
      let reclaimed = 0;
      const undoPoint = async (label: string, write: number) => {
        // The page cache is part of the memory state: dropped, so each one's size is its own data and a bare memory state.
        await sh(`${write ? `head -c ${write} /dev/urandom > /root/${label} && ` : ''}sync && echo 3 > /proc/sys/vm/drop_caches`);
        const usage0 = (await info()).disk.checkpointsBytes as number;
        const t0 = Date.now();
        // The client asks for 50 and 100,000 MiB: the VM's own limits win.
        const c = await client.createCheckpoint(VM, label, { undo: true, undoMaxCount: 50, undoMaxDiskMiB: 100000 });
        made.push(c.name);
        const list = (await client.listCheckpoints(VM)) as CheckpointList;
        const undo = flat(list.tree).filter((v) => v.undo).sort((a, b) => a.createdAt.localeCompare(b.createdAt));
        const freed = (c.pruned ?? []).reduce((s, p) => s + p.reclaimedBytes, 0);
        reclaimed += freed;
        console.log(`undo point ${c.name}: ${Date.now() - t0} ms, ${(c.sizeBytes / MiB).toFixed(1)} MiB; checkpoints ${(usage0 / MiB).toFixed(0)} -> ${(((await info()).disk.checkpointsBytes as number) / MiB).toFixed(0)} MiB; kept ${undo.map((v) => `${v.name} ${(v.sizeBytes / MiB).toFixed(0)} MiB`).join(', ')}; pruned ${(c.pruned ?? []).map((p) => `${p.name} (${(p.reclaimedBytes / MiB).toFixed(0)} MiB freed)`).join(', ') || 'none'}`);
        assert.equal(undo[undo.length - 1].name, label, 'the newest is kept');
        assert.deepEqual(undo.map((v) => v.name), made.slice(made.length - undo.length), 'the ones kept are the newest');
        return { undo, bytes: undo.reduce((s, v) => s + v.sizeBytes, 0), pruned: c.pruned ?? [], size: c.sizeBytes };
      };
      // The count: five undo points, three kept.
      let memoryBytes = 0;
      for (let i = 1; i <= 5; i++) {
        const r = await undoPoint(`c${i}`, 0);
        assert.equal(r.undo.length, Math.min(i, 3));
        assert.equal(r.pruned.length, i > 3 ? 1 : 0);
        memoryBytes = r.size; // an undo point with no new data: its memory state, nearly all of it
      }
      const countFreed = reclaimed;
      assert.ok(countFreed > 20 * MiB, `pruning by count gave back ${countFreed} bytes`);
      // The disk: undo points that hold 40 MB of new data and a memory state (m) each, and a budget
      // of 2.5 (m + 45 MiB): two fit (2m + one layer: the oldest one's is not charged), three do not.
      const budgetMiB = Math.ceil((2.5 * (memoryBytes + 45 * MiB)) / MiB);
      await home.ok(['set', VM, '--undo-disk', `${budgetMiB}M`]);
      const layerBytes = (name: string) => {
        const index = JSON.parse(fs.readFileSync(path.join(home.vmDir(VM), 'checkpoints.json'), 'utf8')) as { nodes: { name: string; layer: string; deleted?: boolean }[] };
        return blocks(path.join(home.vmDir(VM), index.nodes.find((n) => n.name === name && !n.deleted)!.layer));
      };
      let r;
      for (let i = 1; i <= 4; i++) {
        r = await undoPoint(`d${i}`, 40_000_000);
        const cost = r.bytes - layerBytes(r.undo[0].name);
        assert.ok(r.undo.length === 1 || cost <= budgetMiB * MiB, `${cost} bytes of undo points over the ${budgetMiB} MiB budget`);
      }
      assert.equal(r!.undo.length, 2, 'the disk budget, not the count of 3, bounds them');
      assert.ok(reclaimed > countFreed, 'pruning by disk gave back space too');
      // Undo still returns to the newest.
      await sh('rm /root/d4; sync');
      await client.undo(VM);
      assert.equal((await sh('ls /root/d4 >/dev/null && echo back')).trim(), 'back');
    } finally {
      client.dispose();
    }
    // A stopped VM with checkpoints: the rewrite is of its writable layer, on its checkpoint's layer.
    await home.ok(['stop', VM]);
    const top = await disk();
    assert.match(top, /layers\/[0-9a-f]{16}\.qcow2$/);
    const backingBefore = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', top], { encoding: 'utf8' }).stdout)['full-backing-filename'];
    assert.equal(JSON.parse(await home.ok(['compact', VM, '--json'])).method, 'rewrite');
    assert.equal(JSON.parse(spawnSync('qemu-img', ['info', '--output=json', top], { encoding: 'utf8' }).stdout)['full-backing-filename'], backingBefore);
    await home.ok(['start', VM]);
    assert.equal((await sh('ls /root/d4 >/dev/null && echo still')).trim(), 'still');
    const bad = await home.cli(['set', VM, '--undo-points', '0x']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid undo points "0x": use a whole number/);
    const zero = await home.cli(['set', VM, '--undo-points', '2000']);
    assert.equal(zero.code, 1);
    assert.match(zero.stderr, /undo-point count must be between 1 and 1000/);
  });

  test('image GC: a VM on an old image keeps it; once the VM is removed, prune removes it', async () => {
    const current = JSON.parse(await home.ok(['info', VM, '--json'])).config.imageHash.slice(0, 16) as string;
    const realDir = path.dirname(fs.realpathSync(JSON.parse(fs.readFileSync(path.join(home.vmDir(VM), 'vm.json'), 'utf8')).image.disk));
    const cache = fs.mkdtempSync('/tmp/sbxt-cache-');
    const home2 = new TestHome({ SANDBOXVM_IMAGE_CACHE: cache });
    try {
      const cur = path.join(cache, `base-${current}`);
      fs.mkdirSync(cur);
      for (const f of ['base.qcow2', 'vmlinuz', 'initrd.img', 'manifest.json']) fs.linkSync(path.join(realDir, f), path.join(cur, f));
      const old = path.join(cache, 'base-00000000000000aa');
      fs.mkdirSync(old);
      for (const f of ['vmlinuz', 'initrd.img', 'manifest.json']) fs.linkSync(path.join(realDir, f), path.join(old, f));
      assert.equal(spawnSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(cur, 'base.qcow2'), path.join(old, 'base.qcow2')]).status, 0);
      fs.writeFileSync(path.join(old, 'filler'), Buffer.alloc(8 * MiB, 7)); // so the bytes freed show
      await home2.createdVm('onold');
      const vmDisk = path.join(home2.vmDir('onold'), 'disk.qcow2');
      assert.equal(spawnSync('qemu-img', ['rebase', '-u', '-F', 'qcow2', '-b', path.join(old, 'base.qcow2'), vmDisk]).status, 0);
      await registerImageUse(path.join(old, 'base.qcow2'), home2.vmDir('onold'));

      let r = JSON.parse(await home2.ok(['image', 'prune', '--json'])) as GcResult;
      assert.ok(!r.removed.some((x) => x.path === old), 'the image a VM uses is kept');
      assert.match(r.kept.find((x) => x.path === old)?.reason ?? '', /used by .*onold/);
      assert.ok(fs.existsSync(path.join(old, 'base.qcow2')));
      await home2.ok(['start', 'onold']);
      assert.equal((await home2.ok(['exec', 'onold', '--', 'echo', 'up'])).trim(), 'up');
      await home2.ok(['rm', '--force', 'onold']);

      const dry = await home2.ok(['image', 'prune', '--dry-run']);
      assert.match(dry, new RegExp(`would remove ${old} \\([\\d.]+ MiB\\)`));
      assert.ok(fs.existsSync(old));
      r = JSON.parse(await home2.ok(['image', 'prune', '--json'])) as GcResult;
      assert.ok(r.removed.some((x) => x.path === old), 'removed once no VM uses it');
      assert.ok(r.freedBytes >= 8 * MiB);
      assert.ok(!fs.existsSync(old));
      assert.ok(fs.existsSync(path.join(cur, 'base.qcow2')), 'the current image stays');
      console.log(`image prune: removed ${r.removed.map((x) => path.basename(x.path)).join(', ')}, freed ${(r.freedBytes / MiB).toFixed(1)} MiB`);
    } finally {
      await home2.dispose();
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});

function flat(tree: CheckpointView[]): CheckpointView[] {
  return tree.flatMap((v) => [v, ...flat(v.children)]);
}
