/**
 * A VS Code terminal on a guest pty: a Pseudoterminal over SessionClient. Resizes follow the panel;
 * when the shell exits its code is shown and the next key closes the terminal; when the VM stops,
 * is saved or the session is cut off, one plain line says so.
 */
import { StringDecoder } from 'node:string_decoder';
import * as vscode from 'vscode';
import type { Session, SessionClient, SessionExit } from '../../runtime/client/sessionClient';

export interface PtyOptions {
  vm: string;
  /** A connection to the VM's worker (the caller's ServiceClient.attach). */
  connect: () => Promise<SessionClient>;
  log: (message: string) => void;
}

/** What the terminal says when its session ends. */
export function endMessage(vm: string, r: SessionExit): string {
  if (r.error) {
    if (/saved/.test(r.error)) return `${vm} was saved; the shell is kept in the guest. Start ${vm} again and open a new terminal.`;
    return `The session ended: ${r.error}`;
  }
  if (r.signal) return `The shell was ended by ${r.signal}.`;
  return `The shell exited with code ${r.code ?? 0}.`;
}

export class VmPseudoterminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number | void>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private readonly exitEmitter = new vscode.EventEmitter<SessionExit>();
  /** The guest session ended (the terminal may stay open to show why). */
  readonly onDidExit = this.exitEmitter.event;
  private readonly startEmitter = new vscode.EventEmitter<number>();
  /** The guest session opened (its id). */
  readonly onDidStartSession = this.startEmitter.event;

  private sessions?: SessionClient;
  private session?: Session;
  private ended = false;
  private closed = false;
  private dims?: vscode.TerminalDimensions;
  private readonly decoder = new StringDecoder('utf8');

  constructor(private readonly options: PtyOptions) {}

  get vm(): string {
    return this.options.vm;
  }

  get sessionId(): number | undefined {
    return this.session?.id;
  }

  open(dims: vscode.TerminalDimensions | undefined): void {
    this.dims = dims;
    void this.start();
  }

  private async start(): Promise<void> {
    const { vm } = this.options;
    try {
      this.sessions = await this.options.connect();
      if (this.closed) return this.sessions.dispose();
      this.session = await this.sessions.open(
        { kind: 'pty', env: { TERM: 'xterm-256color', COLORTERM: 'truecolor' }, cols: this.dims?.columns ?? 80, rows: this.dims?.rows ?? 24 },
        {
          onData: (_stream, data) => this.writeEmitter.fire(this.decoder.write(data)),
          onExit: (r) => this.onExit(r),
        },
      );
      if (this.closed) void this.session.close().catch(() => undefined);
      else this.startEmitter.fire(this.session.id);
    } catch (err) {
      this.onExit({ code: null, signal: null, error: `cannot open a terminal on ${vm}: ${(err as Error).message}` });
    }
  }

  private onExit(r: SessionExit): void {
    if (this.ended) return;
    this.ended = true;
    this.options.log(`terminal on ${this.options.vm}${this.session ? ` (session ${this.session.id})` : ''} ended: ${r.error ?? `code ${r.code} signal ${r.signal}`}`);
    const rest = this.decoder.end();
    this.writeEmitter.fire(`${rest}\r\n\x1b[2m${endMessage(this.options.vm, r)} Press any key to close the terminal.\x1b[0m\r\n`);
    this.exitEmitter.fire(r);
    this.sessions?.dispose();
  }

  handleInput(data: string): void {
    if (this.ended) return this.close();
    this.session?.write(data).catch(() => undefined);
  }

  setDimensions(dims: vscode.TerminalDimensions): void {
    this.dims = dims;
    this.session?.resize(dims.columns, dims.rows).catch(() => undefined);
  }

  /** The user closed the terminal (or pressed a key after the end): the guest shell is closed too. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (!this.ended) {
      this.ended = true;
      void this.session?.close().catch(() => undefined).finally(() => this.sessions?.dispose());
    }
    this.closeEmitter.fire();
    this.writeEmitter.dispose();
    this.exitEmitter.dispose();
    this.startEmitter.dispose();
  }
}
