/**
 * vm: bad input gets one clear line, a non-zero exit, and changes nothing.
 * Procedure: for each bad input (unknown VM, bad names, duplicate name, wrong states, QEMU missing
 * or too old, an image build that fails, a full disk) run the CLI, check its exit code and message,
 * and check the home's files are exactly what they were before.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TestHome } from './fixture';

describe('vm: errors', { timeout: 600_000 }, () => {
  let home: TestHome;
  before(async () => {
    home = new TestHome();
    await home.bootedVm('up');
    await home.createdVm('down');
  });
  after(() => home.dispose());

  /** Runs the CLI expecting failure with `message`, and checks no file changed. */
  async function fails(args: string[], message: RegExp, on: TestHome = home, env?: NodeJS.ProcessEnv): Promise<string> {
    const before = on.files();
    const r = await on.cli(args, { env });
    assert.notEqual(r.code, 0, `sandboxvm ${args.join(' ')} should fail`);
    assert.match(r.stderr, message);
    const lines = r.stderr.trim().split('\n').filter((l) => !/^\w+ [a-z0-9-]+: \d+\/\d+ /.test(l)); // progress lines aside
    assert.equal(lines.length, 1, `one line: ${r.stderr}`);
    assert.match(lines[0], /^sandboxvm: /);
    assert.deepEqual(on.files().filter((f) => !f.endsWith('.log')), before.filter((f) => !f.endsWith('.log')), 'nothing changed on disk');
    return r.stderr;
  }

  test('unknown VM', async () => {
    for (const verb of ['start', 'stop', 'info', 'exec', 'rm', 'pause', 'save']) {
      const args = verb === 'exec' ? [verb, 'nope', '--', 'true'] : [verb, 'nope'];
      await fails(args, /no VM named nope; see `sandboxvm list`/);
    }
  });

  test('bad names are refused before anything touches the disk', async () => {
    for (const name of ['../etc', 'Dev', 'a/b', 'x-', 'x'.repeat(64), '.', 'a b']) {
      await fails(['create', name], /invalid VM name .* lowercase letters, digits and dashes/);
    }
    await fails(['start', '../../tmp'], /invalid VM name/);
  });

  test('bad sizes', async () => {
    await fails(['create', 'sized', '--memory', 'lots'], /invalid memory size "lots"/);
    await fails(['create', 'sized', '--cpus', '0'], /cpus must be between 1 and 64/);
    await fails(['create', 'sized', '--disk', '1.5G'], /disk size must be whole GiB/);
    await fails(['create', 'sized', '--disk', '1K'], /disk size must be whole GiB: 1K is not; use e\.g\. 10G/);
    await fails(['create', 'sized', '--disk', '20'], /did you mean 20G\?/);
    await fails(['create', 'sized', '--memory', '64M'], /memory must be between 128M and 256G \(got 64M\)/);
  });

  test('arguments: `--` ends the options, unknown options say what the command takes', async () => {
    await fails(['rm', '--', 'service'], /no VM named service; see `sandboxvm list`/);
    const r = await home.cli(['exec', 'up', 'ls', '-la']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^sandboxvm: exec has no option -l \(it takes --cwd, --env, --timeout, --undo-point\); the command goes after `--`: sandboxvm exec up -- ls -la\n/);
    await fails(['exec', 'up', '--timeout', '8d', '--', 'true'], /--timeout 8d is past the limit of 7 days/);
    await fails(['exec', 'up', '--timeout', 'soon', '--', 'true'], /invalid --timeout "soon"/);
    const extra = await home.cli(['start', 'down', 'up']);
    assert.equal(extra.code, 2);
    assert.match(extra.stderr, /^sandboxvm: start takes one argument \(<name>\); unexpected "up"\n/);
    await fails(['attach', 'up', 'abc'], /"abc" is not a session id/);
  });

  test('duplicate name', async () => {
    await fails(['create', 'down'], /a VM named down already exists/);
  });

  test('wrong states', async () => {
    await fails(['start', 'up'], /up is running already/);
    await fails(['pause', 'down'], /cannot pause down: it is stopped; start it with `sandboxvm start down`/);
    await fails(['resume', 'up'], /up is running already/);
    await fails(['save', 'down'], /cannot save down: it is stopped \(allowed when running or paused\)/);
    await fails(['exec', 'down', '--', 'true'], /down is stopped; start it with `sandboxvm start down`/);
    await fails(['stop', 'down'], /down is stopped already/);
    await fails(['rm', 'up'], /up is running; stop it first/);
    await home.ok(['pause', 'up']);
    try {
      await fails(['exec', 'up', '--', 'true'], /up is paused; resume it with `sandboxvm resume up`/);
      await fails(['pause', 'up'], /up is paused already/);
    } finally {
      await home.ok(['resume', 'up']);
    }
  });

  test('QEMU missing or too old', async () => {
    const other = new TestHome({ SANDBOXVM_QEMU: '/nonexistent/qemu-system-x86_64' });
    try {
      await fails(['create', 'q'], /QEMU was not found .*apt-get install qemu-system-x86/, other);
      const fake = path.join(other.dir, 'old-qemu');
      fs.writeFileSync(fake, '#!/bin/sh\necho "QEMU emulator version 5.2.0"\n', { mode: 0o755 });
      await other.cli(['service', 'stop']);
      await fails(['create', 'q'], /QEMU 5\.2\.0 at .* is too old: 7\.0 or newer is needed/, other, { SANDBOXVM_QEMU: fake });
    } finally {
      await other.dispose();
    }
  });

  test('an image build that fails says where it failed and leaves no half-built image', async () => {
    const cache = fs.mkdtempSync('/tmp/sbxt-cache-');
    const other = new TestHome({ SANDBOXVM_IMAGE_CACHE: cache, SANDBOXVM_SUITE: 'no-such-suite' });
    try {
      const message = await fails(['create', 'img'], /building the base image failed at step \d+ .*see .*build-[0-9a-f]+\.log/, other);
      const log = /see (\S+\.log)/.exec(message)![1];
      assert.ok(fs.existsSync(log), 'the build log is kept');
      assert.deepEqual(fs.readdirSync(cache).filter((f) => f.startsWith('base-') || f.startsWith('stage1-')), [], 'no image published');
      assert.match(await other.ok(['list']), /No VMs/);
    } finally {
      await other.dispose();
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });

  test('a full disk: DiskFull, and no half-created VM', async (t) => {
    if (process.getuid?.() !== 0) return t.skip('needs root to mount a small tmpfs');
    const other = new TestHome();
    const vms = path.join(other.dir, 'vms');
    fs.mkdirSync(vms);
    assert.equal(spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', vms]).status, 0);
    try {
      spawnSync('dd', ['if=/dev/zero', `of=${path.join(vms, '.filler')}`, 'bs=4k', 'count=14'], { stdio: 'ignore' });
      await fails(['create', 'full'], /the disk holding .* is full; free some space and try again/, other);
      assert.deepEqual(fs.readdirSync(vms), ['.filler'], 'no staging directory left behind');
    } finally {
      await other.cli(['service', 'stop']);
      spawnSync('umount', ['-l', vms]);
      await other.dispose();
    }
  });
});
