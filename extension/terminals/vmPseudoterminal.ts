/**
 * A VS Code terminal on a guest pty: a Pseudoterminal over SessionClient. Resizes follow the panel.
 * When the shell exits its code is shown and the next key closes the terminal; when the VM stops
 * or the session is cut off, one plain line says so. When the VM is saved the guest keeps the
 * shell: the terminal says so, waits, and attaches the same shell again once the VM runs (the
 * output it printed meanwhile comes first; what is typed from the start until then follows it).
 * Sessions are opened with keepOnDisconnect: when the window reloads the guest keeps the shell, and
 * a new terminal attaches it (`attachExisting`). When a checkpoint with memory is applied the
 * terminal waits too, and attaches the shell as the checkpoint has it (a new shell when the
 * checkpoint was taken before this one was opened).
 */
import { StringDecoder } from 'node:string_decoder';
import * as vscode from 'vscode';
import type { Session, SessionClient, SessionEvents, SessionExit } from '../../runtime/client/sessionClient';
import type { VmInfo } from '../../runtime/common/status';

export interface PtyOptions {
  vm: string;
  /** A connection to the VM's worker (the caller's ServiceClient.attach). */
  connect: () => Promise<SessionClient>;
  /** The VM's snapshots as they change (undefined: it was deleted). */
  watchVm: (listener: (info: VmInfo | undefined) => void) => vscode.Disposable;
  /** The VM's latest snapshot (undefined: unknown or deleted). */
  currentVm: () => VmInfo | undefined;
  log: (message: string) => void;
}

/** How long to retry attaching a session the previous window's extension host still holds. */
const HELD_ELSEWHERE_MS = 15_000;
/** How long a closed terminal waits to learn why it closed before closing its guest session. */
const CLOSE_REASON_MS = 3000;
/**
 * How long a session ended by "the VM stopped" waits to hear whether the stop is a checkpoint being
 * applied (the service says so before it turns the VM off, on another connection).
 */
const APPLY_WORD_MS = 2000;
/** How much of what is typed while the shell comes back after a restore is held for it. */
const MAX_TYPEAHEAD_CHARS = 4096;
/** How much of what the terminal showed `transcript` keeps. */
const TRANSCRIPT_CHARS = 64 * 1024;

/** What the terminal says when its session ends for good. */
export function endMessage(vm: string, r: SessionExit): string {
  if (r.error) {
    if (r.error === 'the VM stopped') return `${vm} stopped; the shell ended.`;
    return `The session ended: ${r.error}`;
  }
  if (r.signal) return `The shell was ended by ${r.signal}.`;
  return `The shell exited with code ${r.code ?? 0}.`;
}

const dim = (text: string) => `\r\n\x1b[2m${text}\x1b[0m\r\n`;

export class VmPseudoterminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private readonly exitEmitter = new vscode.EventEmitter<SessionExit>();
  /** The guest session ended for good (the terminal stays open to say why until a key is pressed). */
  readonly onDidExit = this.exitEmitter.event;
  private readonly startEmitter = new vscode.EventEmitter<number>();
  /** The guest session opened, or was attached again after a restore (its id). */
  readonly onDidStartSession = this.startEmitter.event;

  private sessions?: SessionClient;
  private session?: Session;
  /** Set while the VM is saved and the shell waits in the guest. */
  private waiting?: vscode.Disposable;
  /**
   * What is typed once the saved VM runs again and before its shell is attached (the user sees the
   * VM running and types at once): sent to the shell when it is back. Typing while the VM is still
   * saved goes nowhere.
   */
  private typeahead?: string[];
  private typeaheadChars = 0;
  private ended = false;

  /** The guest session ended for good; the tab stays open to say why. */
  get hasEnded(): boolean {
    return this.ended;
  }
  private closed = false;
  private dims?: vscode.TerminalDimensions;
  private readonly decoder = new StringDecoder('utf8');
  /** Output before VS Code opened the terminal (it drops what is written earlier). */
  private early?: string[] = [];
  private shown = '';
  private closeTimer?: NodeJS.Timeout;
  /** Output that arrived while an attach was under way (see attachWithNotice). */
  private heldOutput?: Buffer[];

  constructor(private readonly options: PtyOptions) {}

  /** VS Code has opened the terminal (before that, it holds back what is typed or sent into it). */
  get isOpen(): boolean {
    return this.early === undefined;
  }

  /** The last 64 KiB of text this terminal showed (or will show once open). */
  get transcript(): string {
    return this.shown;
  }

  private emit(text: string): void {
    if (!text) return;
    this.shown = (this.shown + text).slice(-TRANSCRIPT_CHARS);
    if (this.early) this.early.push(text);
    else this.writeEmitter.fire(text);
  }

  get vm(): string {
    return this.options.vm;
  }

  get sessionId(): number | undefined {
    return this.session?.id;
  }

  open(dims: vscode.TerminalDimensions | undefined): void {
    this.dims = dims;
    const early = this.early ?? [];
    this.early = undefined;
    for (const text of early) this.writeEmitter.fire(text);
    if (this.session) {
      if (dims) void this.session.resize(dims.columns, dims.rows).catch(() => undefined);
      return;
    }
    if (!this.ended) void this.start();
  }

  private events(): SessionEvents {
    return {
      onData: (_stream, data) => {
        if (this.heldOutput) this.heldOutput.push(data);
        else this.emit(this.decoder.write(data));
      },
      onExit: (r) => this.onSessionEnd(r),
    };
  }

  /**
   * Attaches session `id` with its output held until the attach returns, so `notice` comes before
   * what the guest replays instead of in the middle of one of its lines.
   */
  private async attachWithNotice(sessions: SessionClient, id: number, notice: string): Promise<Session> {
    this.heldOutput = [];
    try {
      const { session } = await sessions.attach(id, this.events(), { keepOnDisconnect: true });
      this.emit(notice);
      return session;
    } finally {
      const held = this.heldOutput;
      this.heldOutput = undefined;
      for (const data of held) this.emit(this.decoder.write(data));
    }
  }

  /**
   * Before the terminal is created: attaches the guest session `id` that a previous window opened
   * (kept in the guest when that window went away); what the shell printed meanwhile comes first.
   * Rejects when the session is gone. Retries for a while when the previous window's extension
   * host still holds it.
   */
  async attachExisting(id: number): Promise<void> {
    const deadline = Date.now() + HELD_ELSEWHERE_MS;
    for (;;) {
      const sessions = await this.options.connect();
      try {
        const session = await this.attachWithNotice(sessions, id, `\x1b[2mReattached to the shell on ${this.options.vm} after the window reloaded.\x1b[0m\r\n`);
        this.sessions = sessions;
        this.session = session;
        this.startEmitter.fire(id);
        return;
      } catch (err) {
        sessions.dispose();
        if (!/another client has it/.test((err as Error).message) || Date.now() > deadline) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private async start(): Promise<void> {
    const { vm } = this.options;
    // What is typed while the shell opens (a user types as soon as the tab shows) is sent to it once it is there.
    this.typeahead ??= [];
    try {
      this.sessions = await this.options.connect();
      if (this.closed) return this.sessions.dispose();
      this.session = await this.sessions.open(
        { kind: 'pty', env: { TERM: 'xterm-256color', COLORTERM: 'truecolor' }, cols: this.dims?.columns ?? 80, rows: this.dims?.rows ?? 24, keepOnDisconnect: true },
        this.events(),
      );
      if (this.closed) void this.session.close().catch(() => undefined);
      else {
        for (const data of this.takeTypeahead()) this.session.write(data).catch(() => undefined);
        this.startEmitter.fire(this.session.id);
      }
    } catch (err) {
      this.finish({ code: null, signal: null, error: `cannot open a terminal on ${vm}: ${(err as Error).message}` });
    }
  }

  private onSessionEnd(r: SessionExit): void {
    if (this.ended || this.closed) return;
    this.sessions?.dispose();
    this.sessions = undefined;
    if (this.session && r.error && /the VM was saved/.test(r.error)) return this.waitForRestore(this.session.id);
    if (this.session && r.error === 'the VM stopped') return this.whyStopped(this.session.id, r);
    this.finish(r);
  }

  /**
   * The VM stopped under the shell: when that is a checkpoint with memory being applied, waits for
   * the VM to come back and attaches the shell as the checkpoint has it (or a new one, when the
   * shell was opened after the checkpoint was taken); otherwise the shell ended.
   */
  private whyStopped(id: number, r: SessionExit): void {
    const decide = (info: VmInfo | undefined): boolean => {
      if (info?.applying?.withMemory) {
        this.waitForApply(id, info.applying.checkpoint);
        return true;
      }
      if (info?.applying) {
        this.finish({ ...r, error: `${this.options.vm} went back to checkpoint "${info.applying.checkpoint}", taken while it was off; the shell ended` });
        return true;
      }
      if (!info || info.state !== 'running') {
        this.finish(r);
        return true;
      }
      return false;
    };
    if (decide(this.options.currentVm())) return;
    // Still shown running: the word on why may be on its way.
    let watch: vscode.Disposable | undefined;
    const timer = setTimeout(() => {
      watch?.dispose();
      this.finish(r);
    }, APPLY_WORD_MS);
    watch = this.options.watchVm((info) => {
      if (!decide(info)) return;
      clearTimeout(timer);
      watch?.dispose();
    });
    this.waiting = watch;
  }

  /** A checkpoint with memory is being applied: waits for the VM to run again, then attaches shell `id` as it was then. */
  private waitForApply(id: number, checkpoint: string): void {
    const { vm } = this.options;
    this.waiting?.dispose();
    this.options.log(`terminal on ${vm}: checkpoint "${checkpoint}" is being applied; session ${id} waits for it`);
    this.emit(this.decoder.end() + dim(`${vm} is going back to checkpoint "${checkpoint}"; its shells come back as they were then.`));
    this.waiting = this.options.watchVm((info) => {
      if (!info || (info.state === 'stopped' && !info.applying)) {
        this.waiting?.dispose();
        this.waiting = undefined;
        return this.finish({ code: null, signal: null, error: info ? `${vm} was turned off, and the shell with it` : `${vm} was deleted` });
      }
      if (info.applying) return;
      if (info.state === 'starting' || info.state === 'running') this.typeahead ??= [];
      if (info.state !== 'running' || !info.runtime?.agent.connected) return;
      this.waiting?.dispose();
      this.waiting = undefined;
      void this.reattachAfterApply(id, checkpoint);
    });
  }

  private async reattachAfterApply(id: number, checkpoint: string): Promise<void> {
    const { vm } = this.options;
    try {
      this.sessions = await this.options.connect();
      if (this.closed) return this.sessions.dispose();
    } catch (err) {
      return this.finish({ code: null, signal: null, error: `could not reach ${vm} after applying checkpoint "${checkpoint}": ${(err as Error).message}` });
    }
    try {
      this.session = await this.attachWithNotice(this.sessions, id, `\x1b[2m${vm} is back at checkpoint "${checkpoint}"; this is the shell as it was then.\x1b[0m\r\n`);
      if (this.dims) void this.session.resize(this.dims.columns, this.dims.rows).catch(() => undefined);
      for (const data of this.takeTypeahead()) this.session.write(data).catch(() => undefined);
      this.startEmitter.fire(id);
    } catch (err) {
      // The shell was opened after the checkpoint was taken: the guest as it was then never had it.
      this.options.log(`terminal on ${vm}: session ${id} is not in checkpoint "${checkpoint}" (${(err as Error).message}); a new shell`);
      this.sessions.dispose();
      this.session = undefined;
      this.takeTypeahead();
      this.emit(dim(`This shell was opened after checkpoint "${checkpoint}" was taken, so the VM as it was then does not have it; here is a new shell.`));
      await this.start();
    }
  }

  /** The VM was saved with the shell in it: wait for the VM to run again, then attach the same shell. */
  private waitForRestore(id: number): void {
    const { vm } = this.options;
    this.options.log(`terminal on ${vm}: the VM was saved; session ${id} waits for the restore`);
    this.emit(this.decoder.end() + dim(`${vm} was saved. This shell is kept in the guest and comes back when ${vm} starts again.`));
    this.waiting = this.options.watchVm((info) => {
      if (!info || info.state === 'stopped') {
        this.waiting?.dispose();
        this.waiting = undefined;
        return this.finish({ code: null, signal: null, error: info ? `${vm} was turned off, and the shell with it` : `${vm} was deleted` });
      }
      if (info.state === 'starting' || info.state === 'running') this.typeahead ??= [];
      if (info.state !== 'running' || !info.runtime?.agent.connected) return;
      this.waiting?.dispose();
      this.waiting = undefined;
      void this.reattach(id);
    });
  }

  private async reattach(id: number): Promise<void> {
    const { vm } = this.options;
    try {
      this.sessions = await this.options.connect();
      if (this.closed) return this.sessions.dispose();
      const session = await this.attachWithNotice(this.sessions, id, `\x1b[2m${vm} is running again; the shell is back.\x1b[0m\r\n`);
      this.session = session;
      if (this.dims) void session.resize(this.dims.columns, this.dims.rows).catch(() => undefined);
      for (const data of this.takeTypeahead()) session.write(data).catch(() => undefined);
      this.startEmitter.fire(id);
    } catch (err) {
      this.sessions?.dispose();
      this.finish({ code: null, signal: null, error: `the shell could not be attached again after the restore: ${(err as Error).message}` });
    }
  }

  private takeTypeahead(): string[] {
    const typed = this.typeahead ?? [];
    this.typeahead = undefined;
    this.typeaheadChars = 0;
    return typed;
  }

  private finish(r: SessionExit): void {
    if (this.ended) return;
    this.ended = true;
    this.takeTypeahead();
    this.options.log(`terminal on ${this.options.vm}${this.session ? ` (session ${this.session.id})` : ''} ended: ${r.error ?? `code ${r.code} signal ${r.signal}`}`);
    this.emit(this.decoder.end() + dim(`${endMessage(this.options.vm, r)} Press any key to close the terminal.`));
    this.exitEmitter.fire(r);
    this.sessions?.dispose();
  }

  handleInput(data: string): void {
    if (this.ended) return this.close();
    if (this.typeahead) {
      if (this.typeaheadChars + data.length > MAX_TYPEAHEAD_CHARS) return;
      this.typeahead.push(data);
      this.typeaheadChars += data.length;
      return;
    }
    if (this.waiting) return;
    this.session?.write(data).catch(() => undefined);
  }

  setDimensions(dims: vscode.TerminalDimensions): void {
    this.dims = dims;
    if (!this.waiting) this.session?.resize(dims.columns, dims.rows).catch(() => undefined);
  }

  /**
   * VS Code closed the terminal: the user did (or pressed a key after the end), or the window is
   * going away. Which one arrives just after (TerminalManager calls `closeSession` or `letGo`);
   * without word within a few seconds, the guest shell is closed.
   */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waiting?.dispose();
    if (!this.ended) this.closeTimer = setTimeout(() => this.closeSession(), CLOSE_REASON_MS);
    this.closeEmitter.fire();
    this.writeEmitter.dispose();
    this.exitEmitter.dispose();
    this.startEmitter.dispose();
  }

  /** Closes the guest shell (the user closed the terminal). */
  closeSession(): void {
    clearTimeout(this.closeTimer);
    if (this.ended) return;
    this.ended = true;
    const sessions = this.sessions;
    if (this.session) void this.session.close().catch(() => undefined).finally(() => sessions?.dispose());
    else sessions?.dispose();
  }

  /**
   * Leaves the guest shell running and drops the connection (the window is going away): the worker
   * keeps the session for a later window to attach (keepOnDisconnect).
   */
  letGo(): void {
    clearTimeout(this.closeTimer);
    if (this.ended) return;
    this.ended = true;
    this.sessions?.dispose();
  }
}
