/**
 * unit: cp's pure decisions (runtime/client/copyPlan.ts) and the guest's write targets and temporary
 * journal (guest-agent/src/fileTarget.ts, on a scratch directory).
 */
import { after, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { linkStaysInside, resolveDestination, sourceBase } from '../../runtime/client/copyPlan';
import { formatBytes } from '../../runtime/cli/progress';
import { checkCallResult } from '../../runtime/protocol/messages';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'sbx-copyplan-'));
process.env.SANDBOXVM_TEMP_JOURNAL = path.join(scratch, 'journal', 'temporary-dirs');
after(() => fs.rmSync(scratch, { recursive: true, force: true }));
// eslint-disable-next-line @typescript-eslint/no-var-requires
const target = require('../../guest-agent/src/fileTarget') as typeof import('../../guest-agent/src/fileTarget');

describe('unit: copy destinations', () => {
  test('cp rules, table-driven', () => {
    const cases: [string, string, Parameters<typeof resolveDestination>[2], boolean, string][] = [
      ['/bin', 'mytool', 'dir', false, '/bin/mytool'],
      ['/root/lnk', 'mytool', 'dir', false, '/root/lnk/mytool'],
      ['/root/x', 'mytool', 'file', false, '/root/x'],
      ['/root/new', 'mytool', 'missing', false, '/root/new'],
      ['/root/', 'mytool', 'dir', false, '/root/mytool'],
      ['/root/d', 'src', 'dir', true, '/root/d/src'],
      ['/root/new', 'src', 'missing', true, '/root/new'],
    ];
    for (const [dst, base, kind, isDir, want] of cases) assert.deepEqual(resolveDestination(dst, base, kind, isDir, true), { ok: true, path: want }, `${dst} ${kind}`);
    assert.match((resolveDestination('/root/nodir/', 'f', 'missing', false, true) as { why: string }).why, /not an existing directory/);
    assert.match((resolveDestination('/root/file/', 'f', 'file', false, true) as { why: string }).why, /not a directory/);
    assert.match((resolveDestination('/root/file', 'd', 'file', true, true) as { why: string }).why, /directory cannot replace/);
    assert.match((resolveDestination('/dev/null', 'f', 'other', false, true) as { why: string }).why, /neither a file nor a directory/);
    assert.equal(resolveDestination('/root', '..', 'dir', false, true).ok, false);
  });

  test('source base names', () => {
    assert.equal(sourceBase('/root/dir/', true), 'dir');
    assert.equal(sourceBase('/etc/localtime', true), 'localtime');
    assert.equal(sourceBase('/', true), '');
  });

  test('links from the guest stay inside the copy or are refused', () => {
    const inside: [string, string][] = [['l', 'a'], ['l', './a/b'], ['d/l', '../x'], ['d/e/l', '../../x/y'], ['l', '.'], ['d/l', '..']];
    const outside: [string, string][] = [['l', '/etc'], ['l', '..'], ['d/l', '../..'], ['l', 'a/../..'], ['l', 'a/..'], ['d/l', 'x/../../..'], ['l', ''], ['l', 'a\0b']];
    for (const [rel, t] of inside) assert.equal(linkStaysInside(rel, t), true, `${rel} -> ${t}`);
    for (const [rel, t] of outside) assert.equal(linkStaysInside(rel, t), false, `${rel} -> ${JSON.stringify(t)}`);
  });

  test('readlink and symlink answers from the guest are checked', () => {
    assert.equal(checkCallResult('readlink', 'sub/f'), undefined);
    for (const bad of ['', 'a\0b', 'x'.repeat(4097), 5, null, { a: 1 }]) assert.match(checkCallResult('readlink', bad) ?? '', /readlink: malformed/);
    assert.equal(checkCallResult('symlink', null), undefined);
    assert.match(checkCallResult('symlink', 'x') ?? '', /unexpected value/);
  });

  test('byte counts in one unit family', () => {
    assert.equal(formatBytes(6), '6 B');
    assert.equal(formatBytes(1037), '1.0 KiB');
    assert.equal(formatBytes(5 * 2 ** 20), '5.0 MiB');
    assert.equal(formatBytes(3 * 2 ** 30), '3.00 GiB');
  });
});

describe('unit: guest write targets and temporaries', () => {
  const d = path.join(scratch, 'root');
  fs.mkdirSync(path.join(d, 'dir'), { recursive: true });
  fs.writeFileSync(path.join(d, 'file'), 'old');
  fs.symlinkSync('file', path.join(d, 'tofile'));
  fs.symlinkSync('dir', path.join(d, 'todir'));
  fs.symlinkSync('nothing', path.join(d, 'dangling'));

  test('resolveWriteTarget follows links to files and refuses directories and dangling links', () => {
    assert.equal(target.resolveWriteTarget(path.join(d, 'new')).target, path.join(d, 'new'));
    assert.equal(target.resolveWriteTarget(path.join(d, 'file')).target, path.join(d, 'file'));
    assert.equal(target.resolveWriteTarget(path.join(d, 'tofile')).target, fs.realpathSync(path.join(d, 'file')));
    assert.throws(() => target.resolveWriteTarget(path.join(d, 'dir')), /is a directory/);
    assert.throws(() => target.resolveWriteTarget(path.join(d, 'todir')), /link to a directory/);
    assert.throws(() => target.resolveWriteTarget(path.join(d, 'dangling')), /link to nothing/);
  });

  test('a write through a link replaces the target and keeps the link', () => {
    const t = target.openTemporary(path.join(d, 'tofile'), 0o644, '1-2');
    assert.match(path.basename(t.path), target.TEMPORARY_NAME);
    fs.writeSync(t.fd, 'new');
    fs.closeSync(t.fd);
    target.commitTemporary(t);
    assert.equal(fs.readlinkSync(path.join(d, 'tofile')), 'file');
    assert.equal(fs.readFileSync(path.join(d, 'file'), 'utf8'), 'new');
  });

  test('the journal names the directory of a live temporary; a restart removes what was left there, and nothing else', () => {
    const t = target.openTemporary(path.join(d, 'dir', 'big'), 0o644, '7-9');
    const journal = fs.readFileSync(process.env.SANDBOXVM_TEMP_JOURNAL!, 'utf8');
    assert.equal(journal, `${path.join(d, 'dir')}\n`);
    fs.writeFileSync(path.join(d, 'dir', '.keep.sandboxvm-notes'), 'user file');
    fs.writeFileSync(path.join(d, 'dir', 'regular'), 'user file');
    // the agent dies here: the temporary stays
    assert.equal(target.cleanStaleTemporaries(() => undefined), 1);
    assert.equal(fs.existsSync(t.path), false);
    assert.deepEqual(fs.readdirSync(path.join(d, 'dir')).sort(), ['.keep.sandboxvm-notes', 'regular']);
    assert.equal(fs.readFileSync(process.env.SANDBOXVM_TEMP_JOURNAL!, 'utf8'), '');
  });

  test('messages never carry a path', () => {
    const err = Object.assign(new Error("ENOENT: no such file or directory, open '/root/.x.sandboxvm-1-2.partial'"), { code: 'ENOENT' });
    assert.equal(target.describeFsError(err), 'no such file or directory');
  });
});
