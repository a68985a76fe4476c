/** The "Sandbox VM" terminal profile: a terminal on a running VM from the terminal dropdown. */
import * as vscode from 'vscode';
import { TerminalProfile } from '../ids';
import type { VmModel } from '../model/vmModel';
import { pickVm } from '../ui/pickVm';
import type { TerminalManager } from './terminalManager';

export function registerTerminalProfile(model: VmModel, terminals: TerminalManager, ensureConnected: () => Promise<unknown>): vscode.Disposable {
  return vscode.window.registerTerminalProfileProvider(TerminalProfile.vm, {
    async provideTerminalProfile() {
      await ensureConnected();
      const running = model.list().filter((i) => i.state === 'running');
      const name = running.length === 1 ? running[0].name : await pickVm(model, undefined, ['running'], 'open a terminal on');
      if (!name) return undefined;
      return new vscode.TerminalProfile({ name: `${name} (Sandbox VM)`, pty: terminals.createPty(name), iconPath: new vscode.ThemeIcon('vm'), isTransient: true });
    },
  });
}
