/** Small, careful process checks used when adopting what a previous service left running. */
import * as fs from 'node:fs';

export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 1) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The process's argv, or undefined when it is gone or unreadable (non-Linux: always undefined). */
export function commandLine(pid: number): string[] | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean);
  } catch {
    return undefined;
  }
}

/** True when `pid` is alive and its command line contains every one of `needles`. */
export function isProcessOf(pid: number, needles: string[]): boolean {
  if (!isAlive(pid)) return false;
  const argv = commandLine(pid);
  if (!argv) return process.platform !== 'linux'; // no /proc: trust liveness alone
  const joined = argv.join('\0');
  return needles.every((n) => joined.includes(n));
}

/** Sends SIGKILL to `pid` only if it still is the process we think (see isProcessOf). */
export function killIfProcessOf(pid: number, needles: string[]): boolean {
  if (!isProcessOf(pid, needles)) return false;
  try {
    process.kill(pid, 'SIGKILL');
    return true;
  } catch {
    return false;
  }
}

/** Resolves when `pid` has exited, checking every `intervalMs` (no event exists for a non-child). */
export async function waitForExit(pid: number, timeoutMs: number, intervalMs = 50): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  return true;
}
