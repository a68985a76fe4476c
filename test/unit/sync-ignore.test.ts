/** Ignore rules (.gitignore syntax, runtime/sync/ignore.ts): table-driven. */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { IgnoreRules, baseRules, checkPattern } from '../../runtime/sync/ignore';

const cases: { patterns: string[]; path: string; dir?: boolean; ignored: boolean }[] = [
  { patterns: ['*.log'], path: 'a.log', ignored: true },
  { patterns: ['*.log'], path: 'deep/x/a.log', ignored: true },
  { patterns: ['*.log'], path: 'a.logx', ignored: false },
  { patterns: ['/build'], path: 'build', dir: true, ignored: true },
  { patterns: ['/build'], path: 'src/build', dir: true, ignored: false },
  { patterns: ['build/'], path: 'build', dir: false, ignored: false },
  { patterns: ['build/'], path: 'src/build', dir: true, ignored: true },
  { patterns: ['doc/*.txt'], path: 'doc/a.txt', ignored: true },
  { patterns: ['doc/*.txt'], path: 'doc/sub/a.txt', ignored: false },
  { patterns: ['**/foo'], path: 'a/b/foo', ignored: true },
  { patterns: ['**/foo'], path: 'foo', ignored: true },
  { patterns: ['a/**/b'], path: 'a/b', ignored: true },
  { patterns: ['a/**/b'], path: 'a/x/y/b', ignored: true },
  { patterns: ['a/**'], path: 'a/x/y', ignored: true },
  { patterns: ['*.o', '!keep.o'], path: 'keep.o', ignored: false },
  { patterns: ['*.o', '!keep.o'], path: 'other.o', ignored: true },
  { patterns: ['f?o'], path: 'fxo', ignored: true },
  { patterns: ['f?o'], path: 'f/o', ignored: false },
  { patterns: ['[ab].c'], path: 'a.c', ignored: true },
  { patterns: ['[!ab].c'], path: 'a.c', ignored: false },
  { patterns: ['\\#x'], path: '#x', ignored: true },
  { patterns: ['# comment', ''], path: '# comment', ignored: false },
  { patterns: ['node_modules'], path: 'node_modules', dir: true, ignored: true },
];

test('patterns match as git matches them', () => {
  for (const c of cases) {
    const rules = new IgnoreRules([{ base: '', patterns: c.patterns }]);
    assert.equal(rules.ignores(c.path, c.dir ?? false), c.ignored, `${JSON.stringify(c.patterns)} on ${c.path}`);
  }
});

test('a nested .gitignore applies below its directory only, and later rules win', () => {
  const rules = new IgnoreRules([{ base: '', patterns: ['*.gen'] }]).with('pkg', ['*.tmp', '!x.gen']);
  assert.equal(rules.ignores('pkg/a.tmp', false), true);
  assert.equal(rules.ignores('a.tmp', false), false);
  assert.equal(rules.ignores('pkg/x.gen', false), false);
  assert.equal(rules.ignores('x.gen', false), true);
});

test('defaults keep .git (git status works in the guest) but not its locks or editor litter', () => {
  const rules = baseRules();
  assert.equal(rules.ignores('.git', true), false);
  assert.equal(rules.ignores('.git/objects/ab/cdef', false), false);
  assert.equal(rules.ignores('.git/index.lock', false), true);
  assert.equal(rules.ignores('.git/refs/heads/main.lock', false), true);
  assert.equal(rules.ignores('src/.a.ts.swp', false), true);
  assert.equal(rules.ignores('.DS_Store', false), true);
  assert.equal(rules.ignores('src/.f.ts.sandboxvm-12-3.partial', false), true);
  assert.equal(rules.ignores('src/main.ts', false), false);
  assert.equal(baseRules([], false).ignores('.DS_Store', false), false);
  assert.equal(baseRules(['!.DS_Store']).ignores('.DS_Store', false), false);
});

test('user patterns are checked', () => {
  assert.equal(checkPattern('*.log'), undefined);
  assert.match(checkPattern('')!, /non-empty/);
  assert.match(checkPattern('a\nb')!, /one line/);
  assert.match(checkPattern('x'.repeat(2000))!, /at most/);
});
