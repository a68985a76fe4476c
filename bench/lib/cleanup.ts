/**
 * Everything a benchmark starts or creates is registered here and undone at the end, on failure
 * and on SIGINT/SIGTERM: cleanup steps run last-registered first, then every watched process that
 * is still alive gets a few seconds to go and is SIGKILLed after that. A benchmark leaves no
 * processes and no files behind.
 *
 * Watched pids are killed only while /proc/<pid>/cmdline still contains the expected text, so a
 * recycled pid is never hit.
 */
import * as fs from 'node:fs';
import { log } from './output';

interface Step {
  label: string;
  fn: () => unknown;
}

const steps: Step[] = [];
const watched = new Map<number, string>();
let running: Promise<void> | undefined;
let aborting = false;

/** Throws once a signal asked the benchmark to stop: call it before starting anything new. */
export function throwIfAborting(): void {
  if (aborting) throw new Error('interrupted');
}

/** Registers an undo step; the returned function unregisters it (when the thing was undone already). */
export function onCleanup(label: string, fn: () => unknown): () => void {
  const step = { label, fn };
  steps.push(step);
  return () => {
    const i = steps.indexOf(step);
    if (i >= 0) steps.splice(i, 1);
  };
}

/** Makes sure `pid` is gone at the end: it must still show `match` in its command line to be killed. */
export function watchPid(pid: number | undefined, match: string): void {
  if (pid && pid > 0) watched.set(pid, match);
}

export function isAlive(pid: number, match?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  if (match === undefined) return true;
  try {
    const cmdline = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
    return cmdline.includes(match);
  } catch {
    // no /proc (not Linux) or the process just went: trust kill(0)
    return process.platform !== 'linux';
  }
}

/** Waits until none of `pids` is alive (matching its command line), up to `timeoutMs`. Returns the survivors. */
export async function waitGone(pids: Map<number, string> | [number, string][], timeoutMs: number): Promise<number[]> {
  const list = [...pids];
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = list.filter(([pid, match]) => isAlive(pid, match)).map(([pid]) => pid);
    if (alive.length === 0 || Date.now() >= deadline) return alive;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Runs every cleanup step (each bounded by `stepTimeoutMs`), then reaps watched processes. Idempotent. */
export function cleanupAll(stepTimeoutMs = 30_000): Promise<void> {
  running ??= (async () => {
    while (steps.length > 0) {
      const step = steps.pop()!;
      let timer: NodeJS.Timeout | undefined;
      try {
        await Promise.race([
          Promise.resolve().then(step.fn),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out after ${stepTimeoutMs} ms`)), stepTimeoutMs))),
        ]);
      } catch (err) {
        log(`cleanup: ${step.label}: ${(err as Error).message}`);
      } finally {
        clearTimeout(timer);
      }
    }
    const survivors = await waitGone(watched, 5000);
    for (const pid of survivors) {
      log(`cleanup: pid ${pid} (${watched.get(pid)}) is still alive; killing it`);
      killQuietly(pid);
    }
    if (survivors.length > 0) await waitGone(survivors.map((pid) => [pid, watched.get(pid)!]), 5000);
    watched.clear();
  })();
  return running;
}

function killQuietly(pid: number): void {
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/**
 * SIGINT/SIGTERM run the cleanup and exit (a second signal exits at once); at exit, whatever is
 * still watched and alive is killed synchronously (the path of an unexpected crash).
 */
export function installSignalHandlers(): void {
  let signalled = false;
  const onSignal = (signal: NodeJS.Signals) => {
    const code = signal === 'SIGINT' ? 130 : 143;
    if (signalled) process.exit(code);
    signalled = true;
    aborting = true;
    log(`${signal}: cleaning up (send it again to exit at once)`);
    void cleanupAll().finally(() => process.exit(code));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  process.on('exit', () => {
    for (const [pid, match] of watched) if (isAlive(pid, match)) killQuietly(pid);
  });
}
