/**
 * The checkpoint commands: Create Checkpoint and Undo on a VM, Apply, Rename and Delete on a
 * checkpoint (Hyper-V Manager's Checkpoints pane). Each takes the tree node it was invoked on, or
 * a VM name / `{vm, checkpoint}` (tests, other extensions), or nothing (the palette: it asks).
 * They call the service and read the VM's list again; the view follows the model.
 */
import * as vscode from 'vscode';
import type { CheckpointView } from '../../runtime/service/checkpointTree';
import { validateCheckpointName } from '../../runtime/service/checkpointTree';
import type { CommandDeps } from '../commands/deps';
import { pickVm, type VmTarget } from '../ui/pickVm';
import { formatWhen, suggestedName } from './checkpointItems';
import type { CheckpointBranch, CheckpointNode } from './checkpointBranch';
import type { CheckpointModel } from './checkpointModel';

/** What the checkpoint commands need beyond CommandDeps. */
export interface CheckpointDeps {
  model: CheckpointModel;
  branch: CheckpointBranch;
  /** The VM the last `sandboxvm` task of this window ran in, and its undo point. */
  lastTaskRun(): { vm: string; checkpoint: string } | undefined;
}

/** A checkpoint as callers name it: a tree node, or `{vm, checkpoint}` (its name or id). */
export type CheckpointTarget = CheckpointNode | { vm: string; checkpoint: string } | undefined;

const ACTIVE = ['running', 'paused', 'saved', 'stopped'] as const;

function feature(deps: CommandDeps): CheckpointDeps {
  if (!deps.checkpoints) throw new Error('checkpoints are not available in this window');
  return deps.checkpoints;
}

function allViews(tree: CheckpointView[]): CheckpointView[] {
  return tree.flatMap((v) => [v, ...allViews(v.children)]);
}

/** The checkpoint a command acts on, or undefined when the user dismissed a pick. */
export async function pickCheckpoint(deps: CommandDeps, target: CheckpointTarget, verb: string): Promise<{ vm: string; view: CheckpointView } | undefined> {
  const f = feature(deps);
  if (target && 'key' in target) {
    const view = f.branch.view(target);
    if (!view) throw new Error('that checkpoint is no longer there');
    return { vm: target.vm, view };
  }
  const vm = target?.vm ?? (await pickVm(deps.model, undefined, ACTIVE, `${verb} a checkpoint of`));
  if (!vm) return undefined;
  const views = allViews((await f.model.refresh(vm))?.tree ?? []);
  if (target) {
    const view = views.find((v) => v.name === target.checkpoint) ?? views.find((v) => v.id === target.checkpoint);
    if (!view) throw new Error(`${vm} has no checkpoint "${target.checkpoint}"`);
    return { vm, view };
  }
  if (views.length === 0) {
    void vscode.window.showInformationMessage(`${vm} has no checkpoints yet; Create Checkpoint makes one.`);
    return undefined;
  }
  const now = new Date();
  const picked = await vscode.window.showQuickPick(
    views.reverse().map((v) => ({ label: `$(${v.undo ? 'debug-step-back' : 'history'}) ${v.name}`, description: `${v.state} · ${formatWhen(v.createdAt, now)}${v.current ? ' · Now is here' : ''}`, view: v })),
    { title: `Choose the checkpoint of ${vm} to ${verb}`, placeHolder: 'Checkpoint name' },
  );
  return picked && { vm, view: picked.view };
}

function nameProblem(value: string, taken: Set<string>): string | undefined {
  try {
    validateCheckpointName(value);
  } catch (err) {
    return (err as Error).message;
  }
  return taken.has(value) ? 'A checkpoint of this VM already has this name.' : undefined;
}

/** Create Checkpoint: asks for a name (a default offered); `options.name` skips the question. */
export async function createCheckpoint(deps: CommandDeps, target?: VmTarget, options?: { name?: string }): Promise<CheckpointView | undefined> {
  const f = feature(deps);
  const vm = await pickVm(deps.model, target, ACTIVE, 'checkpoint');
  if (!vm) return undefined;
  const existing = allViews((await f.model.refresh(vm))?.tree ?? []);
  const taken = new Set(existing.map((v) => v.name));
  const name =
    options?.name ??
    (await vscode.window.showInputBox({
      title: `Create a checkpoint of ${vm}`,
      prompt: deps.model.get(vm)?.state === 'stopped' ? 'Its disk is kept.' : 'Its disk and running state are kept (the guest pauses for a moment).',
      value: suggestedName(existing),
      validateInput: (v) => nameProblem(v, taken),
    }));
  if (name === undefined) return undefined;
  const client = await deps.connection.client();
  const made = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Checkpointing ${vm}` }, () => client.createCheckpoint(vm, name));
  deps.log.info(`checkpoint ${made.id} "${made.name}" of ${vm} (${made.state}) in ${made.elapsedMs} ms${made.pausedMs !== undefined ? `, guest paused ${made.pausedMs} ms` : ''}`);
  vscode.window.setStatusBarMessage(`$(history) Checkpoint "${made.name}" of ${vm} taken`, 5000);
  const list = await f.model.refresh(vm);
  return allViews(list?.tree ?? []).find((v) => v.id === made.id);
}

export const APPLY_CHOICES = {
  checkpointFirst: 'Checkpoint the current state, then apply',
  discard: 'Apply without saving the current state',
} as const;

/**
 * Apply: asks whether to checkpoint the state being left first (the default, as Hyper-V asks);
 * `options.discardCurrent` answers it.
 */
export async function applyCheckpoint(deps: CommandDeps, target?: CheckpointTarget, options?: { discardCurrent?: boolean }): Promise<void> {
  const f = feature(deps);
  const picked = await pickCheckpoint(deps, target, 'apply');
  if (!picked) return;
  const { vm, view } = picked;
  let discardCurrent = options?.discardCurrent;
  if (discardCurrent === undefined) {
    const choice = await vscode.window.showQuickPick(
      [
        { label: `$(history) ${APPLY_CHOICES.checkpointFirst}`, detail: `${vm} as it is now is kept as a checkpoint named "before applying ${view.name}".`, discard: false },
        { label: `$(discard) ${APPLY_CHOICES.discard}`, detail: `What changed in ${vm} since its last checkpoint is lost.`, discard: true },
      ],
      { title: `Apply "${view.name}" to ${vm}?`, placeHolder: `${vm} returns to the checkpoint${view.state === 'running' ? ' and runs from there' : ''}` },
    );
    if (!choice) return;
    discardCurrent = choice.discard;
  }
  const client = await deps.connection.client();
  const r = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Applying "${view.name}" to ${vm}` }, () => client.applyCheckpoint(vm, view.id, { discardCurrent }));
  deps.log.info(`applied checkpoint ${view.id} "${view.name}" to ${vm} in ${r.elapsedMs} ms${r.saved ? `; the state left is "${r.saved.name}"` : ''}`);
  vscode.window.setStatusBarMessage(`$(history) ${vm} is back at "${view.name}"`, 5000);
  await f.model.refresh(vm);
}

export async function renameCheckpoint(deps: CommandDeps, target?: CheckpointTarget, newName?: string): Promise<void> {
  const f = feature(deps);
  const picked = await pickCheckpoint(deps, target, 'rename');
  if (!picked) return;
  const { vm, view } = picked;
  const taken = new Set(allViews(f.model.get(vm)?.tree ?? []).filter((v) => v.id !== view.id).map((v) => v.name));
  const name = newName ?? (await vscode.window.showInputBox({ title: `Rename the checkpoint "${view.name}" of ${vm}`, value: view.name, validateInput: (v) => nameProblem(v, taken) }));
  if (name === undefined || name === view.name) return;
  await (await deps.connection.client()).renameCheckpoint(vm, view.id, name);
  await f.model.refresh(vm);
}

/** Delete: after a modal (`options.confirm: false` skips it); the space it held is freed. */
export async function deleteCheckpoint(deps: CommandDeps, target?: CheckpointTarget, options?: { confirm?: boolean }): Promise<void> {
  const f = feature(deps);
  const picked = await pickCheckpoint(deps, target, 'delete');
  if (!picked) return;
  const { vm, view } = picked;
  if (options?.confirm !== false) {
    const detail = `${view.current ? `${vm} itself stays as it is. ` : ''}Applying it will no longer be possible; its disk space is freed.`;
    const choice = await vscode.window.showWarningMessage(`Delete the checkpoint "${view.name}" of ${vm}?`, { modal: true, detail }, 'Delete');
    if (choice !== 'Delete') return;
  }
  const client = await deps.connection.client();
  const r = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Deleting "${view.name}" of ${vm}` }, () => client.deleteCheckpoint(vm, view.id));
  deps.log.info(`deleted checkpoint ${r.id} "${r.name}" of ${vm}; ${r.reclaimedBytes} bytes freed`);
  await f.model.refresh(vm);
}

/**
 * Undo: returns the VM to its newest undo point (taken before each `sandboxvm` task run or
 * `exec --undo-point`), discarding what happened since, after a modal (`confirm: false` skips it).
 */
export async function undoVm(deps: CommandDeps, target?: VmTarget, options?: { confirm?: boolean }): Promise<void> {
  const f = feature(deps);
  const vm = await pickVm(deps.model, target, ACTIVE, 'undo');
  if (!vm) return;
  const points = allViews((await f.model.refresh(vm))?.tree ?? []).filter((v) => v.undo).sort((a, b) => b.createdAt.localeCompare(a.createdAt));
  if (points.length === 0) throw new Error(`${vm} has no undo point; a sandboxvm task with "undoPoint": true takes one before it runs`);
  if (options?.confirm !== false) {
    const when = formatWhen(points[0].createdAt, new Date());
    const choice = await vscode.window.showWarningMessage(`Undo ${vm} to "${points[0].name}" (${when})?`, { modal: true, detail: `Everything ${vm} did since is discarded; it comes back as it was then.` }, 'Undo');
    if (choice !== 'Undo') return;
  }
  const client = await deps.connection.client();
  const r = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Undoing ${vm}` }, () => client.undo(vm));
  deps.log.info(`undid ${vm} to "${r.checkpoint}" in ${r.elapsedMs} ms`);
  vscode.window.setStatusBarMessage(`$(debug-step-back) ${vm} is back at "${r.checkpoint}"`, 5000);
  await f.model.refresh(vm);
}

/** Undo Last Task Run: Undo on the VM the last `sandboxvm` task of this window ran in. */
export async function undoLastTaskRun(deps: CommandDeps, options?: { confirm?: boolean }): Promise<void> {
  const last = feature(deps).lastTaskRun();
  if (!last) {
    void vscode.window.showInformationMessage('No sandboxvm task with an undo point has run in this window; Undo on a VM returns it to its last undo point.');
    return;
  }
  await undoVm(deps, last.vm, options);
}
