/**
 * vm: exec and shell answer as a shell does, and the CLI ends as ssh does.
 * Procedure: on one booted VM, run commands that cannot run (not found, a directory, no execute
 * permission, a missing path, a file as working directory) through exec and shell and check the
 * exit status (127 / 126) and the one line on stderr; check --timeout 0 and the limit; pipe a
 * 50 MB exec into `head -c 100` and check the CLI exits 141 with nothing on stderr and the guest's
 * `cat` is gone; send SIGINT to a streaming exec's CLI once (the guest process gets it), twice
 * (the CLI detaches, `attach` carries on with every line once and the exit code) and three times
 * (the session is killed, the guest process is gone).
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { CLI, TestHome, waitFor, type CliResult } from './fixture';

describe('vm: cli exit codes', { timeout: 900_000 }, () => {
  let home: TestHome;
  const vm = 'codes';
  before(async () => {
    home = new TestHome();
    await home.bootedVm(vm);
    await home.ok(['exec', vm, '--', 'sh', '-c', 'printf "#!/bin/sh\\necho hi\\n" > /root/noexec; chmod 644 /root/noexec; mkdir -p /root/bin; cp /root/noexec /root/bin/tool; head -c 50000000 /dev/zero > /root/big']);
  });
  after(() => home.dispose());

  async function status(args: string[], code: number, stderr: RegExp): Promise<CliResult> {
    const r = await home.cli(args);
    assert.equal(r.code, code, `sandboxvm ${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, stderr);
    assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    return r;
  }

  test('commands that cannot run: 127 and 126 with a shell\'s words', async () => {
    await status(['exec', vm, '--', 'no-such-command', 'x'], 127, /^sandboxvm: no-such-command: command not found$/m);
    await status(['exec', vm, '--', '/nonexistent'], 127, /^sandboxvm: \/nonexistent: No such file or directory$/m);
    await status(['exec', vm, '--', '/etc'], 126, /^sandboxvm: \/etc: Is a directory$/m);
    await status(['exec', vm, '--', '/root/noexec'], 126, /^sandboxvm: \/root\/noexec: Permission denied$/m);
    await status(['exec', vm, '--cwd', '/root', '--', './noexec'], 126, /^sandboxvm: \.\/noexec: Permission denied$/m);
    await status(['exec', vm, '--env', 'PATH=/root/bin', '--', 'tool'], 126, /^sandboxvm: tool: Permission denied$/m);
    await status(['exec', vm, '--cwd', '/etc/passwd', '--', 'ls'], 255, /^sandboxvm: cannot start ls: the working directory \/etc\/passwd is not a directory$/m);
    await status(['exec', vm, '--cwd', '/nope', '--', 'ls'], 255, /the working directory \/nope does not exist/);
    // A pty session (node-pty said "execvp(3) failed." and 1)
    const r = await home.cli(['shell', vm, '--', '/nonexistent']);
    assert.equal(r.code, 127, r.stderr + r.stdout);
    assert.match(r.stdout, /sandboxvm: \/nonexistent: No such file or directory\r?\n/);
    assert.equal((await home.cli(['shell', vm, '--', '/etc'])).code, 126);
    // Commands that can run still do, with their own status.
    assert.equal((await home.cli(['exec', vm, '--', 'sh', '-c', 'exit 126'])).code, 126);
    assert.equal((await home.cli(['exec', vm, '--cwd', '/root', '--', 'ls', 'noexec'])).stdout, 'noexec\n');
  });

  test('--timeout 0 is no timeout; a timeout kills with 124 and says how long', async () => {
    assert.equal((await home.cli(['exec', vm, '--timeout', '0', '--', 'sleep', '1.5'])).code, 0);
    const t0 = Date.now();
    await status(['exec', vm, '--timeout', '1s', '--', 'sleep', '60'], 124, /^sandboxvm: sleep timed out after 1 s \(--timeout\) and was killed$/m);
    assert.ok(Date.now() - t0 < 30_000);
  });

  test('a reader that goes away (EPIPE): the CLI ends quietly with 141, the guest process is gone', async () => {
    for (let i = 0; i < 3; i++) {
      const r = spawnSync('bash', ['-c', `"${process.execPath}" "${CLI}" exec ${vm} -- cat /root/big | head -c 100 | wc -c; echo "status \${PIPESTATUS[0]}" >&2`], { env: home.env, encoding: 'utf8', timeout: 120_000 });
      assert.equal(r.stdout.trim(), '100');
      assert.equal(r.stderr, 'status 141\n', 'nothing but the status on stderr');
      await waitFor('the guest cat to end', async () => (await home.cli(['exec', vm, '--', 'pgrep', '-x', 'cat'])).code === 1 || undefined, 20_000);
    }
  });

  /** A streaming exec whose CLI gets SIGINT `times` times, 200 ms apart, once it printed `after` lines. */
  async function interrupted(script: string, marker: string, times: number, after = 5): Promise<CliResult> {
    const child = spawn(process.execPath, [CLI, 'exec', vm, '--', 'sh', '-c', script, marker], { env: home.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stderr.on('data', (d) => (stderr += d));
    const printed = new Promise<void>((resolve) =>
      child.stdout.on('data', (d) => {
        stdout += d;
        if (stdout.split('\n').length > after) resolve();
      }),
    );
    const closed = new Promise<number>((resolve) => child.on('close', (code) => resolve(code ?? -1)));
    await printed;
    for (let i = 0; i < times; i++) {
      child.kill('SIGINT');
      await new Promise((r) => setTimeout(r, 200));
    }
    const code = await Promise.race([closed, new Promise<number>((_, reject) => setTimeout(() => reject(new Error(`the CLI did not end: ${stderr}`)), 60_000))]);
    return { code, stdout, stderr };
  }

  const running = async (marker: string) => (await home.cli(['exec', vm, '--', 'pgrep', '-f', marker])).code === 0;

  test('Ctrl-C once: the guest process gets SIGINT', async () => {
    const r = await interrupted('trap "echo got-int; exit 3" INT; while :; do echo tick; sleep 0.1; done', 'once-marker', 1);
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stdout, /got-int\n$/);
    assert.equal(r.stderr, '');
  });

  test('Ctrl-C twice: the CLI detaches, the session runs on and `attach` picks it up', async () => {
    const script = 'trap "echo got-int" INT; i=0; while [ $i -lt 150 ]; do echo line$i; i=$((i+1)); sleep 0.1; done; exit 7';
    const r = await interrupted(script, 'twice-marker', 2);
    assert.equal(r.code, 130, r.stderr);
    const id = /`sandboxvm attach codes (\d+)`/.exec(r.stderr)?.[1];
    assert.ok(id, `the CLI says how to attach: ${r.stderr}`);
    assert.ok(await running('twice-marker'), 'the guest process runs on');
    const rest = await home.cli(['attach', vm, id!], { timeoutMs: 120_000 });
    assert.equal(rest.code, 7, rest.stderr);
    const lines = (r.stdout + rest.stdout).split('\n').filter((l) => l.startsWith('line'));
    assert.deepEqual(lines, Array.from({ length: 150 }, (_, i) => `line${i}`), 'every line once, in order');
  });

  test('Ctrl-C three times: the session is killed', async () => {
    const r = await interrupted('trap "" INT; while :; do echo tick; sleep 0.1; done', 'thrice-marker', 3);
    assert.equal(r.code, 137, r.stderr);
    assert.match(r.stderr, /killing session \d+/);
    await waitFor('the guest process to end', async () => !(await running('thrice-marker')) || undefined, 20_000);
  });
});
