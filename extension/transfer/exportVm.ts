/** Export VM...: a VM to one archive file (save dialog, cancellable progress); a running one through a checkpoint. */
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { ExportedVm } from '../../runtime/transfer/transfers';
import { formatBytes } from '../../runtime/cli/progress';
import type { CommandDeps } from '../commands/deps';
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withTransferProgress } from './transferProgress';

/** Returns what was written, or undefined when the user dismissed a dialog. `file` skips the dialog (tests). */
export async function exportVm(deps: CommandDeps, target?: VmTarget, file?: string): Promise<ExportedVm | undefined> {
  const name = await pickVm(deps.model, target, ['running', 'paused', 'stopped', 'saved'], 'export');
  if (!name) return undefined;
  if (file === undefined) {
    const uri = await vscode.window.showSaveDialog({
      title: `Export ${name}`,
      defaultUri: vscode.Uri.file(path.join(os.homedir(), `${name}.sandboxvm.tar`)),
      filters: { 'Sandbox VM archive': ['tar'] },
      saveLabel: 'Export',
    });
    if (!uri) return undefined;
    file = uri.fsPath;
  }
  const client = await deps.connection.client();
  const r = await withTransferProgress(`Exporting ${name}`, (report, signal) => client.exportVm(name, { path: file }, report, signal));
  void vscode.window.showInformationMessage(`Exported ${name} to ${file} (${formatBytes(r.bytes)}).`);
  return r;
}
