/**
 * The status bar item of the workspace's VM (setting `sandboxvm.workspaceVm`): its state by icon
 * and word, rendered from the model; a click offers the actions its state allows.
 */
import * as vscode from 'vscode';
import { Command, SECTION, Setting } from '../ids';
import type { VmModel } from '../model/vmModel';
import { vmLook } from '../tree/vmPresentation';

export function workspaceVmName(): string {
  return vscode.workspace.getConfiguration(SECTION).get<string>(Setting.workspaceVm, '').trim();
}

export function createStatusBar(model: VmModel, ensureConnected: () => void): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('sandboxvm.workspaceVm', vscode.StatusBarAlignment.Left, 50);
  item.name = 'Sandbox VM of this workspace';
  item.command = Command.showActions;
  const render = () => {
    const name = workspaceVmName();
    if (!name) return item.hide();
    ensureConnected();
    const info = model.get(name);
    if (!info) {
      item.text = `$(vm-outline) ${name}: not found`;
      item.tooltip = `No VM named ${name}: create it, or change the sandboxvm.workspaceVm setting`;
    } else {
      const look = vmLook(info);
      item.text = `$(${look.icon}) ${name}`;
      item.tooltip = new vscode.MarkdownString(look.tooltip);
      item.accessibilityInformation = { label: `${name}, ${look.description}` };
    }
    item.show();
  };
  render();
  const subs = [
    model.onDidChange(render),
    vscode.workspace.onDidChangeConfiguration((e) => e.affectsConfiguration(`${SECTION}.${Setting.workspaceVm}`) && render()),
  ];
  return { dispose: () => (subs.forEach((s) => s.dispose()), item.dispose()) };
}
