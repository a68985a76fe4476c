/**
 * vm: `cp` between host and a real guest: cp's rules with links on either side, folders both ways,
 * interrupted copies leave nothing, one clear line for bad destinations, progress in one unit family.
 * Procedure: boot one VM; for each case make the files with `exec`, run `sandboxvm cp`, and check
 * the result on both sides (contents by hash, links still links, no temporaries). Interruptions
 * (SIGINT on the CLI, `stop --force` of the VM) happen while bytes flow (the temporary is seen
 * growing), several times at different moments. The link cases end by running /bin/sh in the guest.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, TestHome, waitFor, type CliResult } from './fixture';

const VM = 'c1';

describe('vm: copy', { timeout: 1_800_000 }, () => {
  let home: TestHome;
  let host: string;
  before(async () => {
    home = new TestHome();
    await home.bootedVm(VM);
    host = fs.mkdtempSync('/tmp/sbx-copy-');
  });
  after(async () => {
    fs.rmSync(host, { recursive: true, force: true });
    await home.dispose();
  });

  /** Runs a shell command in the guest; returns its stdout (fails the test on a non-zero exit). */
  const sh = (script: string) => home.ok(['exec', VM, '--', 'sh', '-c', script], { timeoutMs: 120_000 });
  const md5 = (file: string) => createHash('md5').update(fs.readFileSync(file)).digest('hex');
  const guestMd5 = async (file: string) => (await sh(`md5sum < '${file}'`)).split(' ')[0];
  /** Temporaries of either side's pattern in a guest directory. */
  const guestTemporaries = async (dir: string) => (await sh(`ls -a '${dir}'`)).split('\n').filter((n) => /sandboxvm/.test(n));
  const hostTemporaries = (dir: string) => fs.readdirSync(dir).filter((n) => /sandboxvm/.test(n));

  function background(args: string[]): { child: ChildProcess; done: Promise<CliResult> } {
    const child = spawn(process.execPath, [CLI, ...args], { env: home.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d) => (stdout += d));
    child.stderr!.on('data', (d) => (stderr += d));
    const done = new Promise<CliResult>((resolve) => child.on('close', (code, signal) => resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr })));
    return { child, done };
  }

  test('a link to a directory in the guest receives <dir>/<name>; the link stays a link', async () => {
    const tool = path.join(host, 'mytool');
    fs.writeFileSync(tool, '#!/bin/sh\necho mytool\n', { mode: 0o755 });
    await sh('rm -rf /root/lnk /tmp/mytool; ln -s /tmp /root/lnk');
    await home.ok(['cp', tool, `${VM}:/root/lnk`]);
    assert.equal((await sh('readlink /root/lnk')).trim(), '/tmp');
    assert.equal(await sh('/tmp/mytool'), 'mytool\n');
    // with a trailing slash, and into a link that is a relative path
    await sh('mkdir -p /root/real && ln -sfn real /root/rel');
    await home.ok(['cp', tool, `${VM}:/root/rel/`]);
    assert.equal((await sh('readlink /root/rel; ls /root/real')).trim(), 'real\nmytool');
  });

  test('a link to a file is written through: the link stays, its target gets the bytes', async () => {
    await sh('echo old > /root/target; ln -sfn target /root/tofile');
    const file = path.join(host, 'new');
    fs.writeFileSync(file, 'new content\n');
    await home.ok(['cp', file, `${VM}:/root/tofile`]);
    assert.equal((await sh('readlink /root/tofile; cat /root/target')).trim(), 'target\nnew content');
    assert.deepEqual(await guestTemporaries('/root'), []);
  });

  test('an existing file is replaced atomically (a new inode, no temporary left), keeping its owner', async () => {
    await sh('echo old > /root/replace; chown 1234:1234 /root/replace');
    const before = (await sh('stat -c %i /root/replace')).trim();
    const file = path.join(host, 'replacement');
    fs.writeFileSync(file, 'x'.repeat(100_000));
    await home.ok(['cp', file, `${VM}:/root/replace`]);
    const [inode, owner] = (await sh('stat -c "%i %u:%g" /root/replace')).trim().split(' ');
    assert.notEqual(inode, before);
    assert.equal(owner, '1234:1234');
    assert.equal(await guestMd5('/root/replace'), md5(file));
    assert.deepEqual(await guestTemporaries('/root'), []);
  });

  test('reading a guest link copies what it points to', async () => {
    await sh('ln -sfn /etc/os-release /root/rl');
    const dl = fs.mkdtempSync(path.join(host, 'dl-'));
    await home.ok(['cp', `${VM}:/root/rl`, dl]);
    assert.equal(fs.lstatSync(path.join(dl, 'rl')).isFile(), true);
    assert.equal(fs.readFileSync(path.join(dl, 'rl'), 'utf8'), await sh('cat /etc/os-release'));
    // a host link to a file is written through too
    fs.writeFileSync(path.join(dl, 'hosttarget'), 'old');
    fs.symlinkSync('hosttarget', path.join(dl, 'hostlink'));
    await home.ok(['cp', `${VM}:/root/rl`, path.join(dl, 'hostlink')]);
    assert.equal(fs.readlinkSync(path.join(dl, 'hostlink')), 'hosttarget');
    assert.equal(fs.readFileSync(path.join(dl, 'hosttarget'), 'utf8'), await sh('cat /etc/os-release'));
  });

  test('folders both ways with -r', async () => {
    const src = path.join(host, 'tree');
    fs.mkdirSync(path.join(src, 'sub', 'deeper'), { recursive: true });
    fs.writeFileSync(path.join(src, 'a.txt'), 'alpha\n');
    fs.writeFileSync(path.join(src, 'sub', 'b.bin'), Buffer.alloc(300_000, 7));
    fs.writeFileSync(path.join(src, 'sub', 'deeper', 'run.sh'), '#!/bin/sh\necho ran\n', { mode: 0o755 });
    fs.symlinkSync('sub/b.bin', path.join(src, 'link'));
    const refused = await home.cli(['cp', src, `${VM}:/root/`]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /is a directory; use cp -r/);
    await home.ok(['cp', '-r', src, `${VM}:/root/up`]);
    assert.equal(await sh('cd /root/up && find . | sort'), ['.', './a.txt', './link', './sub', './sub/b.bin', './sub/deeper', './sub/deeper/run.sh', ''].join('\n'));
    assert.equal((await sh('readlink /root/up/link; /root/up/sub/deeper/run.sh')).trim(), 'sub/b.bin\nran');
    assert.equal(await guestMd5('/root/up/sub/b.bin'), md5(path.join(src, 'sub', 'b.bin')));
    // into an existing directory: <dir>/<name>
    await home.ok(['cp', '-r', src, `${VM}:/root/up`]);
    assert.equal((await sh('ls /root/up/tree')).trim(), 'a.txt\nlink\nsub');

    const back = fs.mkdtempSync(path.join(host, 'back-'));
    await home.ok(['cp', '-r', `${VM}:/root/up`, back]);
    const got = path.join(back, 'up');
    assert.equal(fs.readFileSync(path.join(got, 'a.txt'), 'utf8'), 'alpha\n');
    assert.equal(md5(path.join(got, 'sub', 'b.bin')), md5(path.join(src, 'sub', 'b.bin')));
    assert.equal(fs.readlinkSync(path.join(got, 'link')), 'sub/b.bin');
    assert.equal(fs.statSync(path.join(got, 'sub', 'deeper', 'run.sh')).mode & 0o100, 0o100);
  });

  test('guest links in a folder copied to the host never lead out of the destination', async () => {
    await sh(
      'rm -rf /root/evil && mkdir -p /root/evil/sub && cd /root/evil && echo f > sub/f && ' +
        'ln -s /etc etc && ln -s ../.. up && ln -s sub/f ok && ln -s . self && ln -s self/.. climb && ln -s /etc/passwd passwd && ln -s ../f sub/parent',
    );
    const outer = fs.mkdtempSync(path.join(host, 'outer-'));
    const dest = path.join(outer, 'dest');
    fs.mkdirSync(dest);
    const r = await home.cli(['cp', '-r', `${VM}:/root/evil`, dest]);
    assert.equal(r.code, 1, r.stderr);
    for (const name of ['etc', 'up', 'climb', 'passwd']) assert.match(r.stderr, new RegExp(`skipped the link ${name} -> .*points outside the copy`));
    const got = path.join(dest, 'evil');
    assert.deepEqual(fs.readdirSync(got).sort(), ['ok', 'self', 'sub']);
    assert.equal(fs.readlinkSync(path.join(got, 'ok')), 'sub/f');
    assert.equal(fs.readlinkSync(path.join(got, 'sub', 'parent')), '../f');
    assert.deepEqual(fs.readdirSync(outer), ['dest']);
  });

  test('a guest file listed as 1 TiB (sparse) is refused before a byte is written, alone or in a folder', async () => {
    await sh('rm -rf /root/huge && mkdir -p /root/huge && echo small > /root/huge/small && truncate -s 1T /root/huge/big');
    const dest = fs.mkdtempSync(path.join(host, 'huge-'));
    const started = Date.now();
    const one = await home.cli(['cp', `${VM}:/root/huge/big`, dest]);
    const tookMs = Date.now() - started;
    assert.equal(one.code, 1, one.stderr);
    assert.match(one.stderr, /needs 1(\.0)? TiB and the host has .* free in .*nothing was written/);
    const folder = await home.cli(['cp', '-r', `${VM}:/root/huge`, dest]);
    assert.equal(folder.code, 1, folder.stderr);
    assert.match(folder.stderr, /needs 1(\.0)? TiB/);
    assert.deepEqual(fs.readdirSync(dest), [], 'nothing was written, not even the small file or a folder');
    console.log(`# a 1 TiB guest file refused in ${tookMs} ms: ${one.stderr.trim()}`);
  });

  test('Ctrl-C of a guest -> host copy while bytes flow leaves nothing, three times', async () => {
    await sh('dd if=/dev/urandom of=/root/r200 bs=1M count=200 status=none');
    const dl = fs.mkdtempSync(path.join(host, 'int-'));
    for (const [i, threshold] of [2e6, 30e6, 90e6].entries()) {
      const { child, done } = background(['cp', `${VM}:/root/r200`, path.join(dl, 'r200')]);
      await waitFor(`${threshold} bytes in the host temporary`, () => hostTemporaries(dl).some((n) => fs.statSync(path.join(dl, n)).size >= threshold) || undefined, 120_000);
      child.kill(i === 1 ? 'SIGTERM' : 'SIGINT');
      const r = await done;
      assert.deepEqual(fs.readdirSync(dl), []);
      assert.equal(r.code, 130, r.stderr);
      assert.match(r.stderr, /the copy was cancelled; the file in progress was removed/);
      assert.doesNotMatch(r.stderr, /sandboxvm-\d/);
    }
  });

  test('Ctrl-C of a host -> guest copy while bytes flow leaves nothing in the guest, twice', async () => {
    const big = path.join(host, 'u200');
    const fd = fs.openSync(big, 'w');
    const chunk = Buffer.alloc(1 << 20);
    for (let i = 0; i < 200; i++) fs.writeSync(fd, chunk.fill(i));
    fs.closeSync(fd);
    await sh('mkdir -p /root/in');
    for (const threshold of [5e6, 60e6]) {
      const { child, done } = background(['cp', big, `${VM}:/root/in/`]);
      await waitFor(`${threshold} bytes in the guest temporary`, async () => Number((await sh('stat -c %s /root/in/.u200* 2>/dev/null || echo 0')).trim().split('\n')[0]) >= threshold || undefined, 180_000);
      child.kill('SIGINT');
      const r = await done;
      assert.equal(await sh('ls -a /root/in'), '.\n..\n');
      assert.equal(r.code, 130, r.stderr);
    }
  });

  test('stop --force during a host -> guest copy: after a reboot nothing is left', async () => {
    const big = path.join(host, 'u200');
    await sh('mkdir -p /root/cut');
    const { done } = background(['cp', big, `${VM}:/root/cut/`]);
    await waitFor('the guest temporary on disk', async () => Number((await sh('sync; stat -c %s /root/cut/.u200* 2>/dev/null || echo 0')).trim().split('\n')[0]) >= 20e6 || undefined, 180_000);
    await home.ok(['stop', '--force', VM]);
    const r = await done;
    assert.notEqual(r.code, 0);
    await home.ok(['start', VM]);
    assert.equal(await sh('ls -a /root/cut'), '.\n..\n');
  });

  test('a missing host directory is one clear line, a non-zero exit, nothing created', async () => {
    await sh('echo data > /root/b1');
    const r = await home.cli(['cp', `${VM}:/root/b1`, '/nonexistent/dir/x']);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'sandboxvm: cannot write /nonexistent/dir/x: no such directory /nonexistent/dir');
    assert.equal(fs.existsSync('/nonexistent'), false);
    const g = await home.cli(['cp', path.join(host, 'new'), `${VM}:/nonexistent/x`]);
    assert.equal(g.code, 1);
    assert.doesNotMatch(g.stderr, /sandboxvm-\d|partial|at .*\.js/);
    assert.equal(g.stderr.trim().split('\n').length, 1, g.stderr);
    const d = await home.cli(['cp', path.join(host, 'new'), `${VM}:/root/nodir/`]);
    assert.match(d.stderr, /^sandboxvm: c1:\/root\/nodir\/ is not an existing directory$/m);
  });

  test('progress: sizes in one unit family, no step counts, nothing odd for unknown sizes', async () => {
    const tiny = path.join(host, 'tiny');
    fs.writeFileSync(tiny, 'sixby');
    const up = await home.ok(['cp', tiny, `${VM}:/root/tiny`]).then(() => home.cli(['cp', tiny, `${VM}:/root/tiny`]));
    const dl = fs.mkdtempSync(path.join(host, 'proc-'));
    const proc = await home.cli(['cp', `${VM}:/proc/cpuinfo`, dl]);
    assert.equal(proc.code, 0, proc.stderr);
    assert.ok(fs.statSync(path.join(dl, 'cpuinfo')).size > 0);
    for (const r of [up, proc]) {
      assert.doesNotMatch(r.stderr, /\d+\/\d+ /, r.stderr);
      assert.doesNotMatch(r.stderr, /0\.0 MiB|MB\/s/, r.stderr);
      assert.match(r.stderr, /^Copied \d+(\.\d)? (B|KiB) in [\d.]+ s \([\d.]+ (B|KiB|MiB)\/s\)$/m, r.stderr);
    }
  });

  test('cp into /bin (a link to usr/bin) installs the tool and the guest keeps working, across a reboot', async () => {
    const tool = path.join(host, 'mytool');
    await home.ok(['cp', tool, `${VM}:/bin`]);
    assert.equal((await sh('readlink /bin')).trim(), 'usr/bin');
    assert.equal(await home.ok(['exec', VM, '--', '/bin/sh', '-c', 'mytool']), 'mytool\n');
    await home.ok(['restart', VM]);
    assert.equal(await home.ok(['exec', VM, '--', '/bin/sh', '-c', 'test -L /bin && mytool']), 'mytool\n');
  });
});
