/**
 * vm: the lifecycle of one real guest under QEMU, driven through the CLI.
 * Procedure: create a VM (linked clone), start it, run commands in it, pause and resume it, save
 * it with a process running and restore it, stop it gracefully, remove it; checking each step's
 * effect in the guest and on disk.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TestHome, pidsMatching, waitFor } from './fixture';

describe('vm: lifecycle', { timeout: 600_000 }, () => {
  let home: TestHome;
  before(() => {
    home = new TestHome();
  });
  after(() => home.dispose());

  test('create makes a linked clone and a config, and nothing else', async () => {
    await home.createdVm('dev', ['--cpus', '1', '--disk', '6G']);
    const dir = home.vmDir('dev');
    const info = JSON.parse(spawnSync('qemu-img', ['info', '--output=json', path.join(dir, 'disk.qcow2')], { encoding: 'utf8' }).stdout);
    assert.equal(info.format, 'qcow2');
    assert.equal(info['virtual-size'], 6 * 1024 ** 3);
    assert.match(info['backing-filename'], /base-[0-9a-f]+\/base\.qcow2$/);
    assert.ok(fs.statSync(path.join(dir, 'disk.qcow2')).size < 2 * 1024 * 1024, 'the overlay is small');
    assert.deepEqual(fs.readdirSync(dir).sort(), ['disk.qcow2', 'vm.json']);
    const list = JSON.parse(await home.ok(['list', '--json']));
    assert.equal(list.length, 1);
    assert.equal(list[0].state, 'stopped');
  });

  test('start returns once the agent answers; info reports the accelerator and pids', async () => {
    const out = await home.ok(['start', 'dev']);
    assert.match(out, /dev is running/);
    const info = JSON.parse(await home.ok(['info', 'dev', '--json']));
    assert.equal(info.state, 'running');
    assert.equal(info.runtime.agent.connected, true);
    assert.ok(Date.now() - info.runtime.agent.lastHeartbeatAt < 5000);
    assert.equal(info.runtime.agent.responding, true);
    assert.ok(['tcg', 'kvm', 'hvf', 'whpx'].includes(info.runtime.accel));
    assert.ok(pidsMatching(`qemu-system.*${home.vmDir('dev')}`).includes(info.runtime.qemuPid));
    assert.equal(info.runtime.agent.hostname, 'dev');
  });

  test('exec streams stdout and stderr apart and returns the exit code', async () => {
    const r = await home.cli(['exec', 'dev', '--', 'sh', '-c', 'echo to-out; echo to-err >&2; exit 7']);
    assert.equal(r.code, 7);
    assert.equal(r.stdout, 'to-out\n');
    assert.equal(r.stderr, 'to-err\n');
    const uname = await home.cli(['exec', 'dev', '--', 'uname', '-s']);
    assert.equal(uname.code, 0);
    assert.equal(uname.stdout, 'Linux\n');
  });

  test('exec passes stdin, env and cwd; a missing command is an error', async () => {
    const r = await home.cli(['exec', 'dev', '--env', 'GREETING=hi', '--cwd', '/tmp', '--', 'sh', '-c', 'echo "$GREETING $(pwd)"; tr a-z A-Z'], { input: 'piped text\n' });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, 'hi /tmp\nPIPED TEXT\n');
    const missing = await home.cli(['exec', 'dev', '--', 'no-such-command-here']);
    assert.notEqual(missing.code, 0);
    assert.match(missing.stderr, /no-such-command-here/);
  });

  test('a large output arrives whole (flow control end to end)', async () => {
    const r = await home.cli(['exec', 'dev', '--', 'sh', '-c', 'head -c 3000000 /dev/zero | tr "\\0" x']);
    assert.equal(r.code, 0);
    assert.equal(r.stdout.length, 3_000_000);
    assert.ok(/^x+$/.test(r.stdout));
  });

  test('pause stops the guest, resume continues it', async () => {
    await home.ok(['pause', 'dev']);
    const paused = JSON.parse(await home.ok(['info', 'dev', '--json']));
    assert.equal(paused.state, 'paused');
    const status = spawnSync('sh', ['-c', `cat /proc/${paused.runtime.qemuPid}/stat`], { encoding: 'utf8' }).stdout;
    assert.ok(status.length > 0, 'QEMU is still there while paused');
    const wrong = await home.cli(['pause', 'dev']);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /dev is paused already/);
    await home.ok(['resume', 'dev']);
    assert.equal((await home.cli(['exec', 'dev', '--', 'true'])).code, 0);
  });

  test('save then start restores the running state: a process started before is alive after', async () => {
    const pid = (await home.ok(['exec', 'dev', '--', 'sh', '-c', 'setsid sleep 100000 >/dev/null 2>&1 & echo $!'])).trim();
    assert.match(pid, /^\d+$/);
    // A state saved hours ago wakes up with its clock hours behind: put the guest's clock back 3 h.
    await home.ok(['exec', 'dev', '--', 'date', '-u', '-s', `@${Math.floor(Date.now() / 1000) - 3 * 3600}`]);
    await home.ok(['save', 'dev']);
    const saved = JSON.parse(await home.ok(['info', 'dev', '--json']));
    assert.equal(saved.state, 'saved');
    assert.ok(fs.statSync(path.join(home.vmDir('dev'), 'saved.state')).size > 1_000_000);
    assert.equal(pidsMatching(`qemu-system.*${home.vmDir('dev')}`).length, 0, 'QEMU ended after save');
    const t0 = Date.now();
    await home.ok(['start', 'dev']);
    const restoreMs = Date.now() - t0;
    const info = JSON.parse(await home.ok(['info', 'dev', '--json']));
    assert.equal(info.runtime.boot.kind, 'restore');
    const alive = await home.cli(['exec', 'dev', '--', 'sh', '-c', `kill -0 ${pid} && cat /proc/${pid}/cmdline | tr '\\0' ' '`]);
    assert.equal(alive.code, 0, `process ${pid} is gone after restore`);
    assert.match(alive.stdout, /sleep 100000/);
    assert.equal(fs.existsSync(path.join(home.vmDir('dev'), 'saved.state')), false, 'the saved state is consumed');
    const before = Date.now() / 1000;
    const guestNow = Number((await home.ok(['exec', 'dev', '--', 'date', '+%s.%N'])).trim());
    const after = Date.now() / 1000;
    assert.ok(guestNow > before - 1 && guestNow < after + 1, `the guest clock is right within a second after restore (guest ${guestNow}, host ${before}..${after})`);
    process.stderr.write(`# restore took ${restoreMs} ms through the CLI\n`);
  });

  test('a session cut off by a save is picked up with `sandboxvm attach` after start', async () => {
    const running = home.cli(['exec', 'dev', '--', 'sh', '-c', 'sleep 3.1; echo after; exit 3']);
    await waitFor('the sleep to run', async () => ((await home.cli(['exec', 'dev', '--', 'pgrep', '-f', 'sleep 3.1'])).code === 0 ? true : undefined));
    await home.ok(['save', 'dev']);
    const cut = await running;
    assert.equal(cut.code, 255);
    const hint = /sandboxvm attach dev (\d+)/.exec(cut.stderr);
    assert.ok(hint, cut.stderr);
    await home.ok(['start', 'dev']);
    const picked = await home.cli(['attach', 'dev', hint[1]]);
    assert.equal(picked.stdout, 'after\n', picked.stderr);
    assert.equal(picked.code, 3);
    const again = await home.cli(['attach', 'dev', hint[1]]);
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, new RegExp(`no session ${hint[1]} to attach to`));
    const bad = await home.cli(['attach', 'dev', 'x']);
    assert.match(bad.stderr, /"x" is not a session id/);
  });

  test('stop is graceful: the agent shuts the guest down', async () => {
    await home.ok(['stop', 'dev']);
    const info = JSON.parse(await home.ok(['info', 'dev', '--json']));
    assert.equal(info.state, 'stopped');
    assert.equal(pidsMatching(`worker.js --dir ${home.vmDir('dev')}`).length, 0);
    const log = fs.readFileSync(path.join(home.vmDir('dev'), 'worker.log'), 'utf8');
    assert.match(log, /stop: asking the guest agent to shut down/);
    assert.doesNotMatch(log.split('asking the guest agent')[1], /killing QEMU/);
  });

  test('restart and stop --force', async () => {
    await home.ok(['start', 'dev']);
    await home.ok(['restart', 'dev']);
    assert.equal((await home.cli(['exec', 'dev', '--', 'true'])).code, 0);
    await home.ok(['stop', '--force', 'dev']);
    assert.equal(JSON.parse(await home.ok(['info', 'dev', '--json'])).state, 'stopped');
  });

  test('rm refuses a running VM without --force, then removes every file', async () => {
    await home.ok(['start', 'dev']);
    const refused = await home.cli(['rm', 'dev']);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /dev is running; stop it first or use `sandboxvm rm --force dev`/);
    assert.ok(fs.existsSync(home.vmDir('dev')));
    await home.ok(['rm', '--force', 'dev']);
    assert.deepEqual(home.files(), []);
    assert.equal(pidsMatching(home.vmDir('dev')).length, 0, 'no worker or QEMU left');
    assert.match(await home.ok(['list']), /No VMs/);
  });
});
