/**
 * The checkpoint store's crash recovery (runtime/service/checkpointStore.ts) with real qemu-img
 * files and no VM: each test leaves the files as a kill at one point of an operation would, and
 * checks that `recover` settles the index and the files so that every layer named exists and the
 * backing chains pass `qemu-img check`.
 */
import { beforeEach, afterEach, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CheckpointStore } from '../../runtime/service/checkpointStore';
import type { CheckpointIndex, CheckpointNode } from '../../runtime/service/checkpointTree';
import { activeDisk } from '../../runtime/common/activeDisk';

let dir: string;
let store: CheckpointStore;
const logs: string[] = [];

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbx-ckstore-'));
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', path.join(dir, 'base.qcow2'), '1G']);
  execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(dir, 'base.qcow2'), path.join(dir, 'disk.qcow2'), '1G']);
  store = new CheckpointStore(dir, 'qemu-img', path.join(dir, 'base.qcow2'), 1, (m) => logs.push(m));
});
afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

function node(id: string, layer: string, parent?: string): CheckpointNode {
  return { id, name: `n-${id}`, layer, parent, createdAt: new Date().toISOString(), state: 'stopped', memory: false };
}

function check(index: CheckpointIndex): void {
  for (const f of [store.top(index), ...index.nodes.map((n) => store.abs(n.layer))]) {
    assert.ok(fs.existsSync(f), `${f} exists`);
    execFileSync('qemu-img', ['check', '-q', f]);
  }
  assert.equal(index.pending, undefined);
}

/** A completed stopped checkpoint `a` made the way checkpoints.ts does. */
async function firstCheckpoint(): Promise<CheckpointIndex> {
  const top = store.newLayer();
  await store.makeFolder('aaaaaaaa');
  await store.overlay(top, store.abs('disk.qcow2'));
  const index: CheckpointIndex = { version: 1, current: 'aaaaaaaa', top, nodes: [node('aaaaaaaa', 'disk.qcow2')] };
  await store.write(index);
  return index;
}

test('a create cut short before its new disk exists is undone', async () => {
  const top = store.newLayer();
  await store.write({ version: 1, nodes: [], pending: { op: 'create', node: node('aaaaaaaa', 'disk.qcow2'), top } });
  await store.makeFolder('aaaaaaaa');
  fs.mkdirSync(path.join(dir, 'layers'), { recursive: true });
  fs.writeFileSync(store.abs(top) + '.partial', 'half a header');
  const index = await store.recover(false);
  assert.deepEqual(index.nodes, []);
  assert.equal(activeDisk(dir), path.join(dir, 'disk.qcow2'));
  assert.ok(!fs.existsSync(store.folder('aaaaaaaa')));
  assert.deepEqual(fs.readdirSync(path.join(dir, 'layers')), []);
  check(index);
});

test('a create cut short after its new disk exists is completed; a running one without its memory keeps the disk only', async () => {
  const top = store.newLayer();
  const n = { ...node('aaaaaaaa', 'disk.qcow2'), state: 'running' as const, memory: true };
  await store.write({ version: 1, nodes: [], pending: { op: 'create', node: n, top } });
  await store.makeFolder('aaaaaaaa');
  await store.overlay(top, store.abs('disk.qcow2'));
  fs.writeFileSync(store.path('aaaaaaaa', 'memory') + '.partial', 'cut');
  const index = await store.recover(false);
  assert.equal(index.current, 'aaaaaaaa');
  assert.equal(activeDisk(dir), store.abs(top));
  assert.equal(index.nodes[0].memory, false);
  assert.equal(index.nodes[0].state, 'stopped');
  assert.match(index.nodes[0].note ?? '', /disk only/);
  assert.ok(!fs.existsSync(store.path('aaaaaaaa', 'memory') + '.partial'));
  check(index);
});

test('a running QEMU that still writes the old disk decides: the create is undone', async () => {
  const top = store.newLayer();
  await store.write({ version: 1, nodes: [], pending: { op: 'create', node: node('aaaaaaaa', 'disk.qcow2'), top } });
  await store.makeFolder('aaaaaaaa');
  await store.overlay(top, store.abs('disk.qcow2'));
  const index = await store.recover(true, async () => path.join(dir, 'disk.qcow2'));
  assert.deepEqual(index.nodes, []);
  assert.ok(!fs.existsSync(store.abs(top)));
  check(index);
});

test('an apply cut short is completed: the disk is a fresh overlay on the checkpoint, the old disk goes', async () => {
  let index = await firstCheckpoint();
  const oldTop = store.top(index);
  const top = store.newLayer();
  await store.write({ ...index, pending: { op: 'apply', id: 'aaaaaaaa', top } });
  index = await store.recover(false);
  assert.equal(index.top, top);
  assert.ok(!fs.existsSync(oldTop), 'the discarded disk is removed as an orphan');
  check(index);
});

test('delete: a leaf goes, a layer with one child is merged into it, and the child reads the same', async () => {
  let index = await firstCheckpoint();
  // b on a, the VM on b; then delete a (one dependent: b) and b's own data must still read the same.
  execFileSync('qemu-io', ['-c', 'write -P 0x61 0 64k', store.top(index)], { stdio: 'ignore' });
  const bLayer = index.top!;
  const top = store.newLayer();
  await store.makeFolder('bbbbbbbb');
  await store.overlay(top, store.abs(bLayer));
  index = { ...index, current: 'bbbbbbbb', top, nodes: [...index.nodes, node('bbbbbbbb', bLayer, 'aaaaaaaa')] };
  index.nodes[0].deleted = true;
  await store.write(index);
  index = await store.reclaim(index, false);
  assert.deepEqual(index.nodes.map((n) => n.id), ['bbbbbbbb']);
  assert.equal(index.nodes[0].parent, undefined);
  assert.ok(!fs.existsSync(path.join(dir, 'disk.qcow2')), "a's layer took b's place");
  execFileSync('qemu-io', ['-r', '-c', 'read -P 0x61 0 64k', store.top(index)], { stdio: 'ignore' });
  check(index);
  index.nodes[0].deleted = true;
  index = await store.reclaim(index, false);
  assert.deepEqual(index.nodes, [], 'b is merged into the disk');
  execFileSync('qemu-io', ['-r', '-c', 'read -P 0x61 0 64k', store.top(index)], { stdio: 'ignore' });
  check(index);
});

test('a full disk is refused with the figures', async () => {
  await assert.rejects(store.requireFree(Number.MAX_SAFE_INTEGER, "checkpointing dev's running state"), /checkpointing dev's running state needs up to \d+ MiB and the disk holding .* has \d+ MiB free; free some space or delete checkpoints/);
});
