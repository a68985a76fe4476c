/**
 * vm: the serial console (VMConnect), served by the worker on serial.sock.
 * Procedure: create a VM, issue `start` and connect a SerialClient as soon as serial.sock appears;
 * the client's stream starts at the log's first byte (the kernel's first line, from the replay) and
 * equals console.log byte for byte. Then, on the console, stop the guest agent and its relay
 * (kill -STOP), run a command and see its output and the agent's stopped state, CONT them and exec
 * through the agent again. Then kill -9 the worker three times while the guest prints numbered lines
 * on the console: the client reconnects by itself, every line arrives once, and its whole stream
 * still equals console.log (hashed). Then save and start: a new client resumes from the old one's
 * position and the shell on ttyS0 still answers. The CLI's `console` types piped input, and in a
 * terminal (a host pty) echoes and detaches on Ctrl-].
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as pty from 'node-pty';
import { SerialClient } from '../../runtime/client/serialClient';
import { CLI, TestHome, waitFor } from './fixture';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('vm: serial console', { timeout: 900_000 }, () => {
  let home: TestHome;
  let client: SerialClient;
  let from = 0;
  let received = Buffer.alloc(0);
  const text = () => received.toString('latin1');
  const logBytes = () => fs.readFileSync(path.join(home.vmDir('con'), 'console.log'));
  const expectText = (re: RegExp, what: string, timeoutMs = 30_000) =>
    waitFor(what, () => (re.test(text()) ? true : undefined), timeoutMs).catch((err) => {
      throw new Error(`${err.message}; the console showed ${JSON.stringify(text().slice(-600))}`);
    });
  /** The client's stream equals console.log from where it started. */
  const assertMatchesLog = async () => {
    await waitFor('console.log to hold what the client got', () => (logBytes().length >= from + received.length ? true : undefined), 10_000);
    const log = logBytes().subarray(from, from + received.length);
    assert.equal(sha(log), sha(received), `client stream differs from console.log (client ${received.length} bytes from ${from})`);
  };
  const attachClient = (c: SerialClient) => {
    client = c;
    c.onData((d) => (received = Buffer.concat([received, d])));
  };

  before(async () => {
    home = new TestHome();
    await home.createdVm('con');
  });
  after(() => home.dispose());

  test('a client connected right after start is issued gets the boot from its first line', async () => {
    const started = home.ok(['start', 'con']);
    const sock = path.join(home.vmDir('con'), 'serial.sock');
    await waitFor('serial.sock', () => (fs.existsSync(sock) ? true : undefined), 120_000);
    assert.equal(fs.statSync(sock).mode & 0o777, 0o600);
    const c = await SerialClient.connect(home.vmDir('con'));
    from = c.position;
    attachClient(c);
    await started;
    assert.equal(from, 0, 'the replay starts at the first byte of the log');
    await expectText(/sandboxvm: starting the agent/, 'the agent loop line');
    await expectText(/root@con:~# $/m, 'a root prompt on ttyS0');
    assert.match(text(), /^\[\s+\d+\.\d+\] /, 'the kernel\'s first line comes first');
    await assertMatchesLog();
  });

  test('a command typed on the console runs while the agent is stopped', async () => {
    client.write('A=$(pidof node) R=$(pidof sandboxvm-relay); kill -STOP $A $R; grep State /proc/$A/status; echo typed-$((6*7))\r');
    await expectText(/State:\s+T \(stopped\)/, 'the agent stopped');
    await expectText(/typed-42/, 'the command\'s output');
    client.write('echo ls-$(ls /opt/sandboxvm | wc -l)-done\r');
    await expectText(/ls-\d+-done/, 'a second command with the agent stopped');
    client.write('kill -CONT $A $R; echo cont-$((1+1))\r');
    await expectText(/cont-2/, 'the agent continued');
    assert.match((await home.ok(['exec', 'con', '--', 'echo', 'agent-back'], { timeoutMs: 120_000 })).trim(), /agent-back/);
    const log = logBytes().toString('latin1');
    assert.match(log, /sandboxvm: starting the agent/, 'console.log keeps the boot');
    assert.match(log, /typed-42/, 'console.log keeps the console session');
    await assertMatchesLog();
  });

  test('kill -9 of the worker three times while the console streams: every line once, same bytes as console.log', async () => {
    client.write('for i in $(seq 1 400); do echo line-$i; sleep 0.02; done; echo loop-done\r');
    for (let k = 0; k < 3; k++) {
      await waitFor('lines streaming', () => (new RegExp(`line-${(k + 1) * 60}\\r?\\n`).test(text()) ? true : undefined), 60_000);
      const record = JSON.parse(fs.readFileSync(path.join(home.vmDir('con'), 'worker.json'), 'utf8'));
      process.kill(record.workerPid, 'SIGKILL');
      await waitFor('a new worker', () => {
        try {
          const r = JSON.parse(fs.readFileSync(path.join(home.vmDir('con'), 'worker.json'), 'utf8'));
          return r.workerPid !== record.workerPid ? true : undefined;
        } catch {
          return undefined;
        }
      }, 120_000);
    }
    await expectText(/^loop-done/m, 'the loop finished', 120_000);
    // A line as a terminal shows it: escape sequences dropped, text after the last carriage return.
    const shown = (l: string) => l.replace(/\x1b\[[?0-9;]*[A-Za-z]/g, '').replace(/^.*\r(?=.)/, '');
    const lines = text().split(/\r?\n/).map(shown).filter((l) => /^line-\d+$/.test(l));
    assert.equal(lines.length, 400, 'each line exactly once');
    assert.deepEqual(lines, Array.from({ length: 400 }, (_, i) => `line-${i + 1}`));
    client.write('echo after-takeover-$((1+1))\r');
    await expectText(/after-takeover-2/, 'input after the takeovers');
    await assertMatchesLog();
  });

  test('save and restore: a new client resumes from where the old one was; the shell lives on', async () => {
    const closed = new Promise<string>((r) => client.onClose(r));
    await home.ok(['save', 'con']);
    assert.match(await closed, /was saved/);
    await home.ok(['start', 'con']);
    const before = client.position;
    const c = await SerialClient.connect(home.vmDir('con'), { from: before });
    assert.equal(c.position, before, 'resumes at the old position');
    attachClient(c);
    c.write('echo restored-$((3*3))\r');
    await expectText(/restored-9/, 'the restored shell');
    await assertMatchesLog();
  });

  test('CLI: sandboxvm console types piped input and shows the answer', async () => {
    const child = spawn(process.execPath, [path.join(__dirname, '..', '..', 'bin', 'sandboxvm'), 'console', 'con'], { env: home.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stdin.end('echo cli-$((5*5))\n');
    const code = await new Promise<number | null>((r) => child.on('close', r));
    assert.equal(code, 0);
    assert.match(out, /cli-25/);
    // In a terminal: raw mode, the guest's echo, Ctrl-] detaches with exit 0.
    const term = pty.spawn(process.execPath, [CLI, 'console', 'con'], { cols: 100, rows: 30, env: home.env as Record<string, string>, name: 'xterm' });
    let screen = '';
    term.onData((d) => (screen += d));
    const termExit = new Promise<number>((r) => term.onExit(({ exitCode }) => r(exitCode)));
    await waitFor('the banner', () => (/Ctrl-\] detaches/.test(screen) ? true : undefined), 20_000);
    term.write('echo pty-$((7*6))\r');
    await waitFor('the answer in the terminal', () => (/pty-42/.test(screen) ? true : undefined), 20_000);
    term.write('\x1d');
    assert.equal(await termExit, 0);
    const bad = await home.cli(['console', 'nope']);
    assert.notEqual(bad.code, 0);
    assert.equal(bad.stderr.trim().split('\n').length, 1, bad.stderr);
  });
});
