/** Actions for a VM (the status bar item's click): a quick pick of what its state allows. */
import * as vscode from 'vscode';
import { pickVm, type VmTarget } from '../ui/pickVm';
import { workspaceVmName } from '../ui/statusBar';
import { vmActions } from '../ui/vmActions';
import type { CommandDeps } from './deps';

export async function showActions(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = target ?? (workspaceVmName() || undefined);
  const vm = await pickVm(deps.model, name, ['stopped', 'saved', 'running', 'paused', 'starting', 'stopping', 'saving'], 'act on');
  if (!vm) return;
  const info = deps.model.get(vm);
  const picked = await vscode.window.showQuickPick(vmActions(info?.state), { title: info ? `${vm}: ${info.state}` : `${vm} does not exist` });
  if (picked) await vscode.commands.executeCommand(picked.command, info ? vm : undefined);
}
