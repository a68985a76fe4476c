/**
 * The OpenSSH peers: ssh, ssh over a ControlMaster connection, `ssh -tt`, scp, all run as a user
 * would, against root@127.0.0.1 through the peer VM's port forward. A throwaway ed25519 key, no
 * host key checking, and -F /dev/null so the host user's ssh config changes nothing.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isAlive, onCleanup, watchPid } from './cleanup';
import { EchoProbe, ECHO_COMMAND } from './echo';
import { delay, mustRun, runProc, type ProcOptions, type ProcResult } from './proc';

export const TARGET = 'root@127.0.0.1';

/** Makes an ed25519 key pair in `dir` (id_ed25519, id_ed25519.pub); returns the public key's line. */
export async function makeKey(dir: string): Promise<{ key: string; publicKey: string }> {
  const key = path.join(dir, 'id_ed25519');
  await mustRun('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'sandboxvm-bench', '-f', key]);
  return { key, publicKey: fs.readFileSync(`${key}.pub`, 'utf8').trim() };
}

export class Ssh {
  readonly controlPath: string;
  private master?: ChildProcessWithoutNullStreams;

  constructor(readonly key: string, readonly port: number, dir: string) {
    this.controlPath = path.join(dir, 'cm.sock');
  }

  /** Options common to ssh and scp (the port flag differs: -p / -P). */
  options(): string[] {
    return [
      '-F', '/dev/null',
      '-i', this.key,
      '-o', 'IdentitiesOnly=yes',
      '-o', 'BatchMode=yes',
      '-o', 'StrictHostKeyChecking=no',
      '-o', 'UserKnownHostsFile=/dev/null',
      '-o', 'LogLevel=ERROR',
      '-o', 'ConnectTimeout=30',
    ];
  }

  sshArgs(extra: string[] = []): string[] {
    return [...this.options(), '-p', String(this.port), ...extra];
  }

  /** `ssh <target> <command>` on a new connection. */
  run(command: string, options: ProcOptions = {}): Promise<ProcResult> {
    return runProc('ssh', [...this.sshArgs(), TARGET, command], options);
  }

  /** `ssh <target> <command>` over the ControlMaster connection (startMaster first). */
  runMux(command: string, options: ProcOptions = {}): Promise<ProcResult> {
    return runProc('ssh', [...this.sshArgs(['-o', `ControlPath=${this.controlPath}`, '-o', 'ControlMaster=no']), TARGET, command], options);
  }

  async mustRunMux(command: string, options: ProcOptions = {}): Promise<ProcResult> {
    const r = await this.runMux(command, options);
    if (r.code !== 0) throw new Error(`ssh ${command} exited with ${r.signal ?? r.code}: ${r.stderr.trim()}`);
    return r;
  }

  /** `scp src dst` (one side `root@127.0.0.1:path`). */
  scp(src: string, dst: string): Promise<ProcResult> {
    return runProc('scp', [...this.options(), '-q', '-P', String(this.port), src, dst], { match: 'scp' });
  }

  /**
   * Waits until sshd lets us in: `ssh true` every 2 s. Gently: under TCG every attempt forks an
   * sshd in the guest, and probing fast starves it (RECIPES.md).
   */
  async waitReady(timeoutMs: number, abort?: Promise<never>): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    let last = '';
    let tries = 0;
    for (;;) {
      tries++;
      const attempt = this.run('true', { timeoutMs: 40_000, match: 'ssh' });
      const r = await (abort ? Promise.race([attempt, abort]) : attempt);
      if (r.code === 0) return tries;
      last = r.stderr.trim();
      if (Date.now() >= deadline) throw new Error(`sshd did not let us in within ${timeoutMs} ms: ${last}`);
      await delay(2000);
    }
  }

  /** Starts the ControlMaster connection (`ssh -M -N`) and waits until `ssh -O check` succeeds. */
  async startMaster(timeoutMs = 60_000): Promise<void> {
    const master = spawn('ssh', [...this.sshArgs(['-M', '-N', '-o', `ControlPath=${this.controlPath}`, '-o', 'ControlPersist=no']), TARGET], { stdio: 'pipe' });
    this.master = master;
    watchPid(master.pid, 'ssh');
    let stderr = '';
    master.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    master.on('error', () => undefined);
    const unregister = onCleanup('stopping the ssh ControlMaster', () => this.stopMaster());
    master.once('exit', () => unregister());
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (master.exitCode !== null || master.signalCode !== null) throw new Error(`the ssh ControlMaster exited: ${stderr.trim()}`);
      const r = await runProc('ssh', [...this.sshArgs(['-o', `ControlPath=${this.controlPath}`]), '-O', 'check', TARGET], { timeoutMs: 10_000 });
      if (r.code === 0) return;
      if (Date.now() >= deadline) throw new Error(`the ssh ControlMaster did not come up within ${timeoutMs} ms: ${stderr.trim()}`);
      await delay(200);
    }
  }

  async stopMaster(): Promise<void> {
    const m = this.master;
    if (!m || m.exitCode !== null || m.signalCode !== null) return;
    m.kill('SIGTERM');
    for (let i = 0; i < 100 && m.pid && isAlive(m.pid, 'ssh'); i++) await delay(20);
    if (m.pid && isAlive(m.pid, 'ssh')) m.kill('SIGKILL');
  }

  /**
   * An interactive `ssh -tt` session running ECHO_COMMAND, ready for round trips (READY seen).
   * Local stdin is a pipe, so ssh forwards bytes as they come; the remote end is a real pty.
   */
  async openEcho(timeoutMs = 60_000): Promise<{ probe: EchoProbe; close: () => Promise<void> }> {
    const child = spawn('ssh', [...this.sshArgs(['-tt']), TARGET, ECHO_COMMAND], { stdio: 'pipe' });
    watchPid(child.pid, 'ssh');
    child.on('error', () => undefined);
    child.stdin.on('error', () => undefined);
    const close = async () => {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      for (let i = 0; i < 100 && child.pid && isAlive(child.pid, 'ssh'); i++) await delay(20);
      if (child.pid && isAlive(child.pid, 'ssh')) child.kill('SIGKILL');
    };
    const unregister = onCleanup('closing the ssh -tt session', close);
    child.once('exit', () => unregister());
    const probe = new EchoProbe((data) => new Promise<void>((resolve) => (child.stdin.write(data) ? resolve() : child.stdin.once('drain', () => resolve()))));
    child.stdout.on('data', (d: Buffer) => probe.feed(d));
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    try {
      await probe.waitFor('READY', timeoutMs, 'ssh -tt');
    } catch (err) {
      await close();
      throw new Error(`${(err as Error).message}; ssh stderr: ${stderr.trim()}`);
    }
    return { probe, close };
  }
}
