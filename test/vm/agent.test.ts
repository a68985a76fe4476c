/**
 * vm: the guest agent's integration services against a real guest.
 * Procedure: boot one VM; through the typed clients (service -> worker socket) exercise files
 * (streamed write and read, metadata, atomicity, errors, watch), guest info, many concurrent
 * terminals, flow control with a consumer that stops reading, exec timeouts and signals, the
 * relay (the data plane in C) carrying exec input sent before the process exists, an agent
 * restart that sessions outlive, and the relay itself dying.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import { GuestFiles } from '../../runtime/client/guestFiles';
import type { SessionClient, SessionExit } from '../../runtime/client/sessionClient';
import { INITIAL_WINDOW } from '../../runtime/protocol/messages';
import { REPO, TestHome, waitFor } from './fixture';

describe('vm: agent services', { timeout: 900_000 }, () => {
  let home: TestHome;
  let client: ServiceClient;
  let sessions: SessionClient;
  let files: GuestFiles;

  before(async () => {
    home = new TestHome();
    await home.bootedVm('svc');
    client = await ServiceClient.connect({ home: home.dir, serviceScript: path.join(REPO, 'dist', 'service.js') });
    sessions = await client.attach('svc');
    files = new GuestFiles(sessions);
  });
  after(async () => {
    sessions?.dispose();
    client?.dispose();
    await home.dispose();
  });

  /** Runs a command to completion, collecting its output. */
  async function run(argv: string[], timeoutMs?: number): Promise<SessionExit & { stdout: string; stderr: string; ms: number }> {
    let stdout = '';
    let stderr = '';
    const t0 = Date.now();
    const s = await sessions.open({ kind: 'exec', argv, timeoutMs }, { onData: (st, d) => void (st === 1 ? (stdout += d) : (stderr += d)), onExit: () => undefined });
    const r = await s.exited;
    return { ...r, stdout, stderr, ms: Date.now() - t0 };
  }

  test('relay: it owns the port, input sent with the open is kept, and bad starts say why', async () => {
    const tree = await run(['sh', '-c', 'ps -eo pid,ppid,args']);
    const relay = tree.stdout.split('\n').find((l) => l.includes('sandboxvm-relay'));
    assert.ok(relay, `no relay in the guest:\n${tree.stdout}`);
    const relayPid = relay.trim().split(/\s+/)[0];
    assert.ok(tree.stdout.split('\n').some((l) => l.includes('agent.js') && l.trim().split(/\s+/)[1] === relayPid), 'the agent is the relay\'s child');

    // 300 KiB written before the open is even answered: held by the relay until the process runs.
    const input = randomBytes(300 * 1024);
    const out: Buffer[] = [];
    const opened = sessions.open({ kind: 'exec', argv: ['sha256sum'] }, { onData: (_s, d) => void out.push(d), onExit: () => undefined });
    const s = await opened;
    const written = s.write(input);
    await s.eof();
    await written;
    assert.equal((await s.exited).code, 0);
    assert.equal(Buffer.concat(out).toString().split(' ')[0], createHash('sha256').update(input).digest('hex'));

    const bad = await sessions.open({ kind: 'exec', argv: ['true'], cwd: '/no/such/dir' }, { onData: () => undefined, onExit: () => undefined });
    assert.match((await bad.exited).error ?? '', /cannot start true: the working directory \/no\/such\/dir does not exist/);
    // A command that cannot run ends as a shell says it: a line on stderr, 127 (guest-agent/src/resolveCommand.ts).
    const said: Buffer[] = [];
    const missing = await sessions.open({ kind: 'exec', argv: ['no-such-tool-xyz'] }, { onData: (_s, d) => void said.push(d), onExit: () => undefined });
    assert.equal((await missing.exited).code, 127);
    assert.equal(Buffer.concat(said).toString(), 'sandboxvm: no-such-tool-xyz: command not found\n');
    const signalled = await run(['sh', '-c', 'kill -KILL $$']);
    assert.equal(signalled.signal, 'SIGKILL');

    // What an exec runs inherits stdin, stdout and stderr only: no relay, pty or port descriptors.
    const open = await sessions.open({ kind: 'pty', argv: ['/bin/sh', '-c', 'sleep 30'] }, { onData: () => undefined, onExit: () => undefined });
    const fds = await run(['sh', '-c', 'ls /proc/$$/fd']);
    assert.deepEqual(fds.stdout.trim().split(/\s+/).sort(), ['0', '1', '2'], fds.stdout);
    await open.close();

    // Calls leave nothing behind in the relay: past its 4096 tracked sessions, execs still start.
    for (let i = 0; i < 5000; i += 200) await Promise.all(Array.from({ length: 200 }, () => files.stat('/')));
    assert.equal((await run(['echo', 'still'])).stdout, 'still\n');
  });

  test('files: a streamed write and read of 8 MiB arrive intact, atomically', async () => {
    const data = randomBytes(8 * 1024 * 1024);
    async function* source() {
      for (let o = 0; o < data.length; o += 100_000) yield data.subarray(o, o + 100_000);
    }
    assert.equal(await files.write('/root/blob.bin', source(), { mode: 0o600 }), data.length);
    const st = await files.stat('/root/blob.bin');
    assert.equal(st.type, 'file');
    assert.equal(st.size, data.length);
    assert.equal(st.mode, 0o600);
    const guestSum = (await run(['sha256sum', '/root/blob.bin'])).stdout.split(' ')[0];
    assert.equal(guestSum, createHash('sha256').update(data).digest('hex'));
    const back: Buffer[] = [];
    assert.equal(await files.read('/root/blob.bin', (c) => void back.push(Buffer.from(c))), data.length);
    assert.ok(Buffer.concat(back).equals(data));
    const leftovers = (await files.list('/root')).filter((e) => e.name.includes('sandboxvm-'));
    assert.deepEqual(leftovers, [], 'no temporary files left in the guest');
  });

  test('files: download to the host is atomic and a failed one leaves nothing', async () => {
    const dir = fs.mkdtempSync('/tmp/sbxt-dl-');
    try {
      await files.download('/etc/os-release', path.join(dir, 'os-release'));
      assert.match(fs.readFileSync(path.join(dir, 'os-release'), 'utf8'), /Debian/);
      await assert.rejects(files.download('/no/such/file', path.join(dir, 'missing')), /cannot read \/no\/such\/file in the guest: no such file or directory/);
      assert.deepEqual(fs.readdirSync(dir), ['os-release']);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  test('files: mkdir, list, rename, remove, and clear errors', async () => {
    await files.mkdir('/root/tree/a/b', true);
    async function* one() {
      yield Buffer.from('hello\n');
    }
    await files.write('/root/tree/a/b/f.txt', one());
    for (let i = 0; i < 450; i++) await files.mkdir(`/root/tree/many-${String(i).padStart(3, '0')}`);
    const listing = await files.list('/root/tree');
    assert.equal(listing.length, 451, 'paged listing returns every entry');
    assert.equal(listing.find((e) => e.name === 'a')?.type, 'dir');
    await files.rename('/root/tree/a/b/f.txt', '/root/tree/g.txt');
    assert.equal((await files.stat('/root/tree/g.txt')).size, 6);
    await assert.rejects(files.stat('/root/tree/a/b/f.txt'), /stat failed in the guest: ENOENT/);
    await assert.rejects(files.remove('/root/tree'), /remove failed in the guest/);
    await files.remove('/root/tree', true);
    await assert.rejects(files.stat('/root/tree'), /ENOENT/);
    await assert.rejects(files.write('/no/such/dir/x', one()), /cannot write \/no\/such\/dir\/x in the guest: no such directory \/no\/such\/dir/);
  });

  test('files: watch reports a change made in the guest', async () => {
    await files.mkdir('/root/watched', true);
    const events: { kind: string; path: string; at: number }[] = [];
    const w = await sessions.open({ kind: 'watch', path: '/root/watched' }, { onData: () => undefined, onExit: () => undefined, onEvent: (kind, p) => void events.push({ kind, path: p, at: Date.now() }) });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    assert.equal((await run(['touch', '/root/watched/new-file'])).code, 0);
    const ev = await waitFor('a watch event', () => events.find((e) => e.path === 'new-file'), 10_000);
    process.stderr.write(`# watch event ${ev.at - t0} ms after the exec started\n`);
    await w.close();
    const r = await w.exited;
    assert.equal(r.code, 0);
  });

  test('guest info: hostname, OS, addresses, listening ports', async () => {
    await run(['sh', '-c', `setsid /opt/sandboxvm/bin/node -e "require('net').createServer().listen(8123)" >/dev/null 2>&1 &`]);
    const info = await waitFor('port 8123 to be listed', async () => {
      const i = await files.info();
      return i.listening.some((l) => l.endsWith(':8123')) ? i : undefined;
    });
    assert.equal(info.hostname, 'svc');
    assert.match(info.os, /Debian GNU\/Linux 12/);
    assert.ok(info.addresses.some((a) => a.address === '10.0.2.15'), JSON.stringify(info.addresses));
    assert.ok(info.memory.totalMiB > 300);
  });

  test('exec: timeouts kill, signals and exit codes come back', async () => {
    const slow = await run(['sleep', '30'], 1000);
    assert.match(slow.error ?? '', /timed out after 1000 ms/);
    assert.ok(slow.ms < 5000, `took ${slow.ms} ms`);
    const term = await run(['sh', '-c', 'kill -TERM $$']);
    assert.equal(term.signal, 'SIGTERM');
    const code = await run(['sh', '-c', 'exit 42']);
    assert.equal(code.code, 42);
    const cli = await home.cli(['exec', 'svc', '--timeout', '1s', '--', 'sleep', '30']);
    assert.equal(cli.code, 124);
    assert.match(cli.stderr, /timed out/);
  });

  test('terminals: sixteen concurrent pty sessions on one channel', async () => {
    const outs = await Promise.all(
      Array.from({ length: 16 }, async (_, i) => {
        let out = '';
        const s = await sessions.open({ kind: 'pty', argv: ['/bin/bash', '--norc', '-c', `stty size; echo "n=$((${i}*${i}))"; echo "cwd=$PWD tag=$TAG"`], cols: 50 + i, rows: 20, cwd: '/tmp', env: { TAG: `t${i}` } }, { onData: (_st, d) => void (out += d), onExit: () => undefined });
        const r = await s.exited;
        return { i, out, r };
      }),
    );
    for (const { i, out, r } of outs) {
      assert.equal(r.code, 0);
      assert.match(out, new RegExp(`20 ${50 + i}`));
      assert.match(out, new RegExp(`n=${i * i}\\b`));
      assert.match(out, new RegExp(`cwd=/tmp tag=t${i}`));
    }
  });

  test('flow control: a consumer that stops reading stops the guest process, and a flood starves no one', async () => {
    let received = 0;
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    const flood = await sessions.open({ kind: 'exec', argv: ['sh', '-c', 'yes flood-flood-flood-flood'] }, {
      onData: (_st, d) => {
        received += d.length;
        return stalled; // never acknowledged until released
      },
      onExit: () => undefined,
    });
    await new Promise((r) => setTimeout(r, 2000));
    const plateau = received;
    assert.ok(plateau > 0 && plateau <= INITIAL_WINDOW + 64 * 1024, `received ${plateau} bytes with no acknowledgement (window ${INITIAL_WINDOW})`);
    await new Promise((r) => setTimeout(r, 1000));
    assert.equal(received, plateau, 'nothing more arrives while unacknowledged');
    // Another session on the same channel is unaffected.
    const echo = await run(['echo', 'still-responsive']);
    assert.equal(echo.stdout, 'still-responsive\n');
    release();
    await waitFor('the flood to flow again', () => (received > plateau + INITIAL_WINDOW ? true : undefined), 20_000);
    // And an interactive command answers while the flood runs at full speed.
    const during = await run(['echo', 'during-flood']);
    assert.equal(during.stdout, 'during-flood\n');
    process.stderr.write(`# echo during a flood took ${during.ms} ms\n`);
    await flood.close();
    await flood.exited;
  });

  test('vsock: the koffi binding reaches the agent over vsock loopback inside the guest', async () => {
    const r = await run(['/opt/sandboxvm/bin/node', '/opt/sandboxvm/agent/vsock-probe.js', '1', 'sh', '-c', 'echo over-vsock; exit 5']);
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const report = JSON.parse(r.stdout);
    assert.equal(report.hello.hostname, 'svc');
    assert.equal(report.stdout, 'over-vsock\n');
    assert.equal(report.exit.code, 5);
    const info = await client.info('svc');
    assert.equal(info.runtime!.channel, 'virtio-serial', 'the host itself stays on virtio-serial without vhost-vsock');
  });

  test('agent restart: the relay starts the agent again, and exec and pty sessions carry on', async () => {
    // The Node process only (the relay's command line names agent.js too).
    const agentPid = () => run(['pgrep', '-f', '^/opt/sandboxvm/bin/node .*/agent\\.js$']).then((r) => Number(r.stdout.trim()));
    const before = await agentPid();
    assert.ok(before > 1);
    // An exec waiting for input, and a terminal echoing.
    let out = '';
    const waiting = await sessions.open({ kind: 'exec', argv: ['sh', '-c', 'read line; echo "got:$line"; exit 4'] }, { onData: (_s, d) => void (out += d), onExit: () => undefined });
    let screen = '';
    const term = await sessions.open({ kind: 'pty', argv: ['/bin/sh', '-c', 'stty raw -echo; echo READY; exec cat'] }, { onData: (_s, d) => void (screen += d), onExit: () => undefined });
    await waitFor('the terminal', () => (screen.includes('READY') ? true : undefined));

    const t0 = Date.now();
    await run(['sh', '-c', `kill -9 ${before}`]);
    await waitFor('a new agent to answer', async () => {
      const r = await run(['echo', 'back']).catch(() => undefined);
      return r?.stdout === 'back\n' ? true : undefined;
    }, 60_000);
    process.stderr.write(`# agent back ${Date.now() - t0} ms after it was killed\n`);
    assert.notEqual(await agentPid(), before, 'a new agent process answers');
    assert.equal((await client.info('svc')).runtime!.agent.connected, true);

    await waiting.write('hello\n');
    const ended = await waiting.exited;
    assert.equal(out, 'got:hello\n');
    assert.equal(ended.code, 4);
    await term.write('z');
    await waitFor('the terminal to echo after the restart', () => (screen.endsWith('z') ? true : undefined));
    await term.resize(90, 30);
    await term.close();
    assert.equal((await term.exited).error, undefined);
  });

  test('reconnect: the relay itself dying restarts the agent side, which is found again', async () => {
    // The relay is the parent of what it execs.
    const relayPid = Number((await run(['sh', '-c', 'echo $PPID'])).stdout.trim());
    assert.ok(relayPid > 1);
    // (This exec's session ends with the relay: it returns once the new agent side reports that.)
    const t0 = Date.now();
    await run(['sh', '-c', `kill -9 ${relayPid}`]).catch(() => undefined);
    await waitFor('exec to work again', async () => {
      const r = await run(['echo', 'back']).catch(() => undefined);
      return r?.stdout === 'back\n' ? true : undefined;
    }, 60_000);
    process.stderr.write(`# agent side back ${Date.now() - t0} ms after the relay was killed\n`);
    const newPid = Number((await run(['sh', '-c', 'echo $PPID'])).stdout.trim());
    assert.notEqual(newPid, relayPid, 'a new relay carries the channel');
  });
  test('save and restore: a session that was running can be attached again and carries on', async () => {
    let before = '';
    const waiting = await sessions.open({ kind: 'exec', argv: ['sh', '-c', 'echo ready; read line; echo "got:$line"; exit 6'] }, { onData: (_s, d) => void (before += d), onExit: () => undefined });
    await waitFor('the session to run', () => (before === 'ready\n' ? true : undefined));
    await client.save('svc');
    const cut = await waiting.exited;
    assert.match(cut.error ?? '', /the VM was saved; the session is kept in the guest and can be attached again/);
    assert.ok(fs.existsSync(path.join(home.vmDir('svc'), 'saved.epoch')));
    await client.start('svc');
    assert.equal(fs.existsSync(path.join(home.vmDir('svc'), 'saved.epoch')), false, 'consumed with the state');
    sessions.dispose();
    sessions = await client.attach('svc');
    files = new GuestFiles(sessions);
    let after = '';
    const { session: again, kind } = await sessions.attach(waiting.id, { onData: (_s, d) => void (after += d), onExit: () => undefined });
    assert.equal(kind, 'exec');
    await again.write('restored\n');
    const ended = await again.exited;
    assert.equal(after, 'got:restored\n');
    assert.equal(ended.code, 6);
    await assert.rejects(sessions.attach(waiting.id, { onData: () => undefined, onExit: () => undefined }), /no session/);
  });
});
