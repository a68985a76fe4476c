/**
 * Clone VM...: on a VM item (or from the palette, which asks for the VM), asks the new name
 * (validated as typed) and the kind: a linked clone (default: milliseconds, shares the source's
 * disk) or a full copy (independent, takes a while); runs it with progress. The new VM appears in
 * the view through the service's events.
 */
import * as vscode from 'vscode';
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withServiceProgress } from '../ui/progress';
import { nameError } from '../ui/createValidation';
import type { CommandDeps } from '../commands/deps';
import { CLONE_KINDS, suggestName } from './cloneChoices';

/** Returns the new VM's name, or undefined when the user cancelled. */
export async function cloneVm(deps: CommandDeps, target?: VmTarget, args?: { newName?: string; full?: boolean }): Promise<string | undefined> {
  const source = await pickVm(deps.model, target, ['running', 'paused', 'saved', 'stopped'], 'clone');
  if (!source) return undefined;
  const taken = (n: string) => deps.model.get(n) !== undefined;
  const newName =
    args?.newName ??
    (await vscode.window.showInputBox({
      title: `Clone ${source}`,
      prompt: 'Name of the new VM',
      value: suggestName(source, taken),
      validateInput: (v) => nameError(v, taken),
    }));
  if (newName === undefined) return undefined;
  let full = args?.full;
  if (full === undefined) {
    const kind = await vscode.window.showQuickPick(CLONE_KINDS, { title: `Clone ${source} as ${newName}` });
    if (!kind) return undefined;
    full = kind.full;
  }
  const client = await deps.connection.client();
  const result = await withServiceProgress(`Cloning ${source} as ${newName}`, (report) => client.clone({ name: source, newName, full }, report));
  deps.log.info(`cloned ${source} as ${newName} (${result.kind}, ${result.elapsedMs} ms; ${result.state})`);
  return newName;
}
