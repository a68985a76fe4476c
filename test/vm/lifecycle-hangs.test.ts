/**
 * vm: what the lifecycle does when the guest does not cooperate, and the operations that must not
 * wait on it.
 * Procedure: create with a disk below the base image (refused, naming the minimum), then with a
 * larger one and boot it (the root filesystem fills the disk). Kill -9 the guest's agent loop, then
 * its relay, from inside the guest: the same boot carries on and exec works again. Stop the Node
 * agent (kill -STOP; the relay stays alive and answers data frames): exec fails within seconds
 * saying the agent is not responding, `list` and `info` answer at once, and `list` says it is
 * responding again within seconds of kill -CONT. Stop QEMU itself on the host (a whole-guest
 * stall): `exec --timeout` bounds the whole command. Restart with a `stop` issued meanwhile: the
 * stop lands after the restart, never between its halves. `stop --force` while a start is booting
 * returns at once and the start says "turned off". Last, a fork bomb: exec fails within seconds
 * and `stop --force` turns the VM off.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { TestHome, pidsMatching, waitFor } from './fixture';

const VM = 'hang';

describe('vm: hangs and lifecycle', { timeout: 900_000 }, () => {
  let home: TestHome;
  before(() => {
    home = new TestHome();
  });
  after(() => home.dispose());

  const timed = async <T>(f: () => Promise<T>): Promise<[T, number]> => {
    const t0 = Date.now();
    const r = await f();
    return [r, Date.now() - t0];
  };
  const bootId = async () => (await home.ok(['exec', VM, '--', 'cat', '/proc/sys/kernel/random/boot_id'])).trim();
  const agentColumn = async () => (await home.ok(['list'])).split('\n').find((l) => l.startsWith(`${VM} `)) ?? '';
  const note = (m: string) => process.stderr.write(`# ${m}\n`);
  /** Runs `script` in the guest detached from the exec that starts it (it outlives the session). */
  const inBackground = (script: string) => home.ok(['exec', VM, '--', 'sh', '-c', `setsid sh -c '${script}' >/dev/null 2>&1 </dev/null &`]);

  test('create: a disk below the base image is refused with the minimum; nothing is left', async () => {
    const r = await home.cli(['create', 'tiny', '--disk', '2G']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /the disk must be at least 4G, the size of the base image \(got 2G\)/);
    assert.deepEqual(home.files().filter((f) => f.includes('tiny')), []);
  });

  test('create: a disk larger than the base image is all usable in the guest', async () => {
    await home.bootedVm(VM, ['--disk', '6G']);
    const size = Number((await home.ok(['exec', VM, '--', 'df', '-B1', '--output=size', '/'])).trim().split('\n').pop());
    note(`root filesystem ${(size / 1024 ** 3).toFixed(2)} GiB on a 6 GiB disk`);
    assert.ok(size > 5.5 * 1024 ** 3 && size <= 6 * 1024 ** 3, `df says ${size} bytes`);
  });

  test('PID 1 supervises: kill -9 of the agent loop, then of the relay; same boot, exec works again', async () => {
    const boot = await bootId();
    for (const victim of ['agent-loop', 'sandboxvm-relay']) {
      const t0 = Date.now();
      await home.cli(['exec', VM, '--', 'sh', '-c', `kill -9 $(pgrep -x ${victim})`]);
      const again = await waitFor(`exec after kill -9 of ${victim}`, async () => {
        const r = await home.cli(['exec', VM, '--', 'cat', '/proc/sys/kernel/random/boot_id']);
        return r.code === 0 ? r.stdout.trim() : undefined;
      }, 60_000);
      note(`exec works ${Date.now() - t0} ms after kill -9 of ${victim}`);
      assert.equal(again, boot, 'the same boot (PID 1 did not die)');
    }
    const init = await home.ok(['exec', VM, '--', 'sh', '-c', 'pgrep -cx agent-loop; pgrep -cx sandboxvm-relay']);
    assert.equal(init, '1\n1\n', 'one agent loop and one relay: the killed loop left nothing behind');
  });

  test('agent stopped, relay alive: exec fails within seconds, info and list answer at once, list sees it recover', async () => {
    await inBackground('sleep 1; kill -STOP $(pgrep -x node); sleep 14; kill -CONT $(pgrep -x node)');
    await new Promise((r) => setTimeout(r, 2000));
    const [r, execMs] = await timed(() => home.cli(['exec', VM, '--', 'echo', 'hi'], { timeoutMs: 60_000 }));
    note(`exec with the agent stopped: rc ${r.code} after ${execMs} ms: ${r.stderr.trim()}`);
    assert.notEqual(r.code, 0);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /the guest agent is not responding \(last heartbeat \d+ s ago\); see `sandboxvm logs hang`/);
    assert.ok(execMs < 10_000, `exec took ${execMs} ms`);
    // Refused at once now that the silence is known.
    const [r2, refuseMs] = await timed(() => home.cli(['exec', VM, '--', 'echo', 'hi'], { timeoutMs: 60_000 }));
    assert.notEqual(r2.code, 0);
    assert.ok(refuseMs < 3000, `the second exec took ${refuseMs} ms`);
    const [info, infoMs] = await timed(() => home.ok(['info', VM]));
    const [column, listMs] = await timed(agentColumn);
    note(`info ${infoMs} ms, list ${listMs} ms: ${column}`);
    assert.ok(infoMs < 3000 && listMs < 3000);
    assert.match(info, /Agent: +not responding \(last heartbeat \d+s ago\)/);
    assert.match(column, /not responding \(last heartbeat \d+s ago\)/);
    // The age is computed when printed: it grows while the agent stays silent.
    const age = (text: string) => Number(/last heartbeat (\d+)s ago/.exec(text)![1]);
    await new Promise((r) => setTimeout(r, 2500));
    assert.ok(age(await agentColumn()) >= age(column) + 2, 'the age keeps growing');
    // After kill -CONT (14 s after the STOP) list says so within a few seconds, without an info.
    const ok = await waitFor('list to show the agent ok', async () => ((await agentColumn()).endsWith('ok') ? Date.now() : undefined), 60_000);
    assert.equal(await home.ok(['exec', VM, '--', 'echo', 'hi']), 'hi\n');
    // The worker logs (host clock) when it hears the agent again; list must say so at once.
    const heard = readFileSync(path.join(home.vmDir(VM), 'worker.log'), 'utf8').split('\n').filter((l) => l.includes('the agent is responding again')).pop();
    assert.ok(heard, 'the worker logged the recovery');
    const heardAt = Date.parse(heard.split(' ')[0]);
    note(`list shows ok ${ok - heardAt} ms after the worker heard the agent again`);
    assert.ok(ok - heardAt < 2000, `list showed ok ${ok - heardAt} ms after the recovery`);
  });

  test('whole guest stalled (QEMU stopped on the host): --timeout bounds exec; info answers at once', async () => {
    const qemuPid = JSON.parse(await home.ok(['info', VM, '--json'])).runtime.qemuPid as number;
    assert.ok(pidsMatching(`qemu-system.*${home.vmDir(VM)}`).includes(qemuPid));
    process.kill(qemuPid, 'SIGSTOP');
    try {
      const [r, ms] = await timed(() => home.cli(['exec', VM, '--timeout', '2s', '--', 'echo', 'hi'], { timeoutMs: 60_000 }));
      note(`exec --timeout 2s on a stalled guest: rc ${r.code} after ${ms} ms`);
      assert.equal(r.code, 124);
      assert.ok(ms < 5000, `exec --timeout 2s took ${ms} ms`);
      const [r2, ms2] = await timed(() => home.cli(['exec', VM, '--', 'echo', 'hi'], { timeoutMs: 60_000 }));
      note(`exec on a stalled guest: rc ${r2.code} after ${ms2} ms`);
      assert.notEqual(r2.code, 0);
      assert.match(r2.stderr, /not responding/);
      assert.ok(ms2 < 10_000);
      const [, infoMs] = await timed(() => home.ok(['info', VM]));
      assert.ok(infoMs < 3000, `info took ${infoMs} ms`);
    } finally {
      process.kill(qemuPid, 'SIGCONT');
    }
    await waitFor('the agent to respond again', async () => ((await agentColumn()).endsWith('ok') ? true : undefined), 60_000);
  });

  test('restart is one operation: a stop issued during it lands after it, not between its halves', async () => {
    // The guest takes 5 s to power off, so the stop issued while the restart is stopping is sure
    // to be queued before the restart's own start would be.
    const tool = '/opt/sandboxvm/bin/poweroff';
    await home.ok(['exec', VM, '--', 'sh', '-c', `cp ${tool} ${tool}.real && printf '#!/bin/sh\\nsleep 5\\nexec ${tool}.real\\n' > ${tool}`]);
    try {
      const restart = home.cli(['restart', VM]);
      await waitFor('the restart to begin stopping', async () => (JSON.parse(await home.ok(['list', '--json']))[0].state === 'stopping' ? true : undefined), 60_000);
      const stop = await home.cli(['stop', VM]);
      const r = await restart;
      assert.equal(r.code, 0, r.stderr);
      assert.equal(stop.code, 0, `stop failed: ${stop.stderr}`);
      assert.equal(JSON.parse(await home.ok(['list', '--json']))[0].state, 'stopped');
    } finally {
      if (JSON.parse(await home.ok(['list', '--json']))[0].state !== 'running') await home.ok(['start', VM]);
      await home.ok(['exec', VM, '--', 'mv', `${tool}.real`, tool]);
      await home.ok(['stop', '--force', VM]);
    }
  });

  test('stop --force during a start returns at once; the start ends with "turned off"', async () => {
    const start = home.cli(['start', VM]);
    await waitFor('the start to be under way', async () => (JSON.parse(await home.ok(['list', '--json']))[0].state === 'starting' ? true : undefined), 60_000);
    await new Promise((r) => setTimeout(r, 1000)); // QEMU is booting
    const [stop, ms] = await timed(() => home.cli(['stop', '--force', VM]));
    note(`stop --force during a boot returned in ${ms} ms`);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(ms < 3000, `stop --force took ${ms} ms`);
    const s = await start;
    assert.notEqual(s.code, 0);
    assert.match(s.stderr, /hang was turned off \(`sandboxvm stop --force hang`\) while it was booting/);
    assert.equal(JSON.parse(await home.ok(['list', '--json']))[0].state, 'stopped');
    assert.deepEqual(pidsMatching(`qemu-system.*${home.vmDir(VM)}`), []);
    assert.deepEqual(home.files().filter((f) => /\.sock$|worker\.json$/.test(f)), [], 'no sockets or worker record left');
  });

  test('fork bomb: exec fails within seconds saying so, list answers, stop --force turns it off', async () => {
    await home.ok(['start', VM]);
    await inBackground('f(){ f|f& }; f');
    const [r, ms] = await timed(() => home.cli(['exec', VM, '--', 'echo', 'hi'], { timeoutMs: 60_000 }));
    note(`exec after a fork bomb: rc ${r.code} after ${ms} ms: ${r.stderr.trim()}`);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /not responding/);
    assert.ok(ms < 15_000, `exec took ${ms} ms`);
    const [column, listMs] = await timed(agentColumn);
    assert.ok(listMs < 3000);
    assert.match(column, /not responding/);
    const [stop, stopMs] = await timed(() => home.cli(['stop', '--force', VM]));
    note(`stop --force of a fork-bombed guest: ${stopMs} ms`);
    assert.equal(stop.code, 0, stop.stderr);
    assert.ok(stopMs < 5000);
  });
});
