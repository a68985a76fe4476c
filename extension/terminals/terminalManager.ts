/**
 * The extension's guest terminals: opens them (from a command or the "Sandbox VM" profile), knows
 * which VM each belongs to (the tree shows them as the VM's children) and forgets them when closed.
 * Each open terminal's VM and guest session are recorded in the workspace's state; when the window
 * goes away (a reload) the guest keeps the shells (keepOnDisconnect), and the next window's
 * `revive` makes a terminal for each that can still be attached, showing what it printed meanwhile.
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

/** A terminal this workspace had open: recorded in workspaceState under SAVED_KEY. */
export interface SavedTerminal {
  vm: string;
  session: number;
}
export const SAVED_KEY = 'sandboxvm.openTerminals';
/** At most this many terminals are recorded (the oldest are forgotten). */
const MAX_SAVED = 64;

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
    private readonly state: vscode.Memento,
  ) {
    this.subscriptions.push(
      vscode.window.onDidOpenTerminal((t) => this.adopt(t)),
      vscode.window.onDidCloseTerminal((t) => {
        for (const g of this.terminals.values()) {
          if (g.terminal !== t) continue;
          this.terminals.delete(g.id);
          // The window going away keeps the guest shell for the next window; the user closing it ends it.
          if (t.exitStatus?.reason === vscode.TerminalExitReason.Shutdown) g.pty.letGo();
          else {
            g.pty.closeSession();
            if (g.pty.sessionId !== undefined) this.forget({ vm: g.vm, session: g.pty.sessionId });
          }
          this.changed.fire(g.vm);
        }
      }),
    );
  }

  /** The terminals recorded as open in this workspace. */
  saved(): SavedTerminal[] {
    const list = this.state.get<unknown>(SAVED_KEY);
    if (!Array.isArray(list)) return [];
    return list.filter((r): r is SavedTerminal => typeof r?.vm === 'string' && Number.isSafeInteger(r?.session) && r.session > 0);
  }

  private remember(r: SavedTerminal): void {
    const list = this.saved().filter((s) => s.vm !== r.vm || s.session !== r.session);
    void this.state.update(SAVED_KEY, [...list, r].slice(-MAX_SAVED));
  }

  private forget(r: SavedTerminal): void {
    const list = this.saved();
    const kept = list.filter((s) => s.vm !== r.vm || s.session !== r.session);
    if (kept.length !== list.length) void this.state.update(SAVED_KEY, kept);
  }

  private revived = false;

  /**
   * Once per window, when the service is reachable: a terminal for each recorded session that can
   * still be attached (its output since the last window comes first); the others are forgotten.
   * Resolves with the terminals made.
   */
  async revive(): Promise<GuestTerminal[]> {
    if (this.revived) return [];
    this.revived = true;
    const made: GuestTerminal[] = [];
    for (const r of this.saved()) {
      const state = this.model.get(r.vm)?.state;
      if (state !== 'running' && state !== 'paused') {
        this.log(`terminal on ${r.vm} (session ${r.session}) not revived: the VM is ${state ?? 'gone'}`);
        this.forget(r);
        continue;
      }
      if ([...this.terminals.values()].some((g) => g.vm === r.vm && g.pty.sessionId === r.session)) continue;
      const pty = this.createPty(r.vm);
      const g = this.byPty(pty)!;
      try {
        await pty.attachExisting(r.session);
      } catch (err) {
        this.log(`terminal on ${r.vm} (session ${r.session}) not revived: ${(err as Error).message}`);
        this.terminals.delete(g.id);
        this.forget(r);
        continue;
      }
      this.adopt(vscode.window.createTerminal(this.terminalOptions(r.vm, pty)));
      this.log(`terminal on ${r.vm} (session ${r.session}) revived after the window reloaded`);
      made.push(g);
    }
    return made;
  }

  /** A new pty for `vm`, registered so the terminal VS Code makes for it is found (profiles). */
  createPty(vm: string): VmPseudoterminal {
    const watchVm = (listener: (info: VmInfo | undefined) => void) => this.model.onDidChange(() => listener(this.model.get(vm)));
    const pty = new VmPseudoterminal({ vm, connect: () => this.connect(vm), watchVm, currentVm: () => this.model.get(vm), log: this.log });
    const g: GuestTerminal = { id: this.nextId++, vm, pty };
    this.terminals.set(g.id, g);
    pty.onDidStartSession((session) => {
      this.remember({ vm, session });
      this.changed.fire(vm);
    });
    pty.onDidExit(() => {
      if (pty.sessionId !== undefined) this.forget({ vm, session: pty.sessionId });
      this.changed.fire(vm);
    });
    return pty;
  }

  /**
   * Ours are transient: VS Code cannot revive an extension's Pseudoterminal after a reload (it
   * would restore a dead tab); `revive` makes them again instead.
   */
  private terminalOptions(vm: string, pty: VmPseudoterminal): vscode.ExtensionTerminalOptions {
    return { name: `${vm} (Sandbox VM)`, pty, iconPath: new vscode.ThemeIcon('vm'), isTransient: true };
  }

  /** Opens a terminal on `vm` and shows it. */
  open(vm: string): GuestTerminal {
    const pty = this.createPty(vm);
    const terminal = vscode.window.createTerminal(this.terminalOptions(vm, pty));
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

  /** The extension host is going away: the guest shells stay for the next window. */
  dispose(): void {
    for (const g of this.terminals.values()) g.pty.letGo();
    for (const s of this.subscriptions) s.dispose();
    this.changed.dispose();
  }
}
