/** Show Console Log (the VM's serial console, as an editor) and the extension's and service's logs. */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { SERVICE_FILES } from '../../runtime/common/paths';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

export async function showLog(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['stopped', 'saved', 'running', 'paused', 'starting', 'stopping', 'saving'], 'show the console log of');
  const info = name && deps.model.get(name);
  if (!info) return;
  await vscode.window.showTextDocument(vscode.Uri.file(info.paths.consoleLog), { preview: true });
}

export async function showServiceLog(deps: CommandDeps, home: string): Promise<void> {
  deps.log.show(true);
  const file = path.join(home, SERVICE_FILES.log);
  await vscode.window.showTextDocument(vscode.Uri.file(file), { preview: true, preserveFocus: true }).then(undefined, () => undefined);
}
