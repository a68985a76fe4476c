/**
 * Clone from This Checkpoint...: on a checkpoint node (or `{vm, checkpoint}`, or the palette, which
 * asks), a new VM that starts where the checkpoint is: its disk, and its memory when the checkpoint
 * has it (the clone is then saved and resumes from there, with its own identity). Asks the name
 * and the kind like Clone VM...; runs with progress.
 */
import * as vscode from 'vscode';
import type { CommandDeps } from '../commands/deps';
import { pickCheckpoint, type CheckpointTarget } from '../checkpoints/checkpointCommands';
import { withServiceProgress } from '../ui/progress';
import { nameError } from '../ui/createValidation';
import { CLONE_KINDS, suggestName } from './cloneChoices';

/** Returns the new VM's name, or undefined when the user cancelled. */
export async function cloneFromCheckpoint(deps: CommandDeps, target?: CheckpointTarget, args?: { newName?: string; full?: boolean }): Promise<string | undefined> {
  const picked = await pickCheckpoint(deps, target, 'clone');
  if (!picked) return undefined;
  const { vm, view } = picked;
  const taken = (n: string) => deps.model.get(n) !== undefined;
  const newName =
    args?.newName ??
    (await vscode.window.showInputBox({
      title: `Clone ${vm} at checkpoint "${view.name}"`,
      prompt: 'Name of the new VM',
      value: suggestName(vm, taken),
      validateInput: (v) => nameError(v, taken),
    }));
  if (newName === undefined) return undefined;
  let full = args?.full;
  if (full === undefined) {
    const kind = await vscode.window.showQuickPick(CLONE_KINDS, { title: `Clone ${vm} at "${view.name}" as ${newName}` });
    if (!kind) return undefined;
    full = kind.full;
  }
  const client = await deps.connection.client();
  const result = await withServiceProgress(`Cloning ${vm} at "${view.name}" as ${newName}`, (report) => client.clone({ name: vm, newName, checkpoint: view.id, full }, report));
  deps.log.info(`cloned ${vm} at checkpoint ${view.id} as ${newName} (${result.kind}, ${result.elapsedMs} ms; ${result.state})`);
  return newName;
}
