/**
 * The pull's pure rules, table-driven: which paths are held back (at any depth), --allow, conflict
 * names (extensions, dotfiles, 255 bytes), link texts that stay inside, and the CLI's size syntax.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { heldBackReason, isAllowed } from '../../runtime/sync/pull/heldBack';
import { conflictName } from '../../runtime/sync/pull/pullState';
import { linkTextStaysInside } from '../../runtime/sync/pull/hostPath';
import { parseBytes } from '../../runtime/cli/commands/pull';

test('unit: held-back paths, at any depth; the rest is written', () => {
  const held = [
    '.git/hooks/post-checkout', '.git/hooks/pre-commit.sample', 'sub/repo/.git/hooks/x', '.git/modules/lib/hooks/post-merge',
    '.git/config', '.git/modules/lib/config', '.husky/pre-commit', '.husky/_/husky.sh', '.githooks/pre-push',
    '.vscode/tasks.json', '.vscode/settings.json', '.vscode/launch.json', 'pkg/.vscode/tasks.json', 'my.code-workspace',
    '.devcontainer/devcontainer.json', '.devcontainer.json', '.envrc', 'sub/.envrc', '.exrc', '.nvim.lua', '.npmrc', '.yarnrc.yml',
  ];
  const written = [
    '.git/HEAD', '.git/objects/ab/cdef', '.git/refs/heads/main', 'config', 'src/config', 'hooks/x', '.gitattributes', '.gitmodules',
    'package.json', 'Makefile', '.env', '.vscode/extensions.json', 'vscode/tasks.json', '.git', '.vscode', 'notes/.git-config',
  ];
  for (const p of held) assert.ok(heldBackReason(p), `${p} is held back`);
  for (const p of written) assert.equal(heldBackReason(p), undefined, `${p} is written`);
});

test('unit: --allow names the path or a folder above it', () => {
  assert.ok(isAllowed('.vscode/tasks.json', ['.vscode/tasks.json']));
  assert.ok(isAllowed('.git/hooks/pre-commit', ['.git/hooks']));
  assert.ok(isAllowed('.git/hooks/pre-commit', ['./.git/hooks/']));
  assert.ok(!isAllowed('.git/hooks/pre-commit', ['.git/hook']));
  assert.ok(!isAllowed('.vscode/tasks.json', ['']));
  assert.ok(!isAllowed('.vscode/tasks.json', ['/']));
});

test('unit: conflict names keep the extension and fit 255 bytes', () => {
  const t = new Date('2026-01-30T14:25:01.123Z');
  assert.equal(conflictName('report.txt', t), 'report.guest-conflict-20260130-142501.txt');
  assert.equal(conflictName('Makefile', t), 'Makefile.guest-conflict-20260130-142501');
  assert.equal(conflictName('.bashrc', t), '.bashrc.guest-conflict-20260130-142501');
  assert.equal(conflictName('a.tar.gz', t, 2), 'a.tar.guest-conflict-20260130-142501-2.gz');
  const long = conflictName(`${'é'.repeat(127)}.md`, t);
  assert.ok(Buffer.byteLength(long) <= 255 && long.endsWith('.guest-conflict-20260130-142501.md'));
});

test('unit: link texts that stay inside', () => {
  for (const [at, target, ok] of [
    ['a', 'b', true], ['d/a', '../b', true], ['d/e/a', '../../b/c', true], ['a', '.', true],
    ['a', '/etc', false], ['a', '..', false], ['d/a', '../..', false], ['d/a', 'x/../..', false], ['d/a', 'x/../y', false],
    ['a', '', false], ['a', 'b\0c', false], ['a', 'C:\\Windows', false],
  ] as const) assert.equal(linkTextStaysInside(at, target), ok, `${at} -> ${target}`);
});

test('unit: sizes on the command line', () => {
  assert.equal(parseBytes('512', 'x'), 512);
  assert.equal(parseBytes('64K', 'x'), 65536);
  assert.equal(parseBytes('1.5M', 'x'), 1.5 * 2 ** 20);
  assert.equal(parseBytes('8GiB', 'x'), 8 * 2 ** 30);
  assert.equal(parseBytes('1t', 'x'), 2 ** 40);
  assert.throws(() => parseBytes('lots', '--max-total'), /--max-total takes a size such as 512M or 8G, not "lots"/);
});
