/** Import VM...: a new VM from an archive file (open dialog, a name prompt defaulting to the archive's VM). */
import * as vscode from 'vscode';
import { validateVmName } from '../../runtime/common/names';
import type { ImportedVm } from '../../runtime/transfer/transfers';
import { peekManifest } from '../../runtime/transfer/peekManifest';
import type { CommandDeps } from '../commands/deps';
import { withTransferProgress } from './transferProgress';

/** Returns the new VM, or undefined when the user dismissed a dialog. `file` and `name` skip the dialogs (tests). */
export async function importVm(deps: CommandDeps, file?: string, name?: string): Promise<ImportedVm | undefined> {
  if (typeof file !== 'string') {
    const picked = await vscode.window.showOpenDialog({ title: 'Import a VM', canSelectMany: false, filters: { 'Sandbox VM archive': ['tar'], 'All files': ['*'] }, openLabel: 'Import' });
    if (!picked?.[0]) return undefined;
    file = picked[0].fsPath;
  }
  if (name === undefined) {
    const manifest = await peekManifest(file);
    const taken = (n: string) => deps.model.list().some((i) => i.name === n);
    let suggestion = manifest.vm.name;
    for (let i = 2; taken(suggestion) && i < 100; i++) suggestion = `${manifest.vm.name}-${i}`.slice(0, 63);
    name = await vscode.window.showInputBox({
      title: `Import ${manifest.vm.name} (${manifest.vm.state}, ${manifest.vm.cpus} CPU, ${manifest.vm.memoryMiB} MiB)`,
      prompt: 'Name of the new VM',
      value: suggestion,
      validateInput: (v) => {
        try {
          validateVmName(v);
        } catch (err) {
          return (err as Error).message;
        }
        return taken(v) ? `a VM named ${v} already exists` : undefined;
      },
    });
    if (!name) return undefined;
  }
  const client = await deps.connection.client();
  const chosen = name;
  const r = await withTransferProgress(`Importing ${chosen}`, (report, signal) => client.importVm({ path: file }, chosen, report, signal));
  void vscode.window.showInformationMessage(`Imported ${r.info.name} (${r.info.state}).`);
  return r;
}
