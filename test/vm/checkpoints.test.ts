/**
 * vm: checkpoints (runtime/service/checkpoints.ts) against a real guest.
 * Procedure, on one 512 MiB VM:
 *  1. Running and stopped checkpoints: a random file is hashed in the guest, a counter process
 *     (it counts SIGUSR1s in a shell variable, prints on SIGUSR2) is at 3, and a session waits
 *     for a line; checkpoint `run1` of the running VM. Then the file changes, the counter goes to
 *     7, the VM stops, checkpoint `stop2`. Applying `run1` brings the VM back running with the
 *     first file's hash, the counter at 3 in the same process, and the session attachable and
 *     answering; applying `stop2` (the running state is checkpointed first, by default) leaves
 *     the VM stopped with the second file. The tree then branches: run1 has two children.
 *  2. Deleting run1 (two children: its layer stays, its memory goes) and a leaf frees space; the
 *     rest still apply; every layer passes `qemu-img check`.
 *  3. Errors: unknown VM, unknown checkpoint, a name taken, apply while the VM is starting.
 *  4. A chain of 20 checkpoints (16 running, 4 stopped: a guest file and the counter differ at
 *     each) applied in random order: the file and, for running ones, the counter match every
 *     time; `qemu-img check` is clean after.
 *  5. exec --undo-point pauses the guest well under a second; undo brings the deleted file back.
 *  6. A crash: the service (twice) or the worker is killed (SIGKILL) while a running checkpoint is
 *     taken; the next service recovers the index: the VM runs, no operation is left pending, and
 *     the new checkpoint, when listed, applies, as does the one before it.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import type { SessionEvents } from '../../runtime/client/sessionClient';
import type { CheckpointList } from '../../runtime/service/checkpoints';
import type { CheckpointView } from '../../runtime/service/checkpointTree';
import { TestHome, waitFor } from './fixture';

const VM = 'ck';
const COUNTER = `n=0; trap 'n=$((n+1))' USR1; trap 'echo $n > /root/count.out' USR2; echo $$ > /root/counter.pid; while :; do sleep 0.2; done`;

describe('vm: checkpoints', { timeout: 3_600_000 }, () => {
  let home: TestHome;

  before(async () => {
    home = new TestHome();
    await home.bootedVm(VM);
  });
  after(async () => {
    await home.dispose();
  });

  const sh = (script: string) => home.ok(['exec', VM, '--', 'sh', '-c', script], { timeoutMs: 120_000 });
  const fileHash = async () => (await sh('sha256sum /root/data | cut -d" " -f1')).trim();
  const newData = async () => (await sh('head -c 65536 /dev/urandom > /root/data && sync && sha256sum /root/data | cut -d" " -f1')).trim();
  const startCounter = () => sh(`rm -f /root/count.out; setsid sh -c '${COUNTER.replace(/'/g, `'\\''`)}' </dev/null >/dev/null 2>&1 & sleep 0.5; cat /root/counter.pid`);
  const bump = (times: number) => sh(`for i in $(seq ${times}); do kill -USR1 $(cat /root/counter.pid); sleep 0.3; done`);
  /** The counter's pid and value, asked of the process itself. */
  const counter = async () => {
    const out = await sh('rm -f /root/count.out; kill -USR2 $(cat /root/counter.pid); for i in $(seq 50); do [ -s /root/count.out ] && break; sleep 0.1; done; echo $(cat /root/counter.pid) $(cat /root/count.out)');
    const [pid, value] = out.trim().split(' ').map(Number);
    return { pid, value };
  };
  const list = async () => JSON.parse(await home.ok(['checkpoint', 'list', VM, '--json'])) as CheckpointList;
  const flat = (tree: CheckpointView[]): CheckpointView[] => tree.flatMap((v) => [v, ...flat(v.children)]);
  const state = async () => JSON.parse(await home.ok(['info', VM, '--json'])).state as string;
  const qemuImgCheck = () => {
    const dir = home.vmDir(VM);
    const files = [path.join(dir, 'disk.qcow2'), ...(fs.existsSync(path.join(dir, 'layers')) ? fs.readdirSync(path.join(dir, 'layers')).map((f) => path.join(dir, 'layers', f)) : [])].filter((f) => fs.existsSync(f));
    for (const f of files) {
      const r = spawnSync('qemu-img', ['check', '-U', f], { encoding: 'utf8' });
      assert.equal(r.status, 0, `qemu-img check ${f}: ${r.stdout}${r.stderr}`);
    }
    return files.length;
  };

  let h1 = '';
  let h2 = '';

  test('running and stopped checkpoints: apply brings back files, a process in memory and a session', async () => {
    h1 = await newData();
    const pid = Number((await startCounter()).trim());
    await bump(3);
    assert.deepEqual(await counter(), { pid, value: 3 });

    const service = await ServiceClient.connect({ home: home.dir, autoStart: false });
    let sessionId: number;
    try {
      const sessions = await service.attach(VM);
      const s = await sessions.open({ kind: 'exec', argv: ['sh', '-c', 'read x; echo got-$x'], keepOnDisconnect: true }, { onData: () => undefined, onExit: () => undefined });
      sessionId = s.id;
      const created = await service.createCheckpoint(VM, 'run1');
      assert.equal(created.state, 'running');
      assert.ok(created.pausedMs !== undefined && created.pausedMs > 0, 'the pause is reported');
      assert.ok(created.sizeBytes > 1e6, 'the memory state is counted');
      sessions.dispose();
    } finally {
      service.dispose();
    }

    h2 = await newData();
    assert.notEqual(h2, h1);
    await bump(4);
    assert.equal((await counter()).value, 7);
    await home.ok(['stop', VM]);
    const stop2 = JSON.parse(await home.ok(['checkpoint', 'create', VM, 'stop2', '--json']));
    assert.equal(stop2.state, 'stopped');

    const applied = JSON.parse(await home.ok(['checkpoint', 'apply', VM, 'run1', '--json']));
    assert.equal(applied.saved, undefined, 'a stopped VM whose disk did not change since stop2 needs no new checkpoint');
    assert.equal(applied.info.state, 'running', 'a running checkpoint comes back running');
    assert.equal(await fileHash(), h1);
    assert.deepEqual(await counter(), { pid, value: 3 }, 'the same process, with the value it had at the checkpoint');

    const again = await ServiceClient.connect({ home: home.dir, autoStart: false });
    try {
      const sessions = await again.attach(VM);
      let out = '';
      let exit: number | null | undefined;
      const events: SessionEvents = {
        onData: (_s, d) => {
          out += d.toString();
        },
        onExit: (r) => {
          exit = r.code;
        },
      };
      const { session } = await sessions.attach(sessionId!, events, { stdout: 0, stderr: 0 });
      await session.write('hello\n');
      await waitFor('the session to answer', () => exit !== undefined, 60_000);
      assert.equal(out.trim(), 'got-hello');
      assert.equal(exit, 0);
      sessions.dispose();
    } finally {
      again.dispose();
    }

    const toStop2 = JSON.parse(await home.ok(['checkpoint', 'apply', VM, 'stop2', '--json']));
    assert.equal(toStop2.saved?.state, 'running', 'the running state being left was checkpointed first');
    assert.equal(toStop2.info.state, 'stopped');
    await home.ok(['start', VM]);
    assert.equal(await fileHash(), h2);

    const tree = await list();
    assert.equal(tree.tree.length, 1);
    const run1 = tree.tree[0];
    assert.equal(run1.name, 'run1');
    assert.deepEqual(run1.children.map((c) => c.name).sort(), ['before applying stop2', 'stop2'], 'a branch: two children');
    assert.equal(flat(tree.tree).find((c) => c.current)?.name, 'stop2');
    const text = await home.ok(['checkpoint', 'list', VM]);
    assert.match(text, /stop2 .*\n\s+[│ ]*└─ ▶ now \(running\)/);
  });

  test('delete frees space, keeps a layer two children need, and leaves the rest applicable', async () => {
    const before = await list();
    const run1 = await home.ok(['checkpoint', 'delete', VM, 'run1', '--json']).then(JSON.parse);
    assert.ok(run1.reclaimedBytes > 20e6, `its memory state is freed (${run1.reclaimedBytes} bytes)`);
    const leaf = await home.ok(['checkpoint', 'delete', VM, 'before applying stop2', '--json']).then(JSON.parse);
    assert.ok(leaf.reclaimedBytes > 20e6, `a leaf goes whole (${leaf.reclaimedBytes} bytes)`);
    const after = await list();
    assert.deepEqual(flat(after.tree).map((c) => c.name), ['stop2']);
    assert.ok(after.totalBytes < before.totalBytes - 40e6);
    await home.ok(['stop', VM]);
    await list(); // a stopped VM: run1's layer, now needed by stop2 only, is merged into it
    const index = JSON.parse(fs.readFileSync(path.join(home.vmDir(VM), 'checkpoints.json'), 'utf8'));
    assert.equal(index.nodes.length, 1, 'no hidden layer is left');
    qemuImgCheck();
    await home.ok(['checkpoint', 'apply', VM, 'stop2', '--discard-current']);
    await home.ok(['start', VM]);
    assert.equal(await fileHash(), h2);
  });

  test('errors: unknown VM or checkpoint, a name taken, apply while starting', async () => {
    const unknownVm = await home.cli(['checkpoint', 'list', 'nope']);
    assert.equal(unknownVm.code, 1);
    assert.match(unknownVm.stderr, /no VM named nope/);
    const unknown = await home.cli(['checkpoint', 'apply', VM, 'nothing']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /ck has no checkpoint "nothing"; see `sandboxvm checkpoint list ck`/);
    const taken = await home.cli(['checkpoint', 'create', VM, 'stop2']);
    assert.equal(taken.code, 1);
    assert.match(taken.stderr, /already has a checkpoint named "stop2"/);
    const badAction = await home.cli(['checkpoint', 'frobnicate', VM]);
    assert.match(badAction.stderr, /unknown checkpoint action "frobnicate": use create, list, apply, rename, delete/);

    await home.ok(['stop', '--force', VM]);
    const service = await ServiceClient.connect({ home: home.dir, autoStart: false });
    try {
      const starting = service.start(VM);
      await waitFor('the VM to be starting', async () => (await service.info(VM)).state === 'starting');
      await assert.rejects(service.applyCheckpoint(VM, 'stop2'), /cannot apply a checkpoint to ck: it is starting .*try again when that is done/);
      await starting;
    } finally {
      service.dispose();
    }
    const renamed = await home.ok(['checkpoint', 'rename', VM, 'stop2', 'second file']);
    assert.match(renamed, /Renamed checkpoint [0-9a-f]{8} to "second file"/);
  });

  test('a chain of 20 checkpoints applied in random order: files and the process match each time', async () => {
    let pid = Number((await startCounter()).trim());
    const made: { name: string; hash: string; pid: number; value: number; running: boolean }[] = [];
    for (let i = 1; i <= 20; i++) {
      const hash = await newData();
      await bump(1);
      const value = (await counter()).value;
      const running = i % 5 !== 0;
      if (!running) await home.ok(['stop', '--force', VM]); // the data was synced: what the disk holds
      await home.ok(['checkpoint', 'create', VM, `c${i}`]);
      made.push({ name: `c${i}`, hash, pid, value, running });
      if (running) assert.equal((await counter()).pid, pid);
      else {
        // A fresh boot: the counter is gone (its pid file names a pid another process may now have).
        await home.ok(['start', VM]);
        pid = Number((await startCounter()).trim());
      }
    }
    assert.equal(made[19].running, false);
    const order = made.map((m) => m).sort(() => Math.random() - 0.5);
    for (const m of order) {
      await home.ok(['checkpoint', 'apply', VM, m.name, '--discard-current']);
      assert.equal(await state(), m.running ? 'running' : 'stopped', m.name);
      if (!m.running) await home.ok(['start', VM]);
      assert.equal(await fileHash(), m.hash, `${m.name}'s file`);
      if (m.running) assert.deepEqual(await counter(), { pid: m.pid, value: m.value }, `${m.name}'s counter`);
    }
    await home.ok(['stop', '--force', VM]);
    const tree = await list();
    assert.equal(flat(tree.tree).filter((c) => /^c\d+$/.test(c.name)).length, 20);
    assert.ok(qemuImgCheck() >= 20);
    await home.ok(['start', VM]);
  });

  test('exec --undo-point and undo: a running checkpoint in well under a second, and back to it', async () => {
    const before = await fileHash();
    const r = await home.cli(['exec', VM, '--undo-point', '--', 'sh', '-c', 'rm /root/data; sync']);
    assert.equal(r.code, 0, r.stderr);
    const paused = Number(/guest paused (\d+) ms/.exec(r.stderr)?.[1]);
    assert.ok(paused < 1000, `the guest was paused ${paused} ms`);
    assert.equal((await home.cli(['exec', VM, '--', 'test', '-e', '/root/data'])).code, 1);
    assert.match(await home.ok(['undo', VM]), /Undone: ck is back at "undo point 1" and running/);
    assert.equal(await fileHash(), before);
  });

  test('the service or the worker killed mid-checkpoint: the next service recovers a consistent list and a usable VM', async () => {
    const indexFile = path.join(home.vmDir(VM), 'checkpoints.json');
    const pending = () => {
      try {
        return JSON.parse(fs.readFileSync(indexFile, 'utf8')).pending !== undefined;
      } catch {
        return false; // being replaced
      }
    };
    for (const [victim, delayMs] of [['service', 0], ['service', 120], ['worker', 60]] as const) {
      const pid = victim === 'service' ? home.servicePid()! : JSON.parse(fs.readFileSync(path.join(home.vmDir(VM), 'worker.json'), 'utf8')).workerPid;
      await home.ok(['checkpoint', 'create', VM, `before-crash-${delayMs}`]);
      const creating = home.cli(['checkpoint', 'create', VM, `crash-${delayMs}`]);
      // Kill once the operation has recorded its intent (it is under way), after `delayMs` more.
      const deadline = Date.now() + 60_000;
      let seen = false;
      while (!(seen = pending()) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 2));
      assert.ok(seen, 'the checkpoint was under way');
      await new Promise((r) => setTimeout(r, delayMs));
      process.kill(pid, 'SIGKILL');
      await creating; // fails or succeeds: either is fine
      if (victim === 'worker') await waitFor('a new worker to take QEMU over', async () => ((await state()) === 'starting' ? undefined : true), 120_000);
      if ((await state()) === 'paused') await home.ok(['resume', VM]);
      const tree = await list(); // a new service, which recovers
      const names = flat(tree.tree).map((c) => c.name);
      assert.equal((await state()), 'running', 'the VM runs on');
      assert.equal((await sh('echo alive')).trim(), 'alive');
      if (names.includes(`crash-${delayMs}`)) {
        await home.ok(['checkpoint', 'apply', VM, `crash-${delayMs}`, '--discard-current']);
        if ((await state()) !== 'running') await home.ok(['start', VM]);
        assert.equal((await sh('echo back')).trim(), 'back');
        await home.ok(['checkpoint', 'apply', VM, `before-crash-${delayMs}`, '--discard-current']);
        if ((await state()) !== 'running') await home.ok(['start', VM]);
        assert.equal((await sh('echo back')).trim(), 'back');
      }
      const index = JSON.parse(fs.readFileSync(path.join(home.vmDir(VM), 'checkpoints.json'), 'utf8'));
      assert.equal(index.pending, undefined, 'no operation is left half done');
    }
    await home.ok(['stop', '--force', VM]);
    qemuImgCheck();
  });
});
