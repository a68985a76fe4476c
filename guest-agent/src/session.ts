/**
 * A guest process attached to one channel session: an exec (pipes) or a pty (node-pty).
 * Output is sent as DATA frames within the credit the host grants (WINDOW frames); when credit runs
 * out the source is paused, so a flooding process can't grow memory on either side.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { FrameType, GUEST_DATA_CHUNK, StreamId, encodeControl, encodeFrame, encodeWindow } from '../../runtime/protocol/frames';
import { INITIAL_WINDOW, type OpenSession } from '../../runtime/protocol/messages';

export interface SessionSink {
  send(frame: Buffer): void;
}

interface Pausable {
  pause(): void;
  resume(): void;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export class GuestSession {
  private readonly credit = [0, INITIAL_WINDOW, INITIAL_WINDOW];
  private readonly sources: (Pausable | undefined)[] = [];
  private child?: ChildProcess;
  private pty?: import('node-pty').IPty;
  private exited = false;

  constructor(readonly id: number, private readonly sink: SessionSink, private readonly log: (m: string) => void) {}

  open(req: OpenSession): void {
    const env = { PATH: DEFAULT_PATH, HOME: '/root', USER: 'root', LOGNAME: 'root', SHELL: '/bin/bash', LANG: 'C.UTF-8', ...(req.env ?? {}) };
    const cwd = req.cwd ?? env.HOME;
    try {
      if (req.kind === 'pty') this.openPty(req, env, cwd);
      else this.openExec(req, env, cwd);
    } catch (err) {
      this.fail(`cannot start ${JSON.stringify(req.argv ?? ['shell'])}: ${(err as Error).message}`);
    }
  }

  private openExec(req: OpenSession, env: Record<string, string>, cwd: string): void {
    const argv = req.argv ?? [];
    if (argv.length === 0) throw new Error('exec needs a command');
    const child = spawn(argv[0], argv.slice(1), { cwd, env, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    this.child = child;
    let started = false;
    child.once('spawn', () => {
      started = true;
      this.control({ t: 'started', pid: child.pid! });
    });
    child.once('error', (err) => {
      if (!started) this.fail(`cannot start ${argv[0]}: ${err.message}`);
    });
    child.stdin!.on('error', () => undefined);
    this.pipeOut(child.stdout!, StreamId.Stdout);
    this.pipeOut(child.stderr!, StreamId.Stderr);
    child.once('close', (code, signal) => {
      if (started) this.exit(code, signal);
    });
  }

  private openPty(req: OpenSession, env: Record<string, string>, cwd: string): void {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const pty = require('node-pty') as typeof import('node-pty');
    const argv = req.argv && req.argv.length > 0 ? req.argv : ['/bin/bash', '-l'];
    const term = pty.spawn(argv[0], argv.slice(1), {
      name: env.TERM ?? 'xterm-256color',
      cols: clamp(req.cols ?? 80, 1, 1000),
      rows: clamp(req.rows ?? 24, 1, 1000),
      cwd,
      env: { TERM: 'xterm-256color', ...env },
      encoding: null,
    } as import('node-pty').IPtyForkOptions);
    this.pty = term;
    this.sources[StreamId.Stdout] = term;
    this.control({ t: 'started', pid: term.pid });
    term.onData((data: string | Buffer) => this.emit(StreamId.Stdout, typeof data === 'string' ? Buffer.from(data, 'utf8') : data));
    term.onExit(({ exitCode, signal }) => {
      // Let output already read go out first.
      setImmediate(() => this.exit(exitCode, signal ? signalName(signal) : null));
    });
  }

  private pipeOut(stream: NodeJS.ReadableStream & Pausable, id: StreamId): void {
    this.sources[id] = stream;
    stream.on('data', (chunk: Buffer) => this.emit(id, chunk));
    stream.on('end', () => this.sink.send(encodeFrame(FrameType.Eof, this.id, undefined, id)));
  }

  private emit(stream: StreamId, data: Buffer): void {
    for (let offset = 0; offset < data.length; offset += GUEST_DATA_CHUNK) {
      const chunk = data.subarray(offset, offset + GUEST_DATA_CHUNK);
      this.sink.send(encodeFrame(FrameType.Data, this.id, chunk, stream));
      this.credit[stream] -= chunk.length;
    }
    if (this.credit[stream] <= 0) this.sources[stream]?.pause();
  }

  /** The host granted more credit on one of our output streams. */
  grant(stream: number, bytes: number): void {
    if (stream !== StreamId.Stdout && stream !== StreamId.Stderr) return;
    const before = this.credit[stream];
    this.credit[stream] = Math.min(before + bytes, 16 * INITIAL_WINDOW);
    if (before <= 0 && this.credit[stream] > 0) this.sources[stream]?.resume();
  }

  /** Input from the host: written to the process, then credited back once it is taken. */
  input(data: Buffer): void {
    const credit = () => this.sink.send(encodeWindow(this.id, StreamId.Stdin, data.length));
    if (this.pty) {
      this.pty.write(data.toString('utf8'));
      credit();
    } else if (this.child?.stdin?.writable) {
      this.child.stdin.write(data, credit);
    }
  }

  endInput(): void {
    if (this.pty) this.pty.write('\x04');
    else this.child?.stdin?.end();
  }

  resize(cols: number, rows: number): void {
    this.pty?.resize(clamp(cols, 1, 1000), clamp(rows, 1, 1000));
  }

  signal(name: string): void {
    try {
      if (this.pty) this.pty.kill(name);
      else if (this.child?.pid) process.kill(-this.child.pid, name as NodeJS.Signals);
    } catch (err) {
      this.log(`session ${this.id}: signal ${name} failed: ${(err as Error).message}`);
    }
  }

  /** Ends the session: kills its process group. Idempotent. */
  kill(): void {
    if (this.exited) return;
    this.signal('SIGKILL');
  }

  private exit(code: number | null, signal: string | null): void {
    if (this.exited) return;
    this.exited = true;
    this.control({ t: 'exit', code, signal });
    this.onExit?.();
  }

  private fail(message: string): void {
    this.control({ t: 'error', message });
    this.exited = true;
    this.onExit?.();
  }

  onExit?: () => void;

  private control(message: object): void {
    this.sink.send(encodeControl(this.id, message));
  }
}

function clamp(v: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, Math.floor(v)));
}

function signalName(signal: number): string {
  const names = require('node:os').constants.signals as Record<string, number>;
  return Object.keys(names).find((k) => names[k] === signal) ?? `SIG${signal}`;
}
