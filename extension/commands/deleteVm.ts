/** Delete: after a modal that says what is lost, every file of the VM (a running VM is turned off first). */
import * as vscode from 'vscode';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

/** What the confirmation says (exported for the test). */
export function deleteWarning(name: string, state: string | undefined): string {
  const running = state === 'running' || state === 'paused';
  return [
    `Delete the VM "${name}"?`,
    `${running ? 'It is running and will be turned off at once. ' : ''}Its disk (everything written inside the VM)${state === 'saved' ? ', its saved running state' : ''} and its logs are removed. This cannot be undone.`,
  ].join('\n\n');
}

/** `confirm: false` skips the modal (tests, other extensions that asked already). */
export async function deleteVm(deps: CommandDeps, target?: VmTarget, options?: { confirm?: boolean }): Promise<void> {
  const name = await pickVm(deps.model, target, ['stopped', 'saved', 'running', 'paused'], 'delete');
  if (!name) return;
  const state = deps.model.get(name)?.state;
  if (options?.confirm !== false) {
    const [title, detail] = deleteWarning(name, state).split('\n\n');
    const choice = await vscode.window.showWarningMessage(title, { modal: true, detail }, 'Delete');
    if (choice !== 'Delete') return;
  }
  await (await deps.connection.client()).remove(name, state === 'running' || state === 'paused');
  deps.log.info(`deleted ${name}`);
}
