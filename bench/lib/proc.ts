/**
 * Host processes a benchmark times (the CLI, ssh, scp): spawned directly, with stdin and stdout
 * optionally bound to files so no byte passes through this process, and watched by the cleanup.
 */
import { spawn, type StdioOptions } from 'node:child_process';
import * as fs from 'node:fs';
import { watchPid } from './cleanup';
import { now } from './stats';

export interface ProcOptions {
  /** A file to read stdin from (default: no stdin). */
  stdinFile?: string;
  /** A file stdout goes to (created or truncated); default: collected and returned. */
  stdoutFile?: string;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
  /** The text the process's /proc cmdline shows, for the cleanup's pid check (default: cmd). */
  match?: string;
}

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** Spawn until the process has exited and its pipes are closed. */
  ms: number;
}

/** Runs `cmd args` to completion; rejects only when it cannot be spawned or runs past timeoutMs. */
export function runProc(cmd: string, args: string[], options: ProcOptions = {}): Promise<ProcResult> {
  const fds: number[] = [];
  const open = (file: string, flags: string) => {
    const fd = fs.openSync(file, flags);
    fds.push(fd);
    return fd;
  };
  let stdio: StdioOptions;
  try {
    stdio = [options.stdinFile ? open(options.stdinFile, 'r') : 'ignore', options.stdoutFile ? open(options.stdoutFile, 'w') : 'pipe', 'pipe'];
  } catch (err) {
    fds.forEach((fd) => fs.closeSync(fd));
    return Promise.reject(err);
  }
  return new Promise((resolve, reject) => {
    const t0 = now();
    const child = spawn(cmd, args, { stdio, env: options.env ?? process.env });
    fds.forEach((fd) => fs.closeSync(fd));
    watchPid(child.pid, options.match ?? cmd);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on('data', (d: Buffer) => out.push(d));
    child.stderr?.on('data', (d: Buffer) => err.push(d));
    const timer = options.timeoutMs
      ? setTimeout(() => {
          child.kill('SIGKILL');
          reject(new Error(`${cmd} ${args.join(' ')} did not finish within ${options.timeoutMs} ms`));
        }, options.timeoutMs)
      : undefined;
    child.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms: now() - t0 });
    });
  });
}

/** runProc, and throws with its stderr unless it exits 0. */
export async function mustRun(cmd: string, args: string[], options: ProcOptions = {}): Promise<ProcResult> {
  const r = await runProc(cmd, args, options);
  if (r.code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.signal ?? r.code}: ${r.stderr.trim() || r.stdout.trim() || 'no output'}`);
  return r;
}

export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
