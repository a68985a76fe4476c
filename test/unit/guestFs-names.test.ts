/** unit: what the guest file system provider accepts from the guest (names, watch paths) and the watch excludes. */
import * as assert from 'node:assert/strict';
import { test } from 'node:test';
import { excludeMatcher, fuzzyMatches, globToRegExp } from '../../extension/guestFs/globMatcher';
import { checkGuestName, checkRelativePath } from '../../extension/guestFs/guestNames';

test('guest names: one component, no / or NUL, not . or .., at most 255 bytes', () => {
  for (const ok of ['a', 'hello.txt', '.git', 'spaced name', 'ü'.repeat(127), 'x'.repeat(255)]) assert.equal(checkGuestName(ok), ok, ok);
  for (const bad of ['', '.', '..', 'a/b', '/', 'a\0b', 'ü'.repeat(128), 'x'.repeat(256), 42, null, undefined]) assert.equal(checkGuestName(bad), undefined, String(bad));
});

test('watch paths: relative, every segment a name', () => {
  assert.deepEqual(checkRelativePath('a/b/c.txt'), ['a', 'b', 'c.txt']);
  assert.deepEqual(checkRelativePath('file'), ['file']);
  for (const bad of ['', '/etc/passwd', 'a/../../etc', 'a//b', 'a/./b', 'a/', 'a\0', 'x'.repeat(5000), 7]) assert.equal(checkRelativePath(bad), undefined, String(bad));
});

test('excludes: VS Code watcher globs, table-driven', () => {
  const cases: [string, string, boolean][] = [
    ['**/node_modules/**', 'node_modules/x/y.js', true],
    ['**/node_modules/**', 'src/node_modules/x', true],
    ['**/node_modules/**', 'src/node_modulesx/y', false],
    ['**/.git/objects/**', '.git/objects/ab/cd', true],
    ['**/.git/objects/**', '.git/HEAD', false],
    ['**/*.log', 'a/b/c.log', true],
    ['**/*.log', 'c.log', true],
    ['*.log', 'a/c.log', false],
    ['**/{dist,out}/**', 'pkg/out/x', true],
    ['**/{dist,out}/**', 'pkg/outx/x', false],
    ['build', 'build/x/y', true],
    ['file?.txt', 'file1.txt', true],
    ['[ab].c', 'b.c', true],
    ['[ab].c', 'c.c', false],
  ];
  for (const [glob, rel, want] of cases) assert.equal(excludeMatcher([glob])(rel), want, `${glob} vs ${rel}`);
  assert.equal(globToRegExp('{unbalanced'), undefined);
  assert.equal(globToRegExp('[open'), undefined);
  assert.equal(excludeMatcher([])('anything'), false);
});

test('Go to File on guest folders: the pattern\'s characters in order, case-insensitive, spaces ignored', () => {
  const cases: [string, string, boolean][] = [
    ['', 'src/a.txt', true],
    ['a.txt', 'src/a.txt', true],
    ['sat', 'src/a.txt', true],
    ['SRC A', 'src/a.txt', true],
    ['tas', 'src/a.txt', false],
    ['a.txtx', 'src/a.txt', false],
    ['éa', 'É/a', true],
  ];
  for (const [pattern, candidate, want] of cases) assert.equal(fuzzyMatches(pattern, candidate), want, `${pattern} in ${candidate}`);
});
