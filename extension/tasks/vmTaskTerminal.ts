/**
 * The terminal of one `sandboxvm` task run: takes an undo point when asked (so Undo returns the VM
 * to before the run), then runs the command in the guest on a pty (`/bin/sh -c <command>`), its
 * output streamed, keys typed passed to it, and the command's exit status as the task's. Closing
 * the task's terminal ends the command in the guest.
 */
import { StringDecoder } from 'node:string_decoder';
import * as vscode from 'vscode';
import type { Session, SessionClient } from '../../runtime/client/sessionClient';
import type { CreatedCheckpoint } from '../../runtime/service/checkpoints';
import type { VmTaskDefinition } from './vmTaskDefinition';

export interface TaskRunDeps {
  /** Takes an undo point of the VM (vm.checkpoint.create with undo and the pruning limits). */
  undoPoint(vm: string): Promise<CreatedCheckpoint>;
  /** A connection to the VM's worker. */
  connect(vm: string): Promise<SessionClient>;
  /** The VM's state now (undefined: no such VM). */
  state(vm: string): string | undefined;
  /** Told when a run ends: its exit code, and the undo point taken before it. */
  finished(run: { vm: string; command: string; exitCode: number; undoPoint?: CreatedCheckpoint; output: string }): void;
}

const TRANSCRIPT_CHARS = 16 * 1024;
const dim = (text: string) => `\x1b[2m${text}\x1b[0m\r\n`;
const crlf = (text: string) => text.replace(/\r?\n/g, '\r\n');

export class VmTaskTerminal implements vscode.Pseudoterminal {
  private readonly writeEmitter = new vscode.EventEmitter<string>();
  private readonly closeEmitter = new vscode.EventEmitter<number>();
  readonly onDidWrite = this.writeEmitter.event;
  readonly onDidClose = this.closeEmitter.event;
  private sessions?: SessionClient;
  private session?: Session;
  private dimensions?: vscode.TerminalDimensions;
  private closed = false;
  /** The end of what the command printed (TRANSCRIPT_CHARS), for the run's report. */
  private transcript = '';

  constructor(private readonly def: VmTaskDefinition, private readonly deps: TaskRunDeps) {}

  open(initial: vscode.TerminalDimensions | undefined): void {
    this.dimensions = initial;
    void this.run().then(
      (code) => this.end(code),
      (err: Error) => {
        this.writeEmitter.fire(`\x1b[31m${crlf(err.message)}\x1b[0m\r\n`);
        this.end(1);
      },
    );
  }

  private async run(): Promise<number> {
    const { vm, command } = this.def;
    const state = this.deps.state(vm);
    if (state === undefined) throw new Error(`There is no VM named ${vm}; create it or change the task's "vm".`);
    if (state !== 'running') throw new Error(`${vm} is ${state === 'stopped' ? 'off' : state}; start it, then run the task again.`);
    let point: CreatedCheckpoint | undefined;
    if (this.def.undoPoint !== false) {
      point = await this.deps.undoPoint(vm);
      this.writeEmitter.fire(dim(`Undo point "${point.name}" of ${vm} taken${point.pausedMs !== undefined ? ` (guest paused ${point.pausedMs} ms)` : ''}; "Undo Last Task Run" returns ${vm} to it.`));
    }
    if (this.closed) return 130;
    this.writeEmitter.fire(dim(`> ${command}  (in ${vm})`));
    this.sessions = await this.deps.connect(vm);
    const utf8 = new StringDecoder('utf8');
    this.session = await this.sessions.open(
      { kind: 'pty', argv: ['/bin/sh', '-c', command], cwd: this.def.cwd, env: { TERM: 'xterm-256color', ...this.def.env }, cols: this.dimensions?.columns ?? 80, rows: this.dimensions?.rows ?? 24 },
      {
        onData: (_stream, data) => {
          const text = utf8.write(data);
          this.transcript = (this.transcript + text).slice(-TRANSCRIPT_CHARS);
          this.writeEmitter.fire(text);
        },
        onExit: () => undefined,
      },
    );
    if (this.closed) void this.session.close().catch(() => undefined);
    const r = await this.session.exited;
    const code = r.code ?? (r.signal ? 128 + (SIGNALS[r.signal] ?? 1) : 1);
    this.writeEmitter.fire(
      '\r\n' + dim(r.error ? `The command ended: ${r.error}` : r.signal ? `The command was ended by ${r.signal}.` : `The command exited with code ${code}.`),
    );
    this.deps.finished({ vm, command, exitCode: code, undoPoint: point, output: this.transcript });
    return code;
  }

  private end(code: number): void {
    this.sessions?.dispose();
    this.sessions = undefined;
    this.closeEmitter.fire(code);
  }

  handleInput(data: string): void {
    void this.session?.write(data).catch(() => undefined);
  }

  setDimensions(d: vscode.TerminalDimensions): void {
    this.dimensions = d;
    void this.session?.resize(d.columns, d.rows).catch(() => undefined);
  }

  close(): void {
    this.closed = true;
    void this.session?.close().catch(() => undefined);
  }
}

const SIGNALS: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };
