/**
 * Layered fixtures for the vm tier (after firecracker's uvm -> uvm_configured -> uvm_booted):
 *   home()         a fresh data home (SANDBOXVM_HOME) sharing the image cache
 *   createdVm()    a VM created in it (builds the base image on first use)
 *   bootedVm()     that VM started: its agent answers
 * Each test file opens a home in `before` and tears it down in `after`: VMs removed, the service
 * stopped, any process still mentioning the home killed, the directory deleted.
 */
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

export const REPO = path.resolve(__dirname, '..', '..');
export const CLI = path.join(REPO, 'bin', 'sandboxvm');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class TestHome {
  readonly dir: string;
  readonly env: NodeJS.ProcessEnv;

  constructor(extraEnv: NodeJS.ProcessEnv = {}) {
    this.dir = fs.mkdtempSync('/tmp/sbxt-');
    this.env = { ...process.env, SANDBOXVM_HOME: this.dir, ...extraEnv };
  }

  /** Runs the CLI to completion. */
  cli(args: string[], options: { input?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { env: { ...this.env, ...options.env }, stdio: ['pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      child.stdout.on('data', (d) => (stdout += d));
      child.stderr.on('data', (d) => (stderr += d));
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`sandboxvm ${args.join(' ')} timed out; stderr: ${stderr}`));
      }, options.timeoutMs ?? 300_000);
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, stdout, stderr });
      });
      child.stdin.end(options.input ?? '');
    });
  }

  /** Runs the CLI and fails the test unless it exits 0. */
  async ok(args: string[], options?: Parameters<TestHome['cli']>[1]): Promise<string> {
    const r = await this.cli(args, options);
    if (r.code !== 0) throw new Error(`sandboxvm ${args.join(' ')} exited ${r.code}: ${r.stderr}${r.stdout}`);
    return r.stdout;
  }

  vmDir(name: string): string {
    return path.join(this.dir, 'vms', name);
  }

  /** Every file under the home's vms/ directory (to prove operations leave nothing behind). */
  files(): string[] {
    const out: string[] = [];
    const walk = (d: string) => {
      for (const e of fs.existsSync(d) ? fs.readdirSync(d, { withFileTypes: true }) : []) {
        const p = path.join(d, e.name);
        out.push(path.relative(this.dir, p));
        if (e.isDirectory()) walk(p);
      }
    };
    walk(path.join(this.dir, 'vms'));
    return out.sort();
  }

  async createdVm(name: string, extra: string[] = []): Promise<string> {
    await this.ok(['create', name, '--memory', '512M', ...extra]);
    return name;
  }

  async bootedVm(name: string, extra: string[] = []): Promise<string> {
    await this.createdVm(name, extra);
    await this.ok(['start', name]);
    return name;
  }

  servicePid(): number | undefined {
    try {
      return Number(fs.readFileSync(path.join(this.dir, 'service.pid'), 'utf8').trim()) || undefined;
    } catch {
      return undefined;
    }
  }

  /** Removes every VM, stops the service, kills stragglers, deletes the home. */
  async dispose(): Promise<void> {
    const list = await this.cli(['list', '--json'], { timeoutMs: 30_000 }).catch(() => undefined);
    if (list?.code === 0) {
      for (const vm of JSON.parse(list.stdout) as { name: string }[]) await this.cli(['rm', '--force', vm.name], { timeoutMs: 60_000 }).catch(() => undefined);
    }
    await this.cli(['service', 'stop'], { timeoutMs: 30_000 }).catch(() => undefined);
    spawnSync('pkill', ['-9', '-f', this.dir]);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

export function pidsMatching(pattern: string): number[] {
  const r = spawnSync('pgrep', ['-f', pattern], { encoding: 'utf8' });
  return r.stdout.split('\n').filter(Boolean).map(Number);
}

export async function waitFor<T>(what: string, probe: () => Promise<T | undefined> | T | undefined, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
