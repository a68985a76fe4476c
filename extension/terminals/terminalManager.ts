/**
 * The extension's guest terminals: opens them (from a command or the "Sandbox VM" profile), knows
 * which VM each belongs to (the tree shows them as the VM's children) and forgets them when closed.
 */
import * as vscode from 'vscode';
import type { SessionClient } from '../../runtime/client/sessionClient';
import type { VmInfo } from '../../runtime/common/status';
import type { VmModel } from '../model/vmModel';
import { VmPseudoterminal } from './vmPseudoterminal';

export interface GuestTerminal {
  /** Unique within this window; stable for the terminal's life (the tree item's id). */
  readonly id: number;
  readonly vm: string;
  readonly pty: VmPseudoterminal;
  terminal?: vscode.Terminal;
}

export class TerminalManager implements vscode.Disposable {
  private readonly terminals = new Map<number, GuestTerminal>();
  private nextId = 1;
  private readonly changed = new vscode.EventEmitter<string>();
  /** Fires the VM's name when its set of terminals changes. */
  readonly onDidChange = this.changed.event;
  private readonly subscriptions: vscode.Disposable[] = [];

  constructor(
    private readonly connect: (vm: string) => Promise<SessionClient>,
    private readonly model: VmModel,
    private readonly log: (m: string) => void,
  ) {
    this.subscriptions.push(
      vscode.window.onDidOpenTerminal((t) => this.adopt(t)),
      vscode.window.onDidCloseTerminal((t) => {
        for (const g of this.terminals.values()) {
          if (g.terminal !== t) continue;
          this.terminals.delete(g.id);
          this.changed.fire(g.vm);
        }
      }),
    );
  }

  /** A new pty for `vm`, registered so the terminal VS Code makes for it is found (profiles). */
  createPty(vm: string): VmPseudoterminal {
    const watchVm = (listener: (info: VmInfo | undefined) => void) => this.model.onDidChange(() => listener(this.model.get(vm)));
    const pty = new VmPseudoterminal({ vm, connect: () => this.connect(vm), watchVm, log: this.log });
    const g: GuestTerminal = { id: this.nextId++, vm, pty };
    this.terminals.set(g.id, g);
    pty.onDidStartSession(() => this.changed.fire(vm));
    return pty;
  }

  /** Opens a terminal on `vm` and shows it. */
  open(vm: string): GuestTerminal {
    const pty = this.createPty(vm);
    const terminal = vscode.window.createTerminal({ name: `${vm} (Sandbox VM)`, pty, iconPath: new vscode.ThemeIcon('vm'), isTransient: true });
    this.adopt(terminal);
    terminal.show();
    return this.byPty(pty)!;
  }

  private byPty(pty: unknown): GuestTerminal | undefined {
    for (const g of this.terminals.values()) if (g.pty === pty) return g;
    return undefined;
  }

  private adopt(t: vscode.Terminal): void {
    const pty = (t.creationOptions as vscode.ExtensionTerminalOptions).pty;
    const g = pty && this.byPty(pty);
    if (!g || g.terminal) return;
    g.terminal = t;
    this.changed.fire(g.vm);
  }

  /** The VM's open terminals, oldest first. */
  of(vm: string): GuestTerminal[] {
    return [...this.terminals.values()].filter((g) => g.vm === vm && g.terminal);
  }

  get(id: number): GuestTerminal | undefined {
    return this.terminals.get(id);
  }

  dispose(): void {
    for (const s of this.subscriptions) s.dispose();
    this.changed.dispose();
  }
}
