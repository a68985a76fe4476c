/**
 * The project's side of a comparison: the built service (dist/), reached through the typed
 * ServiceClient or the CLI, in a temporary home. Every VM, worker, QEMU and service started here
 * is removed or killed by the cleanup (see cleanup.ts).
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import type { VmConfig } from '../../runtime/common/config';
import { VM_FILES } from '../../runtime/common/paths';
import type { VmInfo } from '../../runtime/common/status';
import { onCleanup, waitGone, watchPid } from './cleanup';
import { log } from './output';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const DIST_DIR = path.join(REPO_ROOT, 'dist');
export const CLI = path.join(REPO_ROOT, 'bin', 'sandboxvm');

/** The service bundle; throws when it was not built. Warns when sources are newer than the bundle. */
export function requireDist(): string {
  const script = path.join(DIST_DIR, 'service.js');
  for (const f of ['service.js', 'worker.js', 'cli.js']) {
    if (!fs.existsSync(path.join(DIST_DIR, f))) throw new Error(`${path.join(DIST_DIR, f)} is missing: run \`npm run build\` first`);
  }
  const built = fs.statSync(script).mtimeMs;
  const newer = newerSources([path.join(REPO_ROOT, 'runtime'), path.join(REPO_ROOT, 'guest-agent')], built);
  if (newer.length > 0) {
    log(`warning: ${newer.length} source file(s) are newer than dist/ (e.g. ${path.relative(REPO_ROOT, newer[0])}); the benchmark runs dist/ as built; \`npm run build\` to refresh it`);
  }
  return script;
}

function newerSources(dirs: string[], than: number): string[] {
  const out: string[] = [];
  const walk = (dir: string) => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.(ts|sh|txt)$/.test(e.name) && fs.statSync(p).mtimeMs > than) out.push(p);
    }
  };
  dirs.forEach(walk);
  return out;
}

/**
 * Connects to (starting) the service of `home` from dist/service.js, and registers its teardown:
 * every VM removed with force, the service shut down, and its pid, its workers' and their QEMUs'
 * pids reaped.
 */
export async function connectService(home: string): Promise<ServiceClient> {
  const serviceScript = requireDist();
  const client = await ServiceClient.connect({ home, serviceScript });
  const { pid } = await client.serviceInfo();
  watchPid(pid, 'service.js');
  onCleanup(`shutting down the service of ${home}`, async () => {
    try {
      for (const vm of await client.list()) {
        trackVm(vm);
        log(`cleanup: removing VM ${vm.name} (${vm.state})`);
        await client.remove(vm.name, true).catch((err: Error) => log(`cleanup: removing ${vm.name}: ${err.message}`));
      }
      await client.shutdownService();
    } finally {
      client.dispose();
    }
    await waitGone([[pid, 'service.js']], 5000);
  });
  return client;
}

/** Watches a VM's worker and QEMU pids so the cleanup can make sure they ended. */
export function trackVm(info: VmInfo): void {
  watchPid(info.runtime?.workerPid, 'worker.js');
  watchPid(info.runtime?.qemuPid, 'qemu-system');
}

/** Removes a VM (force) and waits until its worker and QEMU are gone, so no two VMs ever overlap. */
export async function removeVm(client: ServiceClient, info: VmInfo): Promise<void> {
  const pids: [number, string][] = [];
  if (info.runtime?.workerPid) pids.push([info.runtime.workerPid, 'worker.js']);
  if (info.runtime?.qemuPid) pids.push([info.runtime.qemuPid, 'qemu-system']);
  await client.remove(info.name, true);
  const alive = await waitGone(pids, 10_000);
  if (alive.length > 0) throw new Error(`VM ${info.name} was removed but pid(s) ${alive.join(', ')} are still alive`);
}

/** A VM's stored configuration (vm.json): the image it boots, with kernel, initrd and base disk. */
export function readVmConfig(info: VmInfo): VmConfig {
  return JSON.parse(fs.readFileSync(path.join(info.paths.dir, VM_FILES.config), 'utf8')) as VmConfig;
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs `bin/sandboxvm <args>` against `home` and collects its output. */
export function runCli(args: string[], home: string, options: { timeoutMs?: number; input?: string | Buffer } = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(CLI, args, { env: { ...process.env, SANDBOXVM_HOME: home }, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (d: Buffer) => out.push(d));
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input);
    const timer = options.timeoutMs
      ? setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`sandboxvm ${args.join(' ')} did not finish within ${options.timeoutMs} ms`));
        }, options.timeoutMs)
      : undefined;
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: performance.now() - t0 });
    });
  });
}
