/**
 * A guest process attached to one channel session: an exec (pipes) or a pty (node-pty).
 * Output is sent as DATA frames within the credit the host grants (WINDOW frames); when credit runs
 * out the source is paused, so a flooding process can't grow memory on either side.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { FrameType, GUEST_DATA_CHUNK, StreamId, encodeControl, encodeFrame, encodeWindow } from '../../runtime/protocol/frames';
import { INITIAL_WINDOW, type OpenSession } from '../../runtime/protocol/messages';
import { commitTemporary, describeFsError, discardTemporary, openTemporary, type Temporary } from './fileTarget';
import { TreeWatcher } from './treeWatcher';
import { connectFailure, connectTarget, openTcp, type ConnectTarget } from './tcpConnect';

export interface SessionSink {
  send(frame: Buffer): void;
}

interface Pausable {
  pause(): void;
  resume(): void;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** The environment and working directory a session's process starts with: root's defaults plus the host's. */
export function sessionEnvironment(req: OpenSession): { env: Record<string, string>; cwd: string } {
  const env = { PATH: DEFAULT_PATH, HOME: '/root', USER: 'root', LOGNAME: 'root', SHELL: '/bin/bash', LANG: 'C.UTF-8', ...(req.env ?? {}) };
  return { env, cwd: req.cwd ?? env.HOME };
}

/** The login shell a pty starts when the host names no command. */
export const DEFAULT_SHELL = ['/bin/bash', '-l'];

/** What the agent's dispatcher needs of a session, wherever its bytes flow. */
export interface AgentSession {
  /** What the session is, once opened. */
  readonly kind?: OpenSession['kind'];
  onExit?: () => void;
  input(data: Buffer): void;
  grant(stream: number, bytes: number): void;
  endInput(): void;
  resize(cols: number, rows: number): void;
  signal(name: string): void;
  /** Ends the session (a host `close`): its process is killed, its file abandoned. */
  kill(): void;
  /** Ends the session without a word to the host (its host end is gone). */
  abandon(): void;
  /** A new host end takes the session over (offsets: the bytes of stdout and stderr it has). */
  resume(offsets?: readonly [number, number]): void;
  /** The host has the session's end; an ended session kept for a resume is let go. */
  release(): void;
  /** Ended, kept for a resume until the host releases it. */
  readonly lingering?: boolean;
  /** Called when the session ends and starts waiting for the host's release. */
  onLinger?: () => void;
}

/** Output kept per stream until the host grants it back (its client has it): one window. */
const RETAIN_MAX = INITIAL_WINDOW;

export class GuestSession implements AgentSession {
  private readonly credit = [0, INITIAL_WINDOW, INITIAL_WINDOW];
  private readonly sources: (Pausable | undefined)[] = [];
  private child?: ChildProcess;
  private pty?: import('node-pty').IPty;
  /** Where stdin goes: the process's stdin, the pty, or a file being written. */
  private sink?: { write(data: Buffer, done: () => void): void; end(): void };
  private cleanup?: () => void;
  private exited = false;
  /**
   * Exec and pty sessions keep what they sent until the host acknowledges it, and their end until
   * the host releases them, so a new host end can resume them (messages.ts, "Resuming"), as the
   * relay does for relayed sessions.
   */
  private readonly sent = [0, 0, 0];
  private readonly acked = [0, 0, 0];
  private readonly kept: Buffer[][] = [[], [], []];
  private readonly eofSent = [false, false, false];
  private final?: object;
  lingering = false;
  onLinger?: () => void;
  /** The host closed it: once ended it needs no resume. */
  private closing = false;

  constructor(readonly id: number, private readonly out: SessionSink, private readonly log: (m: string) => void) {}

  private get resumable(): boolean {
    return this.kind === 'exec' || this.kind === 'pty';
  }

  kind?: OpenSession['kind'];

  open(req: OpenSession): void {
    this.kind = req.kind;
    const { env, cwd } = sessionEnvironment(req);
    try {
      switch (req.kind) {
        case 'pty':
          return this.openPty(req, env, cwd);
        case 'exec':
          return this.openExec(req, env, cwd);
        case 'read':
          return this.openRead(req.path);
        case 'write':
          return this.openWrite(req.path, req.mode);
        case 'watch':
          return this.openWatch(req.path, req.recursive === true);
        case 'connect':
          return this.openConnect(connectTarget(req));
        default:
          throw new Error(`unknown session kind ${String(req.kind)}`);
      }
    } catch (err) {
      this.fail(req.kind === 'connect' ? (err as Error).message : `cannot start ${JSON.stringify(req.argv ?? ['shell'])}: ${(err as Error).message}`);
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
    this.sink = { write: (d, done) => child.stdin!.write(d, done), end: () => child.stdin!.end() };
    this.pipeOut(child.stdout!, StreamId.Stdout);
    this.pipeOut(child.stderr!, StreamId.Stderr);
    child.once('close', (code, signal) => {
      if (!started) return;
      // Output still waiting for credit goes out before the exit.
      if (this.streamsOpen === 0) this.exit(code, signal);
      else this.onStreamsDone = () => this.exit(code, signal);
    });
  }

  private openPty(req: OpenSession, env: Record<string, string>, cwd: string): void {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const pty = require('node-pty') as typeof import('node-pty');
    const argv = req.argv && req.argv.length > 0 ? req.argv : DEFAULT_SHELL;
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
    this.sink = {
      write: (d, done) => {
        term.write(d.toString('utf8'));
        done();
      },
      end: () => term.write('\x04'),
    };
    this.control({ t: 'started', pid: term.pid });
    term.onData((data: string | Buffer) => this.emit(StreamId.Stdout, typeof data === 'string' ? Buffer.from(data, 'utf8') : data));
    term.onExit(({ exitCode, signal }) => {
      // Let output already read go out first (now, or once the host grants the credit for it).
      setImmediate(() => {
        const done = () => this.exit(exitCode, signal ? signalName(signal) : null);
        if (this.pending[StreamId.Stdout].length === 0) done();
        else {
          this.streamsOpen = 1;
          this.waitingEnd[StreamId.Stdout] = true;
          this.onStreamsDone = done;
        }
      });
    });
  }

  /** Streams a guest file out on stdout, within the host's credit. */
  private openRead(file: string | undefined): void {
    if (!file) throw new Error('read needs a path');
    const stream = fs.createReadStream(file, { highWaterMark: 256 * 1024 });
    stream.once('open', () => this.control({ t: 'started', pid: process.pid }));
    stream.once('error', (err) => this.fail(`cannot read ${file}: ${describeFsError(err)}`));
    this.onStreamsDone = () => this.exit(0, null);
    this.pipeOut(stream, StreamId.Stdout);
    this.cleanup = () => stream.destroy();
  }

  /** Takes stdin into a temporary beside `file` (fileTarget.ts), renamed over it at EOF: readers never see half a file. */
  private openWrite(file: string | undefined, mode = 0o644): void {
    if (!file) throw new Error('write needs a path');
    let tmp: Temporary;
    try {
      tmp = openTemporary(file, mode, `${process.pid}-${this.id}`);
    } catch (err) {
      return this.fail(`cannot write ${file}: ${(err as Error).message}`);
    }
    const fd = tmp.fd;
    let failed = false;
    let pending = 0;
    let position = 0;
    let ended = false;
    const finish = () => {
      if (failed || !ended || pending > 0) return;
      try {
        fs.fchmodSync(fd, mode & 0o7777);
        fs.closeSync(fd);
        commitTemporary(tmp);
        this.cleanup = undefined;
        this.exit(0, null);
      } catch (err) {
        this.fail(`cannot write ${file}: ${(err as Error).message}`);
      }
    };
    this.cleanup = () => {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
      discardTemporary(tmp);
    };
    this.control({ t: 'started', pid: process.pid });
    this.sink = {
      write: (data, done) => {
        pending++;
        // Writes overlap in the threadpool: each goes to its own offset, never "the current position".
        const at = position;
        position += data.length;
        fs.write(fd, data, 0, data.length, at, (err) => {
          pending--;
          if (err && !failed) {
            failed = true;
            this.fail(`cannot write ${file}: ${describeFsError(err)}`);
            return;
          }
          done();
          finish();
        });
      },
      end: () => {
        ended = true;
        finish();
      },
    };
  }

  /** A TCP connection in the guest: stdin to it, its bytes to stdout; EOF either way is a half-close. */
  private openConnect(target: ConnectTarget): void {
    let abandoned = false;
    this.cleanup = () => (abandoned = true);
    openTcp(target).then(
      (socket) => {
        if (abandoned || this.exited) return void socket.destroy();
        let closed = false;
        this.cleanup = () => socket.destroy();
        this.control({ t: 'started', pid: process.pid });
        socket.on('error', (err) => this.fail(connectFailure(target, err, true)));
        socket.on('close', () => {
          closed = true;
          if (this.streamsOpen === 0) this.exit(0, null);
        });
        this.onStreamsDone = () => {
          if (closed) this.exit(0, null);
        };
        this.sink = { write: (d, done) => socket.write(d, () => done()), end: () => socket.end() };
        this.pipeOut(socket, StreamId.Stdout);
      },
      (err: NodeJS.ErrnoException) => this.fail(connectFailure(target, err)),
    );
  }

  /** Reports changes under `dir` (paths relative to it) until the host closes the session (treeWatcher.ts). */
  private openWatch(dir: string | undefined, recursive: boolean): void {
    if (!dir) throw new Error('watch needs a path');
    const watcher = new TreeWatcher(dir, recursive, (kind, name) => this.control({ t: 'event', kind, path: name }), (message) => this.fail(message), (message) => this.log(`session ${this.id}: ${message}`));
    this.control({ t: 'started', pid: process.pid });
    this.cleanup = () => watcher.close();
  }

  private pipeOut(stream: NodeJS.ReadableStream & Pausable, id: StreamId): void {
    this.sources[id] = stream;
    this.streamsOpen++;
    stream.on('data', (chunk: Buffer) => this.emit(id, chunk));
    stream.on('end', () => {
      if (this.pending[id].length > 0) this.waitingEnd[id] = true;
      else this.endStream(id);
    });
  }

  private readonly waitingEnd = [false, false, false];
  /** Called once a stream's output has all been sent: EOF, and for a file read, the exit. */
  private endStream(id: StreamId): void {
    this.eofSent[id] = true;
    this.out.send(encodeFrame(FrameType.Eof, this.id, undefined, id));
    this.streamsOpen--;
    if (this.streamsOpen === 0) this.onStreamsDone?.();
  }
  private streamsOpen = 0;
  private onStreamsDone?: () => void;

  /** Output waiting for credit, per stream. Bounded: the source is paused while anything waits. */
  private readonly pending: Buffer[][] = [[], [], []];

  private emit(stream: StreamId, data: Buffer): void {
    this.pending[stream].push(data);
    this.drain(stream);
  }

  /** Sends what the credit allows; pauses the source while output waits, resumes it when none does. */
  private drain(stream: StreamId): void {
    const queue = this.pending[stream];
    while (queue.length > 0 && this.credit[stream] > 0) {
      const head = queue[0];
      const room = this.resumable ? RETAIN_MAX - (this.sent[stream] - this.acked[stream]) : Infinity;
      if (room <= 0) break;
      const n = Math.min(head.length, this.credit[stream], GUEST_DATA_CHUNK, room);
      const chunk = head.subarray(0, n);
      this.out.send(encodeFrame(FrameType.Data, this.id, chunk, stream));
      if (this.resumable) {
        this.kept[stream].push(chunk);
        this.sent[stream] += n;
      }
      this.credit[stream] -= n;
      if (n === head.length) queue.shift();
      else queue[0] = head.subarray(n);
    }
    if (queue.length > 0) this.sources[stream]?.pause();
    else {
      this.sources[stream]?.resume();
      if (this.waitingEnd[stream]) {
        this.waitingEnd[stream] = false;
        this.endStream(stream);
      }
    }
  }

  /** The host granted more credit on one of our output streams. */
  grant(stream: number, bytes: number): void {
    if (stream !== StreamId.Stdout && stream !== StreamId.Stderr) return;
    this.credit[stream] = Math.min(this.credit[stream] + bytes, 16 * INITIAL_WINDOW);
    this.forgetAcked(stream, Math.min(bytes, this.sent[stream] - this.acked[stream]));
    this.drain(stream);
  }

  /** Input from the host: written to the process, then credited back once it is taken. */
  input(data: Buffer): void {
    this.sink?.write(data, () => this.returnStdinCredit(data.length));
  }

  private stdinCredit = 0;
  private creditScheduled = false;

  /** Returns stdin credit, batched: one WINDOW frame per tick (or at once past 64 KiB), not per keystroke. */
  private returnStdinCredit(bytes: number): void {
    this.stdinCredit += bytes;
    if (this.stdinCredit >= 64 * 1024) return this.flushCredit();
    if (!this.creditScheduled) {
      this.creditScheduled = true;
      setImmediate(() => this.flushCredit());
    }
  }

  private flushCredit(): void {
    this.creditScheduled = false;
    if (this.stdinCredit === 0 || this.exited) return;
    this.out.send(encodeWindow(this.id, StreamId.Stdin, this.stdinCredit));
    this.stdinCredit = 0;
  }

  endInput(): void {
    this.sink?.end();
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

  /** The host's client has `bytes` more of `stream`: they need not be kept. */
  private forgetAcked(stream: StreamId, bytes: number): void {
    this.acked[stream] += bytes;
    const kept = this.kept[stream];
    while (bytes > 0 && kept.length > 0) {
      if (kept[0].length <= bytes) bytes -= kept.shift()!.length;
      else {
        kept[0] = kept[0].subarray(bytes);
        bytes = 0;
      }
    }
  }

  /** Ends the session: kills its process group, or abandons its file. Idempotent. */
  kill(): void {
    if (this.lingering) return this.release();
    this.closing = true;
    if (this.exited) return;
    if (this.child || this.pty) this.signal('SIGKILL');
    else if (this.kind === 'watch') this.exit(0, null);
    else this.fail('closed by the host');
  }

  abandon(): void {
    if (this.lingering) return this.release();
    this.kill();
  }

  /**
   * A new host end takes the session over: `resumed`, then each stream from the client's offset
   * (or from what it acknowledged), the EOFs and the end already sent, then on as before.
   */
  resume(offsets?: readonly [number, number]): void {
    if (!this.resumable) {
      this.control({ t: 'resumed' });
      return this.control({ t: 'error', message: `a ${this.kind} session cannot be resumed` });
    }
    for (const stream of [StreamId.Stdout, StreamId.Stderr]) {
      const want = offsets ? offsets[stream - 1] : this.acked[stream];
      const from = Math.min(Math.max(want, this.acked[stream]), this.sent[stream]);
      this.forgetAcked(stream, from - this.acked[stream]);
    }
    this.control({ t: 'resumed', stdout: this.acked[StreamId.Stdout], stderr: this.acked[StreamId.Stderr] });
    for (const stream of [StreamId.Stdout, StreamId.Stderr]) {
      let replayed = 0;
      for (const chunk of this.kept[stream]) {
        this.out.send(encodeFrame(FrameType.Data, this.id, chunk, stream));
        replayed += chunk.length;
      }
      this.credit[stream] = INITIAL_WINDOW - replayed;
      if (this.eofSent[stream]) this.out.send(encodeFrame(FrameType.Eof, this.id, undefined, stream));
      this.drain(stream);
    }
    if (this.final) this.control(this.final);
  }

  /** The host has the end: the session is let go. A live session is unaffected. */
  release(): void {
    if (!this.lingering) return;
    this.lingering = false;
    this.onExit?.();
  }

  private exit(code: number | null, signal: string | null): void {
    if (this.exited) return;
    this.exited = true;
    this.cleanup?.();
    this.final = { t: 'exit', code, signal };
    this.control(this.final);
    if (this.resumable && !this.closing) {
      this.lingering = true;
      this.onLinger?.();
    } else this.onExit?.();
  }

  private fail(message: string): void {
    if (this.exited) return;
    this.cleanup?.();
    this.control({ t: 'error', message });
    this.exited = true;
    this.onExit?.();
  }

  onExit?: () => void;

  private control(message: object): void {
    this.out.send(encodeControl(this.id, message));
  }
}

export function clamp(v: number, min: number, max: number): number {
  return Math.max(min, Math.min(max, Math.floor(v)));
}

export function signalName(signal: number): string {
  const names = require('node:os').constants.signals as Record<string, number>;
  return Object.keys(names).find((k) => names[k] === signal) ?? `SIG${signal}`;
}
