/** exec and shell: sessions on a running VM, exit codes passed through. */
import * as os from 'node:os';
import { ErrorCode, SandboxError } from '../../common/errors';
import type { Session, SessionExit } from '../../client/sessionClient';
import type { CommandContext } from '../context';
import { BROKEN_PIPE_STATUS, onBrokenPipe, writeTo } from '../brokenPipe';
import { formatDuration, parseTimeout } from '../duration';
import { INTERRUPT_WINDOW_MS, InterruptCounter } from '../interrupts';

/** The exit status a shell would give: the code, or 128 + the signal number. */
export function exitStatus(r: SessionExit): number {
  if (r.error) return 255;
  if (r.code !== null) return r.code;
  const n = r.signal ? (os.constants.signals as Record<string, number>)[r.signal] : undefined;
  return n ? 128 + n : 255;
}

function parseEnv(values: unknown): Record<string, string> | undefined {
  if (!values) return undefined;
  const env: Record<string, string> = {};
  for (const v of ([] as string[]).concat(values as string[])) {
    const i = v.indexOf('=');
    if (i <= 0) throw new SandboxError(ErrorCode.BadArgument, `invalid --env ${JSON.stringify(v)}: use NAME=value`);
    env[v.slice(0, i)] = v.slice(i + 1);
  }
  return env;
}

/** Forwards piped stdin to the session, pausing while a write is on its way; EOF when it ends. */
function pipeStdin(session: Session): void {
  process.stdin.on('data', (chunk: Buffer) => {
    process.stdin.pause();
    session.write(chunk).then(() => process.stdin.resume(), () => undefined);
  });
  process.stdin.on('end', () => session.eof().catch(() => undefined));
  process.stdin.on('error', () => undefined);
}

/** Makes this terminal the session's: raw input, resizes followed. Returns the undo. */
function attachTerminal(session: Session): () => void {
  const { stdin, stdout } = process;
  if (stdin.isTTY) stdin.setRawMode(true);
  stdin.on('data', (chunk: Buffer) => {
    stdin.pause();
    session.write(chunk).then(() => stdin.resume(), () => undefined);
  });
  stdin.on('error', () => undefined);
  const onResize = () => session.resize(stdout.columns ?? 80, stdout.rows ?? 24).catch(() => undefined);
  stdout.on('resize', onResize);
  return () => {
    stdout.off('resize', onResize);
    if (stdin.isTTY) stdin.setRawMode(false);
  };
}

/** Says why a session ended; for a saved VM, how to pick the session up again. */
function reportEnd(name: string, session: Session, result: SessionExit): void {
  if (!result.error) return;
  process.stderr.write(`sandboxvm: ${result.error}\n`);
  if (/the VM was saved/.test(result.error)) {
    process.stderr.write(`sandboxvm: after \`sandboxvm start ${name}\`, pick it up with \`sandboxvm attach ${name} ${session.id}\` (within a minute)\n`);
  }
}

/** How long a session closed because our output went away may take to end before we exit anyway. */
const CLOSE_WAIT_MS = 5000;

/**
 * exec: the command's output and exit status, as ssh gives them (see followExec for Ctrl-C and
 * a reader that goes away).
 */
export async function exec(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const argv = ctx.rest.length > 0 ? ctx.rest : ctx.positionals.slice(1);
  if (argv.length === 0) throw new SandboxError(ErrorCode.BadArgument, `exec needs a command: sandboxvm exec ${name} -- <command> [args...]`);
  const timeoutMs = parseTimeout(ctx.options.timeout);
  if (ctx.options['undo-point']) {
    // A running checkpoint first; `sandboxvm undo` goes back to it (old ones are pruned).
    const point = await (await ctx.client()).createCheckpoint(name, undefined, { undo: true });
    process.stderr.write(`sandboxvm: undo point ${JSON.stringify(point.name)} (guest paused ${point.pausedMs ?? 0} ms); \`sandboxvm undo ${name}\` returns to it\n`);
  }
  const sessions = await (await ctx.client()).attach(name);
  const session = await sessions.open(
    { kind: 'exec', argv, env: parseEnv(ctx.options.env), cwd: ctx.options.cwd as string | undefined, timeoutMs },
    {
      onData: (stream, data) => writeTo(stream === 2 ? process.stderr : process.stdout, data),
      onExit: () => undefined,
    },
  );
  return followExec(name, session, sessions, { timeoutMs, command: argv[0] });
}

/**
 * Follows an exec session (opened, or attached again) to its end and returns the CLI's status.
 * Piped stdin feeds it. Ctrl-C: the first forwards SIGINT; a second within a second detaches
 * (a second later, so that a third can still kill the session instead), leaving the session
 * attachable, status 130; a third kills it. A reader of our output that goes away (EPIPE) ends
 * the session and the CLI quietly, status 141. A --timeout that fired says so, status 124.
 */
async function followExec(name: string, session: Session, sessions: { dispose(): void }, options: { timeoutMs?: number; command?: string } = {}): Promise<number> {
  if (!process.stdin.isTTY) pipeStdin(session);
  let pipeBroken = false;
  let giveUp = () => undefined as void;
  const gaveUp = new Promise<undefined>((resolve) => (giveUp = () => resolve(undefined)));
  const undoPipe = onBrokenPipe(() => {
    pipeBroken = true;
    void session.close().catch(() => undefined);
    setTimeout(giveUp, CLOSE_WAIT_MS);
  });
  const interrupts = new InterruptCounter();
  let detachTimer: NodeJS.Timeout | undefined;
  let detaching: Promise<unknown> | undefined;
  const onSigint = () => {
    const action = interrupts.next(Date.now());
    if (action === 'forward') return void session.signal('SIGINT').catch(() => undefined);
    if (action === 'detach') {
      process.stderr.write(`\nsandboxvm: detaching; session ${session.id} keeps running in the guest (Ctrl-C again to kill it)\n`);
      detachTimer = setTimeout(() => {
        detaching = session.detach().catch((err: Error) => process.stderr.write(`sandboxvm: could not detach: ${err.message}\n`));
      }, INTERRUPT_WINDOW_MS);
      return;
    }
    clearTimeout(detachTimer);
    process.stderr.write(`sandboxvm: killing session ${session.id}\n`);
    void session.close().catch(() => undefined);
  };
  process.on('SIGINT', onSigint);
  const result = await Promise.race([session.exited, gaveUp]);
  clearTimeout(detachTimer);
  if (result?.detached) await detaching;
  process.off('SIGINT', onSigint);
  undoPipe();
  process.stdin.destroy();
  sessions.dispose();
  if (pipeBroken || !result) return BROKEN_PIPE_STATUS;
  if (result.detached) {
    process.stderr.write(`sandboxvm: detached; pick the session up within a minute with \`sandboxvm attach ${name} ${session.id}\`\n`);
    return 130;
  }
  if (result.error && result.signal && options.timeoutMs !== undefined) {
    process.stderr.write(`sandboxvm: ${options.command} timed out after ${formatDuration(options.timeoutMs)} (--timeout) and was killed\n`);
    return 124;
  }
  reportEnd(name, session, result);
  return result.error && result.signal ? 124 : exitStatus(result);
}

export async function shell(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const sessions = await (await ctx.client()).attach(name);
  const stdin = process.stdin;
  const stdout = process.stdout;
  const session = await sessions.open(
    {
      kind: 'pty',
      argv: ctx.rest.length > 0 ? ctx.rest : undefined,
      env: { TERM: process.env.TERM ?? 'xterm-256color', ...parseEnv(ctx.options.env) },
      cwd: ctx.options.cwd as string | undefined,
      cols: stdout.columns ?? 80,
      rows: stdout.rows ?? 24,
    },
    { onData: (_s, data) => writeTo(stdout, data), onExit: () => undefined },
  );
  const detach = attachTerminal(session);
  const result = await session.exited;
  detach();
  stdin.destroy();
  sessions.dispose();
  reportEnd(name, session, result);
  return exitStatus(result);
}

/**
 * attach: picks up a session the guest kept when its client was cut off (a save, then a start)
 * or let go (a detach): a terminal becomes this terminal; an exec is followed as exec does.
 */
export async function attach(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const given = ctx.positionals[1];
  const id = given !== undefined && /^\d+$/.test(given) ? Number(given) : NaN;
  if (!Number.isInteger(id) || id < 1 || id > 0xffffffff) {
    const what = given === undefined ? 'attach needs a session id' : `${JSON.stringify(given.slice(0, 40))} is not a session id`;
    throw new SandboxError(ErrorCode.BadArgument, `${what}: sandboxvm attach ${name} <id> (exec and shell print the id when a save or a detach leaves a session running)`);
  }
  const sessions = await (await ctx.client()).attach(name);
  const stdout = process.stdout;
  const { session, kind } = await sessions.attach(id, { onData: (stream, data) => writeTo(stream === 2 ? process.stderr : stdout, data), onExit: () => undefined });
  if (kind !== 'pty') return followExec(name, session, sessions);
  const detach = attachTerminal(session);
  void session.resize(stdout.columns ?? 80, stdout.rows ?? 24).catch(() => undefined);
  const result = await session.exited;
  detach();
  process.stdin.destroy();
  sessions.dispose();
  reportEnd(name, session, result);
  return exitStatus(result);
}
