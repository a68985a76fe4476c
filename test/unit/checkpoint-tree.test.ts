/** The checkpoint index's pure logic (runtime/service/checkpointTree.ts): parsing, lookup, reclaiming, the tree as shown. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import {
  activeChain,
  defaultName,
  dependents,
  nextReclaim,
  parseIndex,
  resolve,
  requireFreeName,
  undoPointsToPrune,
  validateCheckpointName,
  view,
  withoutNode,
  type CheckpointIndex,
  type CheckpointNode,
} from '../../runtime/service/checkpointTree';
import { treeText } from '../../runtime/cli/commands/checkpoint';

let clock = 0;
function node(id: string, parent?: string, extra: Partial<CheckpointNode> = {}): CheckpointNode {
  clock++;
  return { id, name: `n-${id}`, layer: `layers/${id.repeat(2)}.qcow2`, parent, createdAt: new Date(Date.UTC(2026, 0, 1, 0, 0, clock)).toISOString(), state: 'stopped', memory: false, ...extra };
}

const A = 'aaaaaaaa';
const B = 'bbbbbbbb';
const C = 'cccccccc';
const D = 'dddddddd';

/** A -> B -> C, and A -> D; the VM on C. */
function tree(): CheckpointIndex {
  return { version: 1, current: C, top: 'layers/0123456789abcdef.qcow2', nodes: [node(A), node(B, A), node(C, B), node(D, A)] };
}

test('parseIndex round-trips a valid index and rejects damaged ones', () => {
  const idx = tree();
  assert.deepEqual(JSON.parse(JSON.stringify(parseIndex(JSON.stringify(idx)))), JSON.parse(JSON.stringify(idx)));
  const bad: [string, unknown][] = [
    ['wrong version', { ...idx, version: 2 }],
    ['unknown parent', { ...idx, nodes: [node(A, B)] }],
    ['unknown current', { ...idx, current: B, nodes: [node(A)] }],
    ['duplicate ids', { ...idx, current: undefined, nodes: [node(A), node(A)] }],
    ['bad id', { ...idx, current: undefined, nodes: [node('../x')] }],
    ['layer outside the VM', { ...idx, current: undefined, nodes: [node(A, undefined, { layer: '../../etc/passwd' })] }],
    ['top outside the VM', { ...idx, top: '/etc/passwd' }],
    ['bad state', { ...idx, current: undefined, nodes: [node(A, undefined, { state: 'weird' as never })] }],
    ['bad pending', { ...idx, pending: { op: 'apply', id: 'eeeeeeee', top: 'disk.qcow2' } }],
  ];
  for (const [what, value] of bad) assert.throws(() => parseIndex(JSON.stringify(value)), Error, what);
});

test('resolve finds a checkpoint by name first, then by id; unknown and deleted ones are refused with the way to list', () => {
  const idx = tree();
  idx.nodes[1].name = C; // a name that is another's id: the name wins
  assert.equal(resolve(idx, 'dev', `n-${A}`).id, A);
  assert.equal(resolve(idx, 'dev', C).id, B);
  assert.equal(resolve(idx, 'dev', D).id, D);
  idx.nodes[3].deleted = true;
  assert.throws(() => resolve(idx, 'dev', D), /dev has no checkpoint "dddddddd"; see `sandboxvm checkpoint list dev`/);
  assert.throws(() => resolve(idx, 'dev', 'nope'), (e: Error & { code?: string }) => e.code === 'UnknownCheckpoint');
});

test('names: validated, unique among live checkpoints, numbered by default', () => {
  assert.equal(validateCheckpointName('before the upgrade'), 'before the upgrade');
  for (const bad of ['', ' padded', 'x'.repeat(65), 'line\nbreak', 7]) assert.throws(() => validateCheckpointName(bad), /invalid checkpoint name/);
  const idx = tree();
  assert.throws(() => requireFreeName(idx, 'dev', `n-${A}`), /dev already has a checkpoint named "n-aaaaaaaa"/);
  requireFreeName(idx, 'dev', `n-${A}`, A); // renaming to its own name
  idx.nodes[0].deleted = true;
  requireFreeName(idx, 'dev', `n-${A}`);
  idx.nodes[1].name = 'checkpoint 4';
  idx.nodes[2].name = 'checkpoint 2';
  assert.equal(defaultName(idx), 'checkpoint 5');
  assert.equal(defaultName(idx, 'undo point'), 'undo point 1');
});

test('dependents and the active chain', () => {
  const idx = tree();
  assert.deepEqual(dependents(idx, A), [B, D]);
  assert.deepEqual(dependents(idx, C), ['disk']);
  assert.deepEqual(dependents(idx, D), []);
  assert.deepEqual([...activeChain(idx)], [C, B, A]);
});

test('nextReclaim: a leaf goes, a layer with one dependent merges, two dependents keep it, the running chain waits', () => {
  const idx = tree();
  assert.equal(nextReclaim(idx, false), undefined, 'nothing deleted');
  idx.nodes[3].deleted = true; // D, a leaf
  assert.deepEqual(nextReclaim(idx, true), { kind: 'remove', id: D });
  const noD = withoutNode(idx, D);
  noD.nodes[0].deleted = true; // A, now with one child B, in the running chain
  assert.equal(nextReclaim(noD, true), undefined, 'the running QEMU has A open');
  assert.deepEqual(nextReclaim(noD, false), { kind: 'merge', id: A, into: B });
  const both = tree();
  both.nodes[0].deleted = true; // A with B and D on it
  assert.equal(nextReclaim(both, false), undefined);
  const onDisk = tree();
  onDisk.nodes[2].deleted = true; // C, the VM's position
  assert.deepEqual(nextReclaim(onDisk, false), { kind: 'merge', id: C, into: 'disk' });
});

test('withoutNode moves children and the position to the parent', () => {
  const idx = withoutNode(tree(), B);
  assert.equal(idx.nodes.find((n) => n.id === C)!.parent, A);
  const root = withoutNode(tree(), A);
  assert.equal(root.nodes.find((n) => n.id === B)!.parent, undefined);
  const pos = withoutNode(withoutNode(tree(), C), B);
  assert.equal(pos.current, A);
});

test('view: the live tree by time, deleted ones skipped, the position marked on the nearest live ancestor', () => {
  const idx = tree();
  const v = view(idx, (id) => (id === A ? 100 : 1));
  assert.equal(v.length, 1);
  assert.equal(v[0].id, A);
  assert.equal(v[0].sizeBytes, 100);
  assert.deepEqual(v[0].children.map((c) => c.id), [B, D]);
  assert.equal(v[0].children[0].children[0].current, true);
  idx.nodes[1].deleted = true; // B hidden: C shows under A
  idx.nodes[2].deleted = true; // and C too: the position shows on A
  const hidden = view(idx, () => 0);
  assert.deepEqual(hidden[0].children.map((c) => c.id), [D]);
  assert.equal(hidden[0].current, true);
});

test('undoPointsToPrune keeps the newest N undo points and touches nothing else', () => {
  const idx: CheckpointIndex = { version: 1, nodes: [node(A, undefined, { undo: true }), node(B, A), node(C, B, { undo: true }), node(D, C, { undo: true })] };
  assert.deepEqual(undoPointsToPrune(idx, 2).map((n) => n.id), [A]);
  assert.deepEqual(undoPointsToPrune(idx, 5), []);
  assert.deepEqual(undoPointsToPrune(idx, 0).map((n) => n.id), [A, C, D]);
});

test('the CLI tree marks the VM under the checkpoint it sits on, or at the top without one', () => {
  const idx = tree();
  const text = treeText({ vm: 'dev', state: 'running', position: C, tree: view(idx, () => 2 ** 20), totalBytes: 4 * 2 ** 20 });
  const lines = text.split('\n');
  assert.equal(lines[0], 'dev (running): 4 checkpoints, 4.0 MiB');
  assert.match(lines[1], /^└─ n-aaaaaaaa {2}\(stopped, 1\.0 MiB, /);
  assert.match(lines[2], /^ {3}├─ n-bbbbbbbb/);
  assert.match(lines[3], /^ {3}│ {2}└─ n-cccccccc/);
  assert.equal(lines[4], '   │     └─ ▶ now (running)');
  assert.match(lines[5], /^ {3}└─ n-dddddddd/);
  const none = treeText({ vm: 'dev', state: 'stopped', position: undefined, tree: [], totalBytes: 0 });
  assert.equal(none, 'dev (stopped): 0 checkpoints, 0 B\n└─ ▶ now (stopped)');
});
