/**
 * What a shell checks before it runs a command, done before an exec or pty session spawns: the
 * working directory, then argv[0] (a path when it has a slash, relative to that directory; else
 * looked up on the session's PATH). A session that fails here answers as a shell does: a line on
 * its output and exit status 127 (not found) or 126 (found, not runnable), instead of the
 * spawner's own words ("execvp(3) failed.", rc 1). A bad working directory is the session's error:
 * nothing was run.
 * The check is advisory (the file may change before the spawn); the spawner keeps its own errors.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FrameType, StreamId, encodeControl, encodeFrame } from '../../runtime/protocol/frames';

export type StartProblem =
  /** The session cannot start at all (its working directory). */
  | { kind: 'error'; message: string }
  /** The command cannot run: said on its output, with a shell's exit status. */
  | { kind: 'status'; status: 126 | 127; message: string };

/** Problems with `dir` as a working directory, or undefined when it is one. */
export function checkWorkingDirectory(dir: string): string | undefined {
  let st: fs.Stats;
  try {
    st = fs.statSync(dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return `the working directory ${dir} does not exist`;
    if (code === 'ENOTDIR') return `the working directory ${dir} is not a directory`;
    return `the working directory ${dir} cannot be used: ${(err as Error).message}`;
  }
  if (!st.isDirectory()) return `the working directory ${dir} is not a directory`;
  try {
    fs.accessSync(dir, fs.constants.X_OK);
  } catch {
    return `the working directory ${dir} cannot be entered: permission denied`;
  }
  return undefined;
}

type Found = { ok: true } | { ok: false; status: 126 | 127; why: string };

function examine(file: string): Found {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { ok: false, status: 127, why: 'No such file or directory' };
    if (code === 'ENOTDIR') return { ok: false, status: 126, why: 'Not a directory' };
    if (code === 'EACCES') return { ok: false, status: 126, why: 'Permission denied' };
    return { ok: false, status: 126, why: (err as Error).message };
  }
  if (st.isDirectory()) return { ok: false, status: 126, why: 'Is a directory' };
  if (!st.isFile()) return { ok: false, status: 126, why: 'Permission denied' };
  try {
    fs.accessSync(file, fs.constants.X_OK);
  } catch {
    return { ok: false, status: 126, why: 'Permission denied' };
  }
  return { ok: true };
}

/**
 * Checks that `command` would run in `cwd` with `pathEnv` as PATH, as bash decides it: a name
 * found nowhere is "command not found" (127); a name found only as files without execute
 * permission is "Permission denied" (126); a path is "No such file or directory" (127), or
 * "Is a directory" / "Permission denied" (126). Directories on PATH are skipped, as bash does.
 */
export function checkCommand(command: string, pathEnv: string | undefined, cwd: string): StartProblem | undefined {
  const shown = command.length > 200 ? `${command.slice(0, 200)}...` : command;
  if (command.includes('/')) {
    const found = examine(path.resolve(cwd, command));
    return found.ok ? undefined : { kind: 'status', status: found.status, message: `${shown}: ${found.why}` };
  }
  let denied = false;
  if (command !== '') {
    for (const dir of (pathEnv ?? '').split(':')) {
      const candidate = path.resolve(cwd, dir || '.', command);
      const found = examine(candidate);
      if (found.ok) return undefined;
      if (found.why === 'Permission denied') denied = true;
    }
  }
  return denied
    ? { kind: 'status', status: 126, message: `${shown}: Permission denied` }
    : { kind: 'status', status: 127, message: `${shown}: command not found` };
}

/** Checks an exec or pty session before it spawns: its working directory, then its command. */
export function checkStart(argv0: string, pathEnv: string | undefined, cwd: string): StartProblem | undefined {
  const bad = checkWorkingDirectory(cwd);
  if (bad) return { kind: 'error', message: `cannot start ${argv0.slice(0, 200)}: ${bad}` };
  return checkCommand(argv0, pathEnv, cwd);
}

/**
 * The frames that end session `id` without running anything: its error, or the shell's line on
 * its output (stderr for an exec, the terminal for a pty) and its exit status.
 */
export function refusalFrames(id: number, kind: 'exec' | 'pty', problem: StartProblem): Buffer[] {
  if (problem.kind === 'error') return [encodeControl(id, { t: 'error', message: problem.message })];
  const stream = kind === 'pty' ? StreamId.Stdout : StreamId.Stderr;
  const line = `sandboxvm: ${problem.message}${kind === 'pty' ? '\r\n' : '\n'}`;
  const frames = [encodeFrame(FrameType.Data, id, Buffer.from(line, 'utf8'), stream)];
  frames.push(encodeFrame(FrameType.Eof, id, undefined, StreamId.Stdout));
  if (kind === 'exec') frames.push(encodeFrame(FrameType.Eof, id, undefined, StreamId.Stderr));
  frames.push(encodeControl(id, { t: 'exit', code: problem.status, signal: null }));
  return frames;
}
