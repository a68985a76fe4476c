/**
 * vm: an interactive shell through a pty, and VMs outliving their service.
 * Procedure: boot a VM; run `sandboxvm shell` inside a host-side pty (node-pty) as a user's
 * terminal would, type into it, resize it, exit it with a code. Then kill -9 the service and check
 * the worker and QEMU live on and a new service adopts them; then kill -9 the worker and check a
 * new worker takes over the same QEMU (same guest boot) and a running exec session finishes through
 * it, with and without a service running; then kill -9 worker and QEMU together and check the VM reads
 * `stopped` with an error saying so, and starts again.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as pty from 'node-pty';
import { CLI, TestHome, pidsMatching, waitFor } from './fixture';

describe('vm: shell and adoption', { timeout: 600_000 }, () => {
  let home: TestHome;
  before(async () => {
    home = new TestHome();
    await home.bootedVm('box');
  });
  after(() => home.dispose());

  test('shell: a login shell over a pty, with raw input, resize and the exit code', async () => {
    const term = pty.spawn(process.execPath, [CLI, 'shell', 'box'], { cols: 100, rows: 30, env: home.env as Record<string, string>, name: 'xterm' });
    let screen = '';
    term.onData((d) => (screen += d));
    const exited = new Promise<number>((resolve) => term.onExit(({ exitCode }) => resolve(exitCode)));
    const expect = (re: RegExp, what: string) =>
      waitFor(what, () => (re.test(screen) ? true : undefined), 20_000).catch((err) => {
        term.kill('SIGKILL');
        throw new Error(`${err.message}; the terminal showed ${JSON.stringify(screen.slice(-400))}`);
      });
    await expect(/#\s*$/m, 'a root prompt');
    term.write('echo $((6*7)) $TERM; tty\r');
    await expect(/42 xterm/, 'the arithmetic');
    await expect(/\/dev\/pts\/\d+/, 'a pty in the guest');
    term.write('stty size\r');
    await expect(/30 100/, 'the initial size');
    term.resize(120, 40);
    // The resize travels CLI -> worker -> guest while the shell waits: ask until it shows (a loaded
    // host may take longer than any fixed pause).
    const asking = setInterval(() => term.write('stty size\r'), 500);
    await expect(/40 120/, 'the new size').finally(() => clearInterval(asking));
    // Ctrl-C reaches the guest's foreground process, not the CLI.
    term.write('sleep 1000\r');
    await new Promise((r) => setTimeout(r, 500));
    term.write('\x03');
    term.write('echo after-interrupt\r');
    await expect(/\rafter-interrupt\r*\n/, 'the shell after ^C');
    term.write('exit 3\r');
    assert.equal(await exited, 3);
  });

  test('kill -9 of the service: the VM keeps running and a new service adopts it', async () => {
    const before = JSON.parse(await home.ok(['info', 'box', '--json']));
    const servicePid = home.servicePid()!;
    assert.ok(servicePid > 0);
    process.kill(servicePid, 'SIGKILL');
    await waitFor('the service to die', () => (pidsMatching(`^${process.execPath} .*service.js`).includes(servicePid) ? undefined : true));
    assert.ok(pidsMatching(`worker.js --dir ${home.vmDir('box')}`).includes(before.runtime.workerPid), 'the worker lives on');
    assert.ok(pidsMatching(`qemu-system.*${home.vmDir('box')}`).includes(before.runtime.qemuPid), 'QEMU lives on');
    const after = JSON.parse(await home.ok(['info', 'box', '--json']));
    assert.notEqual(home.servicePid(), servicePid, 'a new service answered');
    assert.equal(after.state, 'running');
    assert.equal(after.runtime.workerPid, before.runtime.workerPid);
    assert.equal(after.runtime.qemuPid, before.runtime.qemuPid);
    const r = await home.cli(['exec', 'box', '--', 'cat', '/etc/hostname']);
    assert.equal(r.stdout, 'box\n');
  });

  const bootId = async () => (await home.cli(['exec', 'box', '--', 'cat', '/proc/sys/kernel/random/boot_id'])).stdout.trim();
  const waitTakenOver = (oldWorker: number) =>
    waitFor('a new worker to take the VM over', async () => {
      const i = JSON.parse(await home.ok(['info', 'box', '--json']));
      return i.state === 'running' && i.runtime?.workerPid !== oldWorker && i.runtime?.agent?.connected ? i : undefined;
    }, 60_000);

  test('kill -9 of the worker: a new worker takes over the running QEMU, and sessions live on', async () => {
    const info = JSON.parse(await home.ok(['info', 'box', '--json']));
    const boot = await bootId();
    assert.match(boot, /^[0-9a-f-]{36}$/);
    // A session of the dying worker: its client reconnects to the new worker and attaches again.
    const running = home.cli(['exec', 'box', '--', 'sh', '-c', 'sleep 3; echo survived; exit 7']);
    await waitFor('the sleep to run', async () => ((await home.cli(['exec', 'box', '--', 'pgrep', '-x', 'sleep'])).code === 0 ? true : undefined));
    process.kill(info.runtime.workerPid, 'SIGKILL');
    const after = await waitTakenOver(info.runtime.workerPid);
    assert.equal(after.runtime.qemuPid, info.runtime.qemuPid, 'the same QEMU');
    assert.equal(after.runtime.boot.kind, 'adopt');
    assert.equal(after.lastError, undefined);
    const lived = await running;
    assert.equal(lived.stdout, 'survived\n', lived.stderr);
    assert.equal(lived.code, 7);
    assert.equal(await bootId(), boot, 'the guest did not reboot');
    assert.equal(pidsMatching(`worker.js --dir ${home.vmDir('box')}`).length, 1, 'one worker');
    assert.match(fs.readFileSync(path.join(home.vmDir('box'), 'worker.log'), 'utf8'), /the agent kept 1 session\(s\) of the previous worker/);
  });

  test('a worker that dies while no service runs: the next service has its QEMU taken over', async () => {
    const info = JSON.parse(await home.ok(['info', 'box', '--json']));
    const boot = await bootId();
    await home.ok(['service', 'stop']);
    process.kill(info.runtime.workerPid, 'SIGKILL');
    await waitFor('the worker to die', () => (pidsMatching(`worker.js --dir ${home.vmDir('box')}`).length === 0 ? true : undefined));
    const after = await waitTakenOver(info.runtime.workerPid);
    assert.equal(after.runtime.qemuPid, info.runtime.qemuPid);
    assert.equal(await bootId(), boot);
  });

  test('worker and QEMU both killed: the VM reads stopped with the reason, and starts again', async () => {
    const info = JSON.parse(await home.ok(['info', 'box', '--json']));
    // The worker first, so it cannot see QEMU go and exit cleanly.
    process.kill(info.runtime.workerPid, 'SIGKILL');
    process.kill(info.runtime.qemuPid, 'SIGKILL');
    const stopped = await waitFor('the VM to read stopped', async () => {
      const i = JSON.parse(await home.ok(['info', 'box', '--json']));
      return i.state === 'stopped' ? i : undefined;
    });
    assert.match(stopped.lastError.message, /worker exited unexpectedly/);
    assert.match(stopped.lastError.message, /worker\.log/);
    for (const f of ['worker.json', 'agent.sock', 'qmp.sock']) assert.equal(fs.existsSync(path.join(home.vmDir('box'), f)), false, f);
    await home.ok(['start', 'box']);
    assert.equal((await home.cli(['exec', 'box', '--', 'true'])).code, 0);
  });
});
