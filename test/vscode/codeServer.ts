/**
 * Real VS Code for tests: code-server 4.100.3 (installed by install-code-server.sh into a cache
 * outside the repository) driven by Debian's chromium through playwright-core, as RECIPES.md
 * ("Real VS Code in CI: code-server") measured. Everything it writes lives in one scratch folder.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { chromium, type Browser, type Page } from 'playwright-core';

export const REPO = path.resolve(__dirname, '..', '..');

export function installCodeServer(): string {
  const out = execFileSync('bash', [path.join(__dirname, 'install-code-server.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  return out.trim().split('\n').at(-1)!;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

export interface CodeServer {
  port: number;
  url: string;
  scratch: string;
  workspace: string;
  logFile: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** A normal user code-server runs as (the journey): its ids and home. */
export interface RunAs {
  user: string;
  uid: number;
  gid: number;
  home: string;
}

/**
 * Starts code-server on 127.0.0.1 with its own user data, extensions and XDG folders; resolves once
 * /healthz answers. With `runAs` (the caller is root), the scratch folder is handed to that user and
 * code-server runs as them through setpriv, with their HOME and a clean environment plus `env`.
 * `extraArgs` go to code-server as they are (`--enable-proposed-api <publisher.name>`).
 */
export async function startCodeServer(bin: string, scratch: string, env: NodeJS.ProcessEnv, settings: Record<string, unknown> = {}, runAs?: RunAs, extraArgs: string[] = []): Promise<CodeServer> {
  const port = await freePort();
  const dirs = Object.fromEntries(['config', 'data', 'cache', 'user-data', 'extensions', 'workspace'].map((d) => [d, path.join(scratch, d)]));
  for (const d of Object.values(dirs)) fs.mkdirSync(d, { recursive: true });
  fs.mkdirSync(path.join(dirs['user-data'], 'User'), { recursive: true });
  fs.writeFileSync(
    path.join(dirs['user-data'], 'User', 'settings.json'),
    JSON.stringify({ 'terminal.integrated.gpuAcceleration': 'off', 'workbench.startupEditor': 'none', 'security.workspace.trust.enabled': false, 'workbench.tips.enabled': false, 'extensions.autoCheckUpdates': false, 'extensions.autoUpdate': false, ...settings }, null, 2),
  );
  const logFile = path.join(scratch, 'code-server.log');
  const log = fs.openSync(logFile, 'a');
  const args = [
    '--auth', 'none', '--bind-addr', `127.0.0.1:${port}`, '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust',
    '--disable-getting-started-override', '--user-data-dir', dirs['user-data'], '--extensions-dir', dirs.extensions, ...extraArgs,
  ];
  const xdg = { XDG_CONFIG_HOME: dirs.config, XDG_DATA_HOME: dirs.data, XDG_CACHE_HOME: dirs.cache };
  let child: ChildProcess;
  if (runAs) {
    execFileSync('chown', ['-R', `${runAs.uid}:${runAs.gid}`, scratch]);
    const userEnv = { HOME: runAs.home, USER: runAs.user, LOGNAME: runAs.user, SHELL: '/bin/bash', PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', ...env, ...xdg };
    child = spawn('setpriv', [`--reuid=${runAs.uid}`, `--regid=${runAs.gid}`, '--init-groups', '--', bin, ...args], { env: userEnv, cwd: runAs.home, stdio: ['ignore', log, log], detached: true });
  } else {
    child = spawn(bin, args, { env: { ...process.env, ...env, ...xdg }, stdio: ['ignore', log, log], detached: true });
  }
  fs.closeSync(log);
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 120_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`code-server exited with ${child.exitCode}; see ${logFile}`);
    const ok = await fetch(`${url}/healthz`).then((r) => r.ok, () => false);
    if (ok) break;
    if (Date.now() > deadline) throw new Error(`code-server did not answer on ${url} within 120 s; see ${logFile}`);
    await new Promise((r) => setTimeout(r, 250));
  }
  return {
    port, url, scratch, workspace: dirs.workspace, logFile, process: child,
    stop: async () => {
      if (child.exitCode !== null) return;
      const gone = new Promise((r) => child.once('exit', r));
      try {
        process.kill(-child.pid!, 'SIGTERM');
      } catch {
        return;
      }
      const t = setTimeout(() => { try { process.kill(-child.pid!, 'SIGKILL'); } catch { /* gone */ } }, 5000);
      await gone;
      clearTimeout(t);
    },
  };
}

/** Debian's chromium, headless, with a fresh profile (playwright makes a temporary one per launch). */
export async function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: process.env.SANDBOXVM_CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update',
      '--disable-sync', '--disable-dev-shm-usage',
    ],
  });
}

/** The workbench URL that loads the extension from `extensionPath` and, when given, runs `testsPath` inside its extension host. */
export function workbenchUrl(cs: CodeServer, extensionPath: string, testsPath?: string): string {
  const remote = (p: string) => `vscode-remote://127.0.0.1:${cs.port}${p}`;
  const payload: [string, string][] = [['extensionDevelopmentPath', remote(extensionPath)]];
  if (testsPath) payload.push(['extensionTestsPath', remote(testsPath)]);
  return `${cs.url}/?folder=${encodeURIComponent(cs.workspace)}&payload=${encodeURIComponent(JSON.stringify(payload))}`;
}

/** Waits for the workbench to be usable (the activity bar is drawn). */
export async function waitForWorkbench(page: Page, timeoutMs = 120_000): Promise<void> {
  await page.waitForSelector('.monaco-workbench .part.activitybar', { timeout: timeoutMs });
}
