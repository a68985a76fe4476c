/**
 * A session whose bytes the relay moves (guest-agent/native/relay.c); the agent keeps its control:
 *   exec   the relay spawns the process and reports started / exit itself;
 *   pty    node-pty forks the terminal; the relay takes the master fd;
 *   read   the agent opens the file; the relay streams it out and says when it is done;
 *   write  the agent opens a temporary beside the file; the relay fills it; the agent renames it.
 *   connect the relay connects a TCP socket in the guest and moves its bytes; the agent checks the
 *          target (tcpConnect.ts), reports `started` and words the end.
 * The agent keeps its copies of the fds until the relay's DONE, then closes them.
 *
 * Exec and pty sessions outlive their end until the host releases them: the relay keeps their
 * unacknowledged output and their end message, so a new host end (a worker that took over, a
 * restored VM) can resume them and miss nothing. The agent lists them in its hello meanwhile.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { encodeControl } from '../../runtime/protocol/frames';
import type { OpenSession } from '../../runtime/protocol/messages';
import { AttachKind, RelayOp, encodeAttach, encodeConnect, encodeOp, encodeResize, encodeResume, encodeSignal, encodeSpawn } from './relayProtocol';
import { commitTemporary, describeFsError, discardTemporary, openTemporary, type Temporary } from './fileTarget';
import { connectFailure, connectTarget, type ConnectTarget } from './tcpConnect';
import { DEFAULT_SHELL, clamp, sessionEnvironment, signalName, type AgentSession } from './session';

/** How long a finished terminal's last output may take to reach the relay before it is cut. */
const PTY_DRAIN_MS = 2000;

interface NativePty {
  fork(file: string, args: string[], env: string[], cwd: string, cols: number, rows: number, uid: number, gid: number, utf8: boolean, helperPath: string, onexit: (code: number, signal: number) => void): { fd: number; pid: number; pty: string };
}

let nativePty: { module: NativePty; dir: string } | undefined;
/** node-pty's own fork: no socket of its own reading the master, so no bytes are lost to it. */
function loadNativePty(): { module: NativePty; dir: string } {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  nativePty ??= (require('node-pty/lib/utils') as { loadNativeModule(name: string): { module: NativePty; dir: string } }).loadNativeModule('pty');
  return nativePty;
}

export interface RelayPort {
  /** Sends a frame to the relay: a channel frame for the host, or a LOCAL directive. */
  send(frame: Buffer): void;
}

export class RelaySession implements AgentSession {
  onExit?: () => void;
  /** The session has ended and waits for the host to release it (see `release`). */
  onLinger?: () => void;
  /** Ended, its end kept by the relay until the host releases it. */
  lingering = false;
  /** The host closed it: once it ends it needs no resume, and is let go at once. */
  private closing = false;
  kind?: OpenSession['kind'];
  private fds: number[] = [];
  private pid?: number;
  private finished = false;
  /** pty: the terminal's exit, waiting for the relay's DONE (or the drain timeout). */
  private ptyExit?: { code: number; signal: number };
  private drainTimer?: NodeJS.Timeout;
  private relayDone = false;
  /** write: the temporary being filled, renamed over the file at the end. */
  private temporary?: Temporary;
  /** read / write: what to do once the relay is done with the file. */
  private commit?: (err: number) => void;

  constructor(readonly id: number, private readonly relay: RelayPort, private readonly log: (m: string) => void) {}

  open(req: OpenSession): void {
    this.kind = req.kind;
    try {
      switch (req.kind) {
        case 'exec':
          return this.openExec(req);
        case 'pty':
          return this.openPty(req);
        case 'read':
          return this.openRead(req.path);
        case 'write':
          return this.openWrite(req.path, req.mode);
        case 'connect':
          return this.openConnect(connectTarget(req));
        default:
          throw new Error(`the relay does not carry ${String(req.kind)} sessions`);
      }
    } catch (err) {
      this.relay.send(encodeOp(this.id, RelayOp.Forget));
      this.fail(req.kind === 'connect' ? (err as Error).message : `cannot start ${JSON.stringify(req.argv ?? [req.kind])}: ${(err as Error).message}`);
    }
  }

  private openExec(req: OpenSession): void {
    const argv = req.argv ?? [];
    if (argv.length === 0) throw new Error('exec needs a command');
    const { env, cwd } = sessionEnvironment(req);
    this.relay.send(encodeSpawn(this.id, argv, env, cwd));
  }

  private openPty(req: OpenSession): void {
    const { env, cwd } = sessionEnvironment(req);
    const argv = req.argv && req.argv.length > 0 ? req.argv : DEFAULT_SHELL;
    const termEnv: Record<string, string> = { TERM: 'xterm-256color', ...env, PWD: cwd };
    const native = loadNativePty();
    const helper = path.resolve(require.resolve('node-pty/lib/utils'), '..', native.dir, 'spawn-helper');
    const term = native.module.fork(
      argv[0], argv.slice(1), Object.entries(termEnv).map(([k, v]) => `${k}=${v}`), cwd,
      clamp(req.cols ?? 80, 1, 1000), clamp(req.rows ?? 24, 1, 1000), -1, -1, false, helper,
      (code, signal) => this.onPtyExit(code, signal),
    );
    this.fds = [term.fd];
    this.pid = term.pid;
    this.control({ t: 'started', pid: term.pid });
    this.relay.send(encodeAttach(this.id, AttachKind.Pty, term.fd, -1, term.pid));
  }

  private onPtyExit(code: number, signal: number): void {
    this.ptyExit = { code, signal };
    if (this.relayDone) return this.finishPty();
    // The relay ends the stream once the terminal's last output is read (EIO on the master); a
    // background process still holding the terminal would keep it open, so wait only so long.
    this.drainTimer = setTimeout(() => this.relay.send(encodeOp(this.id, RelayOp.Close)), PTY_DRAIN_MS);
  }

  private finishPty(): void {
    clearTimeout(this.drainTimer);
    const e = this.ptyExit!;
    // code -1: inherited, the status went with the previous agent process
    this.exit(e.signal ? null : e.code < 0 ? null : e.code, e.signal ? signalName(e.signal) : null);
  }

  private openRead(file: string | undefined): void {
    if (!file) throw new Error('read needs a path');
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDONLY);
      if (fs.fstatSync(fd).isDirectory()) {
        fs.closeSync(fd);
        throw Object.assign(new Error(`EISDIR: illegal operation on a directory, read`), { code: 'EISDIR' });
      }
    } catch (err) {
      this.relay.send(encodeOp(this.id, RelayOp.Forget));
      return this.fail(`cannot read ${file}: ${describeFsError(err)}`);
    }
    this.fds = [fd];
    this.control({ t: 'started', pid: process.pid });
    this.relay.send(encodeAttach(this.id, AttachKind.Read, -1, fd));
    this.commit = (err) => (err === 0 ? this.exit(0, null) : this.fail(`cannot read ${file}: ${errnoMessage(err)}`));
  }

  /** Takes stdin into a temporary beside `file` (fileTarget.ts), renamed over it at EOF: readers never see half a file. */
  private openWrite(file: string | undefined, mode = 0o644): void {
    if (!file) throw new Error('write needs a path');
    let tmp: Temporary;
    try {
      tmp = openTemporary(file, mode, `${process.pid}-${this.id}`);
    } catch (err) {
      this.relay.send(encodeOp(this.id, RelayOp.Forget));
      return this.fail(`cannot write ${file}: ${(err as Error).message}`);
    }
    const fd = tmp.fd;
    this.fds = [fd];
    this.temporary = tmp;
    this.control({ t: 'started', pid: process.pid });
    this.relay.send(encodeAttach(this.id, AttachKind.Write, fd, -1));
    this.commit = (err) => {
      try {
        if (err !== 0) throw new Error(errnoMessage(err));
        fs.fchmodSync(fd, mode & 0o7777);
        this.closeFds();
        commitTemporary(tmp);
        this.exit(0, null);
      } catch (e) {
        this.closeFds();
        discardTemporary(tmp);
        this.fail(`cannot write ${file}: ${(e as Error).message}`);
      }
    };
  }

  /** connect: set once the relay says the connection is up. */
  private connected = false;

  private openConnect(target: ConnectTarget): void {
    this.relay.send(encodeConnect(this.id, target.address, target.port));
    this.commit = (err) => (err === 0 ? this.exit(0, null) : this.fail(connectFailure(target, { code: errnoName(err), message: `errno ${err}` } as NodeJS.ErrnoException, this.connected)));
  }

  /** The relay's CONNECTED note: the connect session's connection is up. */
  relayConnected(): void {
    if (this.kind !== 'connect' || this.connected || this.finished) return;
    this.connected = true;
    this.control({ t: 'started', pid: process.pid });
  }

  /** The relay's DONE: the session's streams are complete (0) or failed (an errno). */
  relayFinished(err: number): void {
    this.relayDone = true;
    // the relay reported the exit itself and keeps the session (err 0), or it never started
    if (this.kind === 'exec') return err === 0 ? this.linger() : this.forget();
    if (this.kind === 'pty') {
      if (this.ptyExit) this.finishPty();
      return;
    }
    const commit = this.commit;
    this.commit = undefined;
    if (err === os.constants.errno.ECANCELED) {
      this.closeFds();
      if (this.temporary) discardTemporary(this.temporary);
      return this.fail('closed by the host');
    }
    commit?.(err);
  }

  input(): void {
    // bytes go to the relay, never here
  }
  grant(): void {
    // credit goes to the relay, never here
  }
  endInput(): void {
    // EOF goes to the relay, never here
  }

  resize(cols: number, rows: number): void {
    if (this.kind !== 'pty' || this.finished) return;
    this.relay.send(encodeResize(this.id, clamp(cols, 1, 1000), clamp(rows, 1, 1000)));
  }

  /**
   * A session the relay carried over from the agent process before this one (it crashed or was
   * killed). Its bytes flow as before; a pty's exit status went with the old process (it was that
   * process's child), so its end is reported as code null.
   */
  static inherit(id: number, relay: RelayPort, log: (m: string) => void, kind: 'pty' | 'exec', pid: number): RelaySession {
    const session = new RelaySession(id, relay, log);
    session.kind = kind;
    session.pid = pid > 0 ? pid : undefined;
    if (kind === 'pty') session.ptyExit = { code: -1, signal: 0 };
    return session;
  }

  signal(name: string): void {
    const number = (os.constants.signals as Record<string, number>)[name];
    if (number === undefined) return this.log(`session ${this.id}: unknown signal ${name}`);
    if (this.kind === 'exec') return this.relay.send(encodeSignal(this.id, number));
    if (this.kind === 'pty' && this.pid && (!this.ptyExit || this.ptyExit.code === -1)) {
      try {
        process.kill(this.pid, number);
      } catch (err) {
        this.log(`session ${this.id}: signal ${name} failed: ${(err as Error).message}`);
      }
    }
  }

  /** Replays to a new host end what its client lacks (offsets: bytes of stdout and stderr it has). */
  resume(offsets?: readonly [number, number]): void {
    if (this.kind === 'exec' || this.kind === 'pty') this.relay.send(encodeResume(this.id, offsets));
    else this.control({ t: 'resumed' }, { t: 'error', message: `a ${this.kind} session cannot be resumed` });
  }

  /** The host has the session's end: the relay lets it go. Idempotent; a live session is unaffected. */
  release(): void {
    if (!this.lingering) return;
    this.lingering = false;
    this.relay.send(encodeOp(this.id, RelayOp.Forget));
    this.onExit?.();
  }

  kill(): void {
    if (this.lingering) return this.release();
    if (this.finished) return;
    this.closing = true;
    if (this.kind === 'pty') this.signal('SIGKILL');
    else this.relay.send(encodeOp(this.id, RelayOp.Close));
  }

  abandon(): void {
    if (this.lingering) {
      this.lingering = false;
      this.relay.send(encodeOp(this.id, RelayOp.Forget));
      return this.onExit?.();
    }
    if (this.finished) return;
    if (this.kind === 'pty') this.signal('SIGKILL');
    this.relay.send(encodeOp(this.id, RelayOp.Forget));
    this.forget();
  }

  private closeFds(): void {
    for (const fd of this.fds) {
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
    }
    this.fds = [];
  }

  private forget(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.drainTimer);
    this.closeFds();
    if (this.temporary) discardTemporary(this.temporary);
    this.onExit?.();
  }

  private exit(code: number | null, signal: string | null): void {
    if (this.finished) return;
    this.control({ t: 'exit', code, signal });
    if (this.kind === 'pty' && this.relayDone) this.linger();
    else this.forget();
  }

  /** Ended: kept (fds closed) until the host releases it, unless the host closed it. */
  private linger(): void {
    if (this.finished) return;
    this.finished = true;
    clearTimeout(this.drainTimer);
    this.closeFds();
    if (this.closing) {
      this.relay.send(encodeOp(this.id, RelayOp.Forget));
      return this.onExit?.();
    }
    this.lingering = true;
    this.onLinger?.();
  }

  private fail(message: string): void {
    if (this.finished) return;
    this.control({ t: 'error', message });
    this.forget();
  }

  private control(...messages: object[]): void {
    for (const m of messages) this.relay.send(encodeControl(this.id, m));
  }
}

function errnoName(errno: number): string | undefined {
  return Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0];
}

function errnoMessage(errno: number): string {
  const name = Object.entries(os.constants.errno).find(([, n]) => n === errno)?.[0];
  return name ? describeFsError({ code: name }) : `errno ${errno}`;
}
