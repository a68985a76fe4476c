/**
 * vm: clones and templates (runtime/service/clones.ts, templates.ts, the agent's identity call).
 * Procedure:
 *  1. A running 512 MiB source `src` holds a random file (hashed) and a counter process (3 SIGUSR1s
 *     counted in a shell variable). Two linked clones of its running state, `b` and `c`, come up
 *     `saved`; started, each has the file (same hash) and the counter at 3 in the same process;
 *     then they diverge: a file written in one is in no other (source included), and a file the
 *     source writes is in neither clone. Each has its own hostname, machine id, MAC and
 *     /dev/urandom output, a clock within 2 s of the host's, and reports a new identity.
 *  2. A linked clone of the stopped source and one of a checkpoint (taken before a change) read
 *     the disk as it was at that point.
 *  3. The source cannot be removed, nor its clone base checkpoint deleted, while linked clones sit
 *     on them (one sentence naming them); nothing changes. Errors (name taken, unknown checkpoint,
 *     unknown VM, a bad name) change nothing either.
 *  4. A full clone survives its source's removal (after the linked clones are removed).
 *  5. Instant create: with the default configuration's template built, `create` makes a saved VM
 *     whose start restores the template (boot kind restore, new identity, hostname its name) and
 *     execs. A template whose template.json names another base image is stale: `create` boots,
 *     and a new template is built beside it and used next.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import { TestHome } from './fixture';

const COUNTER = `n=0; trap 'n=$((n+1))' USR1; trap 'echo $n > /root/count.out' USR2; echo $$ > /root/counter.pid; while :; do sleep 0.2; done`;

describe('vm: clones and templates', { timeout: 3_600_000 }, () => {
  let home: TestHome;
  const sh = (vm: string, script: string) => home.ok(['exec', vm, '--', 'sh', '-c', script]).then((s) => s.trim());
  const info = async (vm: string) => JSON.parse(await home.ok(['info', vm, '--json']));
  const identity = (vm: string) => sh(vm, 'hostname; cat /etc/machine-id; cat /sys/class/net/eth0/address; head -c16 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s%3N');

  before(async () => {
    home = new TestHome();
    await home.bootedVm('src');
  });
  after(async () => {
    await home?.dispose();
  });

  test('linked clones of a running VM: same files and processes, then diverged; each its own identity', async () => {
    const hash = await sh('src', 'head -c 1000000 /dev/urandom > /root/data; sync; md5sum < /root/data');
    const pid = await sh('src', `rm -f /root/count.out; setsid sh -c '${COUNTER.replace(/'/g, `'\\''`)}' </dev/null >/dev/null 2>&1 & sleep 0.5; cat /root/counter.pid`);
    // One SIGUSR1 at a time, each seen counted (USR2 writes the count) before the next: signals of one kind do not queue.
    await sh('src', `for i in 1 2 3; do kill -USR1 ${pid}; until rm -f /root/count.out; kill -USR2 ${pid}; sleep 0.3; [ "$(cat /root/count.out 2>/dev/null)" = "$i" ]; do :; done; done`);
    for (const vm of ['b', 'c']) {
      const out = await home.ok(['clone', 'src', vm]);
      assert.match(out, /linked.*saved/);
      assert.equal((await info(vm)).state, 'saved');
    }
    const ids: string[][] = [];
    for (const vm of ['b', 'c']) {
      await home.ok(['start', vm]);
      const i = await info(vm);
      assert.equal(i.runtime.boot.kind, 'restore');
      assert.equal(i.runtime.boot.newIdentity, true, `${vm} took a new identity (worker log: ${fs.readFileSync(path.join(home.vmDir(vm), 'worker.log'), 'utf8').slice(-2000)})`);
      assert.equal(await sh(vm, 'md5sum < /root/data'), hash);
      assert.equal(await sh(vm, `rm -f /root/count.out; kill -USR2 ${pid}; until [ -s /root/count.out ]; do sleep 0.1; done; cat /root/count.out`), '3');
      const before = Date.now();
      const lines = (await identity(vm)).split('\n');
      const after_ = Date.now();
      ids.push(lines);
      assert.equal(lines[0], vm);
      assert.match(lines[1], /^[0-9a-f]{32}$/);
      const guestMs = Number(lines[4]);
      assert.ok(guestMs > before - 2000 && guestMs < after_ + 2000, `${vm}'s clock ${guestMs} is within 2 s of the host's (${before}..${after_})`);
    }
    const src = (await identity('src')).split('\n');
    for (const k of [1, 2, 3]) {
      assert.notEqual(ids[0][k], ids[1][k], `b and c differ in line ${k} (machine id, MAC, urandom)`);
      assert.notEqual(ids[0][k], src[k], `b and src differ in line ${k}`);
    }
    await sh('b', 'echo only-b > /root/b-file; sync');
    await sh('src', 'echo only-src > /root/src-file; sync');
    assert.equal(await sh('c', 'ls /root/b-file /root/src-file 2>&1 | grep -c "No such"'), '2');
    assert.equal(await sh('src', 'test -e /root/b-file && echo yes || echo no'), 'no');
    assert.equal(await sh('b', 'test -e /root/src-file && echo yes || echo no'), 'no');
    assert.equal(await sh('b', 'cat /root/b-file'), 'only-b');
  });

  test('linked clones of a stopped VM and of a checkpoint read the disk as it was then', async () => {
    await sh('src', 'echo one > /root/mark; sync');
    await home.ok(['stop', 'src']);
    await home.ok(['checkpoint', 'create', 'src', 'cp1']);
    await home.ok(['start', 'src']);
    await sh('src', 'echo two > /root/mark; sync');
    await home.ok(['stop', 'src']);
    assert.match(await home.ok(['clone', 'src', 'd']), /stopped/);
    assert.match(await home.ok(['clone', 'src', 'e', '--checkpoint', 'cp1']), /stopped/);
    await home.ok(['start', 'd']);
    await home.ok(['start', 'e']);
    assert.equal(await sh('d', 'cat /root/mark'), 'two');
    assert.equal(await sh('e', 'cat /root/mark'), 'one');
    assert.equal((await info('e')).config.linkedTo.vm, 'src');
  });

  test('shared layers stay valid: removing the source or a checkpoint under a clone is refused; errors change nothing', async () => {
    const files = home.files();
    let r = await home.cli(['rm', 'src']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /cannot remove src: the linked clones b, c, d, e use its disk; remove them first/);
    r = await home.cli(['checkpoint', 'delete', 'src', 'cp1']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /the linked clones d, e sit on its disk layer; remove them first/);
    r = await home.cli(['clone', 'src', 'b']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /a VM named b already exists/);
    r = await home.cli(['clone', 'src', 'x', '--checkpoint', 'nope']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /src has no checkpoint "nope"/);
    r = await home.cli(['clone', 'ghost', 'x']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /no VM named ghost/);
    r = await home.cli(['clone', 'src', 'Bad_Name']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /invalid VM name/);
    assert.deepEqual(home.files(), files);
  });

  test('a full clone outlives its source', async () => {
    await home.ok(['clone', 'src', 'f', '--full']);
    assert.equal((await info('f')).config.linkedTo, undefined);
    for (const vm of ['b', 'c', 'd', 'e']) await home.ok(['rm', '--force', vm]);
    await home.ok(['rm', 'src']);
    await home.ok(['start', 'f']);
    assert.equal(await sh('f', 'cat /root/mark'), 'two');
    await home.ok(['rm', '--force', 'f']);
  });

  test('instant create restores the template; a stale template is passed over and rebuilt', async () => {
    const client = await ServiceClient.connect({ home: home.dir, autoStart: false });
    try {
      const t = await client.ensureTemplate();
      assert.ok(t, 'a template was built or found');
      await home.ok(['create', 't1']);
      let i = await info('t1');
      assert.equal(i.state, 'saved');
      assert.equal(i.config.template, t!.dir);
      await home.ok(['start', 't1']);
      assert.equal(await sh('t1', 'hostname'), 't1');
      i = await info('t1');
      assert.equal(i.runtime.boot.kind, 'restore');
      assert.equal(i.runtime.boot.newIdentity, true);
      await home.ok(['rm', '--force', 't1']);

      // Made stale: the template.json of every template of this image and configuration names
      // another base image (as after an image rebuild).
      const prefix = path.basename(t!.dir).replace(/[^-]+$/, '');
      const records = fs.readdirSync(path.dirname(t!.dir)).filter((n) => n.startsWith(prefix)).map((n) => path.join(path.dirname(t!.dir), n, 'template.json'));
      const originals = records.map((f) => fs.readFileSync(f, 'utf8'));
      records.forEach((f, k) => fs.writeFileSync(f, originals[k].replace(/"hash": "[0-9a-f]+"/, '"hash": "0000000000000000"')));
      try {
        await home.ok(['create', 't2']);
        i = await info('t2');
        assert.equal(i.state, 'stopped');
        assert.equal(i.config.template, undefined);
        assert.match(fs.readFileSync(path.join(home.dir, 'service.log'), 'utf8'), /is stale \(made for base image 0000000000000000/);
        const rebuilt = await client.ensureTemplate();
        assert.ok(rebuilt && !records.some((f) => path.dirname(f) === rebuilt.dir), 'a new template beside the stale ones');
        await home.ok(['create', 't3']);
        assert.equal((await info('t3')).config.template, rebuilt!.dir);
        // The extra template this test made goes with the VMs that use it (the cache is shared).
        for (const vm of ['t2', 't3']) await home.ok(['rm', '--force', vm]);
        fs.rmSync(rebuilt!.dir, { recursive: true, force: true });
      } finally {
        records.forEach((f, k) => fs.writeFileSync(f, originals[k]));
      }
    } finally {
      client.dispose();
    }
  });
});
