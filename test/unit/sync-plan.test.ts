/** The sync planner and the guest-line checks (runtime/sync/plan.ts, wire.ts). */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { planSync } from '../../runtime/sync/plan';
import { isRelPath } from '../../runtime/sync/relPath';
import { linkStaysInside } from '../../runtime/sync/scan';
import { LineSplitter, MAX_LINE, parseGuestLine, type TreeEntry } from '../../runtime/sync/wire';

const f = (path: string, size = 1, mtimeMs = 1000, mode = 0o644): TreeEntry => ({ path, type: 'file', size, mtimeMs, mode });
const d = (path: string, mode = 0o755): TreeEntry => ({ path, type: 'dir', size: 0, mtimeMs: 0, mode });
const l = (path: string, target: string): TreeEntry => ({ path, type: 'symlink', size: 0, mtimeMs: 0, mode: 0o777, target });
const map = (...e: TreeEntry[]) => new Map(e.map((x) => [x.path, x]));

test('equal files are skipped; changed size, mtime or mode are sent', () => {
  const host = map(d('a'), f('a/x'), f('a/y', 2), f('a/z', 1, 2000), f('a/w', 1, 1000, 0o755));
  const guest = map(d('a'), f('a/x'), f('a/y'), f('a/z'), f('a/w'));
  const plan = planSync(host, guest);
  assert.deepEqual(plan.files.map((e) => e.path), ['a/w', 'a/y', 'a/z']);
  assert.equal(plan.equal, 1);
  assert.deepEqual(plan.removes, []);
  assert.deepEqual(plan.dirs, []);
});

test('a first copy into an empty guest sends everything, parents first', () => {
  const plan = planSync(map(f('b/c/f'), d('b/c'), d('b'), l('b/l', 'c/f')), new Map());
  assert.deepEqual(plan.dirs.map((e) => e.path), ['b', 'b/c']);
  assert.deepEqual(plan.files.map((e) => e.path), ['b/c/f']);
  assert.deepEqual(plan.links.map((e) => e.path), ['b/l']);
  assert.equal(plan.bytes, 1);
});

test('what the host lacks is removed, topmost only; type changes remove first', () => {
  const host = map(f('keep'), f('dir2file'), d('file2dir'), f('file2dir/x'));
  const guest = map(f('keep'), d('gone'), f('gone/a'), d('gone/b'), f('gone/b/c'), d('dir2file'), f('dir2file/q'), f('file2dir'), l('lnk', 'keep'));
  const plan = planSync(host, guest);
  assert.deepEqual(plan.removes, ['dir2file', 'file2dir', 'gone', 'lnk']);
  assert.deepEqual(plan.files.map((e) => e.path).sort(), ['dir2file', 'file2dir/x']);
  assert.deepEqual(plan.dirs.map((e) => e.path), ['file2dir']);
});

test('a case-only rename is a removal and a new file', () => {
  const plan = planSync(map(f('readme.md')), map(f('README.md')));
  assert.deepEqual(plan.removes, ['README.md']);
  assert.deepEqual(plan.files.map((e) => e.path), ['readme.md']);
});

test('a link target change is re-sent; links leading out are told apart', () => {
  const plan = planSync(map(l('x', 'a')), map(l('x', 'b')));
  assert.deepEqual(plan.links.map((e) => e.target), ['a']);
  assert.equal(linkStaysInside('a/b', '../c'), true);
  assert.equal(linkStaysInside('a/b', '../../c'), false);
  assert.equal(linkStaysInside('a', '/etc/passwd'), false);
  assert.equal(linkStaysInside('a', 'x/../../y'), false);
});

test('guest lines are checked before they are believed', () => {
  assert.deepEqual(parseGuestLine('["f","a/b",3,420,1000.7]'), { t: 'entry', entry: { path: 'a/b', type: 'file', size: 3, mode: 420, mtimeMs: 1000 } });
  for (const bad of ['["f","../x",1,420,1]', '["f","/etc/passwd",1,420,1]', '["f","a//b",1,420,1]', '["f","a/./b",1,420,1]', '["f","a",-1,420,1]', '["f","a",1,99999,1]', '["q","a",1,420,1]', '["l","a",0,511,1]', '{"t":"end","count":-1}', '{"t":"ack","seq":"x"}', '{"t":"fail","path":"..","message":"m"}', 'nonsense', '{"t":"other"}']) {
    assert.equal(typeof parseGuestLine(bad), 'string', bad);
  }
  assert.equal(isRelPath('a\0b'), false);
  assert.equal(isRelPath('x'.repeat(5000)), false);
});

test('lines are bounded: an endless line is an error, not a growing buffer', () => {
  const lines: string[] = [];
  const errors: string[] = [];
  const s = new LineSplitter((x) => lines.push(x), (e) => errors.push(e));
  s.push(Buffer.from('{"t":"ack","seq":1}\n{"t":"a'));
  s.push(Buffer.from('ck","seq":2}\n'));
  assert.deepEqual(lines, ['{"t":"ack","seq":1}', '{"t":"ack","seq":2}']);
  s.push(Buffer.alloc(MAX_LINE + 10, 0x61));
  assert.equal(errors.length, 1);
});
