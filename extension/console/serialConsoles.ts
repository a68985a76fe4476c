/**
 * The open serial consoles, one per VM: opening the console of a VM that has one shows it (like
 * VMConnect's one window per VM); one that ended is replaced by a fresh one.
 */
import * as vscode from 'vscode';
import type { SerialClient } from '../../runtime/client/serialClient';
import { SerialPseudoterminal } from './serialPseudoterminal';

export interface SerialConsole {
  readonly vm: string;
  readonly pty: SerialPseudoterminal;
  readonly terminal: vscode.Terminal;
}

export class SerialConsoles implements vscode.Disposable {
  private readonly open = new Map<string, SerialConsole & { ended: boolean }>();
  private readonly subscriptions: vscode.Disposable[] = [];

  constructor(private readonly connect: (vm: string) => Promise<SerialClient>, private readonly log: (m: string) => void) {
    this.subscriptions.push(
      vscode.window.onDidCloseTerminal((t) => {
        for (const [vm, c] of this.open) if (c.terminal === t) this.open.delete(vm);
      }),
    );
  }

  get(vm: string): SerialConsole | undefined {
    return this.open.get(vm);
  }

  /** Shows the VM's console, opening it when it has none (or the one it had ended). */
  show(vm: string): SerialConsole {
    const existing = this.open.get(vm);
    if (existing && !existing.ended) {
      existing.terminal.show();
      return existing;
    }
    const pty = new SerialPseudoterminal({ vm, connect: () => this.connect(vm), log: this.log });
    const terminal = vscode.window.createTerminal({ name: `${vm}: serial console`, pty, iconPath: new vscode.ThemeIcon('plug'), isTransient: true });
    const entry = { vm, pty, terminal, ended: false };
    pty.onDidEnd(() => (entry.ended = true));
    this.open.set(vm, entry);
    terminal.show();
    return entry;
  }

  dispose(): void {
    for (const s of this.subscriptions) s.dispose();
    this.open.clear();
  }
}
