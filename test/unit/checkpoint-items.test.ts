/**
 * unit: a VM's CheckpointList turned into the view's items (extension/checkpoints/checkpointItems.ts):
 * nesting and branches, where "Now" goes, undo-point chains folded, and each item's look; and the
 * `sandboxvm` task definition's checks (extension/tasks/vmTaskDefinition.ts).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import type { CheckpointView } from '../../runtime/service/checkpointTree';
import { checkpointItems, checkpointLook, flatten, formatWhen, groupLook, nowLook, suggestedName, undoGroupLook, type CheckpointItem } from '../../extension/checkpoints/checkpointItems';
import { checkTaskDefinition, undoLimits } from '../../extension/tasks/vmTaskDefinition';

let seq = 0;
function cp(name: string, extra: Partial<CheckpointView> = {}, children: CheckpointView[] = []): CheckpointView {
  seq++;
  return { id: extra.id ?? seq.toString(16).padStart(8, '0'), name, createdAt: new Date(2026, 10, 30, 10, seq).toISOString(), state: 'running', sizeBytes: 1024 * 1024, current: false, children, ...extra };
}
const undo = (name: string, extra: Partial<CheckpointView> = {}, children: CheckpointView[] = []) => cp(name, { undo: true, ...extra }, children);

/** The items as indented lines: "name", "[3 undo points: c, b, a]", "Now". */
function shape(items: CheckpointItem[], depth = 0): string[] {
  const pad = '  '.repeat(depth);
  return items.flatMap((i) =>
    i.kind === 'now' ? [`${pad}Now`]
    : i.kind === 'undoGroup' ? [`${pad}[${i.points.length} undo points: ${i.points.map((p) => p.name).join(', ')}]`]
    : [`${pad}${i.view.name}`, ...shape(i.children, depth + 1)],
  );
}

test('no checkpoints: no items (the VM shows no Checkpoints item)', () => {
  assert.deepEqual(checkpointItems({ tree: [], position: undefined }), []);
});

test('a chain nests, Now is the last child of the checkpoint the VM sits on', () => {
  const tree = [cp('a', {}, [cp('b', { current: true })])];
  assert.deepEqual(shape(checkpointItems({ tree, position: tree[0].children[0].id })), ['a', '  b', '    Now']);
});

test('a checkpoint taken after applying an older one branches; Now follows the position', () => {
  const b = cp('b');
  const c = cp('c', { current: true });
  const tree = [cp('a', {}, [b, c])];
  assert.deepEqual(shape(checkpointItems({ tree, position: c.id })), ['a', '  b', '  c', '    Now']);
  const a2 = [cp('a', { current: true }, [cp('b'), cp('c')])];
  assert.deepEqual(shape(checkpointItems({ tree: a2, position: a2[0].id })), ['a', '  b', '  c', '  Now']);
});

test('with no position (the VM on the base image) Now is at the top level, last', () => {
  const tree = [cp('a'), cp('b')];
  assert.deepEqual(shape(checkpointItems({ tree, position: undefined })), ['a', 'b', 'Now']);
});

test('a run of undo points folds into one group, newest first, followed by what came after it', () => {
  const u3 = undo('undo point 3', { current: true });
  const tree = [cp('clean', {}, [undo('undo point 1', {}, [undo('undo point 2', {}, [u3])])])];
  const items = checkpointItems({ tree, position: u3.id });
  assert.deepEqual(shape(items), ['clean', '  [3 undo points: undo point 3, undo point 2, undo point 1]', '  Now']);
});

test('ten undo points do not bury the named checkpoints: one group between two named ones', () => {
  const after = cp('after', { current: true });
  let chain: CheckpointView = after;
  for (let i = 10; i >= 1; i--) chain = undo(`undo point ${i}`, {}, [chain]);
  const tree = [cp('clean', {}, [chain])];
  const items = checkpointItems({ tree, position: after.id });
  assert.deepEqual(shape(items).map((l) => l.replace(/: .*\]/, ']')), ['clean', '  [10 undo points]', '  after', '    Now']);
});

test('a single undo point is a leaf, followed at its level by what came after it', () => {
  const u = undo('undo point 1', { current: true });
  const tree = [cp('clean', {}, [u])];
  assert.deepEqual(shape(checkpointItems({ tree, position: u.id })), ['clean', '  undo point 1', '  Now']);
  const leaf = checkpointItems({ tree, position: u.id })[0];
  assert.ok(leaf.kind === 'checkpoint' && leaf.children[0].kind === 'checkpoint' && leaf.children[0].children.length === 0);
});

test('an undo point with two children ends the chain; its children follow the group as branches', () => {
  const y = cp('y', { current: true });
  const tree = [undo('u1', {}, [undo('u2', {}, [cp('x'), y])])];
  assert.deepEqual(shape(checkpointItems({ tree, position: y.id })), ['[2 undo points: u2, u1]', 'x', 'y', '  Now']);
});

test('flatten gives every item its parent key, undo points in a group under the group', () => {
  const u2 = undo('u2', { current: true });
  const tree = [cp('a', { id: 'aaaaaaaa' }, [undo('u1', { id: 'bbbbbbbb' }, [u2])])];
  const flat = flatten(checkpointItems({ tree, position: u2.id }));
  const parentOf = (key: string) => flat.find((e) => e.item.key === key)?.parent;
  assert.equal(parentOf('aaaaaaaa'), undefined);
  const group = flat.find((e) => e.item.kind === 'undoGroup')!;
  assert.equal(group.parent, 'aaaaaaaa');
  assert.equal(parentOf('bbbbbbbb'), group.item.key);
  assert.equal(parentOf(u2.id), group.item.key);
  assert.equal(parentOf('now'), 'aaaaaaaa');
  assert.equal(new Set(flat.map((e) => e.item.key)).size, flat.length, 'keys are unique');
});

test('looks: icons by kind, state in words, time and size in the description, context values for the menus', () => {
  const now = new Date(2026, 10, 30, 12, 0);
  const named = checkpointLook({ ...cp('clean install'), createdAt: new Date(2026, 10, 30, 9, 5).toISOString(), sizeBytes: 5 * 2 ** 20, pausedMs: 31 }, now);
  assert.equal(named.icon, 'history');
  assert.equal(named.color, 'charts.green');
  assert.equal(named.label, 'clean install');
  assert.equal(named.description, '09:05 · running · 5.0 MiB');
  assert.equal(named.contextValue, 'vmCheckpoint');
  assert.match(named.tooltip, /brings the VM back running/);
  assert.match(named.tooltip, /paused 31 ms/);
  const off = checkpointLook({ ...cp('disk only'), state: 'stopped' }, now);
  assert.equal(off.color, undefined);
  assert.match(off.description, /^\d\d:\d\d · off · /);
  const u = checkpointLook(undo('undo point 4'), now);
  assert.equal(u.icon, 'debug-step-back');
  assert.equal(u.contextValue, 'vmCheckpointUndo');
  const n = nowLook('dev', 'running');
  assert.deepEqual([n.icon, n.label, n.description, n.contextValue], ['circle-filled', 'Now', 'running', 'vmCheckpointNow']);
  const g = undoGroupLook([undo('b', { sizeBytes: 2048 }), undo('a', { sizeBytes: 1024 })], now);
  assert.equal(g.label, '2 undo points');
  assert.match(g.description, /^newest \d\d:\d\d · 3 KiB$/);
  assert.equal(g.contextValue, 'vmUndoPoints');
  const all = groupLook({ tree: [cp('a', {}, [undo('u'), cp('b')])], totalBytes: 3 * 2 ** 20 });
  assert.equal(all.description, '2 checkpoints, 1 undo point · 3.0 MiB');
});

test('names from the disk are Markdown-escaped in tooltips', () => {
  const look = checkpointLook(cp('[x](http://evil) *b*'));
  assert.ok(look.tooltip.includes('\\[x\\]\\(http://evil\\) \\*b\\*'), look.tooltip);
});

test('formatWhen: time today, the date before, the year when it differs', () => {
  const now = new Date(2026, 10, 30, 12, 0);
  assert.equal(formatWhen(new Date(2026, 10, 30, 7, 3).toISOString(), now), '07:03');
  assert.equal(formatWhen(new Date(2026, 10, 29, 23, 59).toISOString(), now), 'Nov 29 23:59');
  assert.equal(formatWhen(new Date(2025, 0, 2, 1, 0).toISOString(), now), 'Jan 2 2025 01:00');
  assert.equal(formatWhen('garbage', now), 'unknown time');
});

test('the default name offered is one past the highest "checkpoint N"', () => {
  assert.equal(suggestedName([]), 'checkpoint 1');
  assert.equal(suggestedName([{ name: 'checkpoint 2' }, { name: 'checkpoint 10' }, { name: 'x' }]), 'checkpoint 11');
});

test('task definitions: vm and command required, the rest checked', () => {
  assert.deepEqual(checkTaskDefinition({ type: 'sandboxvm', vm: ' dev ', command: 'make' }), { type: 'sandboxvm', vm: 'dev', command: 'make', undoPoint: undefined, cwd: undefined, env: undefined });
  assert.match(checkTaskDefinition({ type: 'sandboxvm', command: 'make' }) as string, /needs "vm"/);
  assert.match(checkTaskDefinition({ type: 'sandboxvm', vm: 'dev', command: '' }) as string, /needs "command"/);
  assert.match(checkTaskDefinition({ type: 'sandboxvm', vm: 'dev', command: 'x', undoPoint: 'yes' }) as string, /true or false/);
  assert.match(checkTaskDefinition({ type: 'sandboxvm', vm: 'dev', command: 'x', cwd: 'rel' }) as string, /absolute/);
  assert.match(checkTaskDefinition({ type: 'sandboxvm', vm: 'dev', command: 'x', env: { 'A B': 'x' } }) as string, /variable name/);
  assert.match(checkTaskDefinition({ type: 'sandboxvm', vm: 'dev', command: 'x', env: { A: 1 } }) as string, /variable name/);
  assert.deepEqual((checkTaskDefinition({ type: 'sandboxvm', vm: 'dev', command: 'x', env: { A: '1' }, undoPoint: false }) as { env: unknown }).env, { A: '1' });
});

test('undo-point limits: only positive whole numbers are passed', () => {
  assert.deepEqual(undoLimits(null, undefined), {});
  assert.deepEqual(undoLimits(3, 0), { undoMaxCount: 3 });
  assert.deepEqual(undoLimits(2.5, 512), { undoMaxDiskMiB: 512 });
});
