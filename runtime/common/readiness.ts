/**
 * Detached daemons (the service, each worker) and their spawner agree on one readiness handshake:
 * the child inherits fd 3 as a pipe, writes one JSON line ({"ok":true,...} or {"error":{...}})
 * when it is ready or has failed, and closes it. The spawner reads that line, then lets go of the
 * child (unref): the child outlives it.
 */
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';

export interface ReadinessReport {
  ok?: boolean;
  error?: { code: string; message: string };
  [key: string]: unknown;
}

/**
 * Spawns `process.execPath script ...args` detached, with stdout and stderr appended to `logPath`,
 * and resolves with its readiness report ({} when it exited without one). `onSpawn` gets the
 * child's pid at once: it leads a process group of its own (detached), which its children share.
 */
export async function spawnDetached(script: string, args: string[], logPath: string, env: NodeJS.ProcessEnv, onSpawn?: (pid: number) => void): Promise<ReadinessReport> {
  const logFd = fs.openSync(logPath, 'a');
  const child = spawn(process.execPath, [script, ...args], {
    detached: true,
    stdio: ['ignore', logFd, logFd, 'pipe'],
    // Inside VS Code's extension host execPath is Electron: make it behave as node.
    env: { ...env, ELECTRON_RUN_AS_NODE: '1' },
  });
  fs.closeSync(logFd);
  if (child.pid !== undefined) onSpawn?.(child.pid);
  const pipe = child.stdio[3] as net.Socket;
  const text = await new Promise<string>((resolve) => {
    let t = '';
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => (t += d));
    pipe.on('error', () => undefined);
    pipe.on('close', () => resolve(t));
  });
  child.unref();
  try {
    return JSON.parse(text.trim().split('\n')[0] || '{}') as ReadinessReport;
  } catch {
    return {};
  }
}

/** In the child: writes the readiness report on fd 3 if the spawner gave one. Never throws. */
export function reportReadiness(value: ReadinessReport): void {
  try {
    fs.fstatSync(3);
    const s = new net.Socket({ fd: 3, readable: false, writable: true });
    s.on('error', () => undefined);
    s.end(JSON.stringify(value) + '\n');
  } catch {
    // not started by a spawner that listens
  }
}
