/**
 * Sync Workspace Folder to VM, Stop Syncing and Reveal in Explorer: clients of the service's
 * syncs (runtime/client/syncClient.ts), as `sandboxvm sync` is. Starting a sync shows the first
 * copy (files and bytes) in a cancellable notification, Cancel stopping the sync; after that the
 * tree and the status bar show it, from the SyncModel.
 */
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { formatBytes } from '../../runtime/cli/progress';
import { ErrorCode, SandboxError, asSandboxError } from '../../runtime/common/errors';
import type { SyncStatus } from '../../runtime/sync/types';
import type { CommandDeps } from '../commands/deps';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { SyncModel } from './syncModel';

/** Test and automation arguments: skip the prompts. */
export interface SyncFolderOptions {
  hostDir?: string;
  guestPath?: string;
}

/** How long the first copy may keep failing (the service retries) before the command says so. */
const ERROR_GRACE_MS = 15_000;

/** The guest folder a sync of `hostDir` goes to unless the user types another (as the CLI's). */
export function defaultGuestPath(hostDir: string): string {
  return `/root/${path.basename(hostDir) || 'workspace'}`;
}

/** An absolute guest folder other than /, of printable characters; or the sentence saying what is wrong. */
export function checkSyncGuestPath(value: string): string | undefined {
  if (!value.startsWith('/')) return 'Give an absolute folder in the guest, like /root/project.';
  if (value.length > 4096 || /[\x00-\x1f\x7f]/.test(value)) return 'The path is too long or has control characters.';
  if (path.posix.normalize(value) === '/') return 'Not / itself: a sync removes what the host folder lacks. Give a folder, like /root/project.';
  return undefined;
}

/**
 * From a VM's context menu (`target`: its node) or the palette (asks for the VM when more than one
 * runs). The host folder is the workspace's (a pick when it has several, an open dialog when none),
 * the guest folder is typed (default /root/<name>). Resolves with the sync's status once the guest
 * matches, or undefined when the user cancelled (the sync then stopped).
 */
export async function syncFolder(deps: CommandDeps, target?: VmTarget, options: SyncFolderOptions = {}): Promise<SyncStatus | undefined> {
  const syncs = requireSyncs(deps);
  const hostDir = options.hostDir ?? (await pickHostFolder());
  if (!hostDir) return undefined;
  const st = await fsp.stat(hostDir).catch(() => undefined);
  if (!st) throw new SandboxError(ErrorCode.BadArgument, `The folder ${hostDir} does not exist on this machine.`);
  if (!st.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${hostDir} is a file; choose a folder to sync.`);
  await deps.connection.client();
  const vm = await pickRunningVm(deps, target, 'sync a folder to');
  if (!vm) return undefined;
  const guestPath = options.guestPath ?? (await vscode.window.showInputBox({
    title: `Sync ${path.basename(hostDir)} to ${vm}`,
    prompt: 'The folder in the guest to keep equal to the host folder (made if missing; files the host folder lacks are removed from it)',
    value: defaultGuestPath(hostDir),
    validateInput: checkSyncGuestPath,
  }));
  if (guestPath === undefined) return undefined;
  const problem = checkSyncGuestPath(guestPath);
  if (problem) throw new SandboxError(ErrorCode.BadArgument, problem);
  const client = await syncs.client();
  const name = path.basename(hostDir);
  return vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Syncing ${name} to ${vm}:${guestPath}`, cancellable: true }, async (progress, token) => {
    progress.report({ message: 'comparing the folders' });
    const added = await client.add(vm, { hostDir, guestPath }).catch((err) => {
      throw explainAddFailure(err, vm, guestPath, name);
    });
    let shown = 0;
    const final = await firstCopy(syncs, added, token, (s) => {
      if (s.state === 'syncing' && s.totalFiles > 0) {
        const pct = s.totalBytes > 0 ? Math.min(100, (s.bytes / s.totalBytes) * 100) : Math.min(100, (s.files / s.totalFiles) * 100);
        progress.report({ message: `${s.files} of ${s.totalFiles} files, ${formatBytes(s.bytes)} of ${formatBytes(s.totalBytes)}`, increment: Math.max(0, pct - shown) });
        shown = Math.max(shown, pct);
      } else progress.report({ message: s.state === 'error' ? `${s.message.replace(/; retrying$/, '')} (retrying)` : s.message });
    });
    if (final === 'cancelled') {
      await client.remove(vm, { id: added.id }).catch((err) => deps.log.warn(`sync ${added.id}: ${(err as Error).message}`));
      deps.notify.info(`Stopped syncing ${name} to ${vm}; the guest keeps the files copied so far.`);
      return undefined;
    }
    if (final === 'removed') throw new SandboxError(ErrorCode.Cancelled, 'the sync was stopped elsewhere');
    if (final.state === 'error') {
      throw new SandboxError(ErrorCode.Internal, `Syncing ${name} to ${vm}:${final.guestPath} keeps failing: ${final.message.replace(/; retrying$/, '')}; it retries in the background until you stop it (Stop Syncing on its item under ${vm}).`);
    }
    for (const w of final.warnings) deps.log.warn(`sync ${name}: ${w}`);
    const seconds = ((final.firstSyncMs ?? 0) / 1000).toFixed(1);
    deps.log.info(`sync ${added.id}: ${hostDir} -> ${vm}:${final.guestPath} in sync (${final.files} file(s), ${formatBytes(final.bytes)} in ${seconds} s${final.equal ? `, ${final.equal} already there` : ''})`);
    return final;
  });
}

/**
 * Waits until the sync has matched once (`lastSyncAt`), its error has lasted ERROR_GRACE_MS, it is
 * removed, or the user cancels. Every status seen goes to `report`.
 */
function firstCopy(syncs: SyncModel, added: SyncStatus, token: vscode.CancellationToken, report: (s: SyncStatus) => void): Promise<SyncStatus | 'cancelled' | 'removed'> {
  return new Promise((resolve) => {
    let seen = false;
    let failing: NodeJS.Timeout | undefined;
    const finish = (v: SyncStatus | 'cancelled' | 'removed') => {
      clearTimeout(failing);
      sub.dispose();
      cancel.dispose();
      resolve(v);
    };
    const check = () => {
      const s = syncs.get(added.vm, added.id);
      if (!s) return seen ? finish('removed') : settle(added);
      seen = true;
      settle(s);
    };
    const settle = (s: SyncStatus) => {
      report(s);
      if (s.state === 'in-sync' && s.lastSyncAt !== undefined) return finish(s);
      if (s.state !== 'error') {
        clearTimeout(failing);
        failing = undefined;
      } else failing ??= setTimeout(() => finish(syncs.get(added.vm, added.id) ?? s), ERROR_GRACE_MS);
    };
    const sub = syncs.onDidChange((c) => {
      if (!c || (c.vm === added.vm && c.id === added.id)) check();
    });
    const cancel = token.onCancellationRequested(() => finish('cancelled'));
    check();
  });
}

/** The service's refusal of `sync.add` as one sentence about this sync. */
function explainAddFailure(err: unknown, vm: string, guestPath: string, name: string): SandboxError {
  const e = asSandboxError(err);
  if (/is not a directory/.test(e.message)) return new SandboxError(ErrorCode.BadArgument, `The guest path ${guestPath} in ${vm} is a file; give a folder (it is made if missing).`, { cause: e });
  return new SandboxError(e.code, `Cannot sync ${name} to ${vm}: ${e.message}`, { cause: e });
}

async function pickHostFolder(): Promise<string | undefined> {
  const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file');
  if (folders.length === 1) return folders[0].uri.fsPath;
  if (folders.length > 1) {
    const picked = await vscode.window.showQuickPick(folders.map((f) => ({ label: f.name, description: f.uri.fsPath, dir: f.uri.fsPath })), { title: 'Choose the workspace folder to sync', placeHolder: 'Workspace folder' });
    return picked?.dir;
  }
  const picked = await vscode.window.showOpenDialog({ canSelectFiles: false, canSelectFolders: true, canSelectMany: false, openLabel: 'Sync This Folder', title: 'The folder to sync to a VM' });
  if (!picked?.[0]) return undefined;
  if (picked[0].scheme !== 'file') throw new SandboxError(ErrorCode.BadArgument, `${picked[0].toString()} is not a folder on this machine; only local folders can be synced.`);
  return picked[0].fsPath;
}

/** The VM from the node or name given (which must run), the only running one, or a pick. */
export async function pickRunningVm(deps: CommandDeps, target: VmTarget, verb: string): Promise<string | undefined> {
  if (target === undefined) {
    const running = deps.model.list().filter((i) => i.state === 'running');
    if (running.length === 1) return running[0].name;
    return pickVm(deps.model, undefined, ['running'], verb);
  }
  const vm = await pickVm(deps.model, target, ['running'], verb);
  const state = vm === undefined ? undefined : deps.model.get(vm)?.state;
  if (vm !== undefined && state === undefined) throw new SandboxError(ErrorCode.UnknownVm, `There is no VM named ${vm}.`);
  if (vm !== undefined && state !== 'running') throw new SandboxError(ErrorCode.WrongState, `The VM ${vm} is ${state}; start it first.`);
  return vm;
}

/** A sync's node in the tree, or what a caller passes to name one. */
export interface SyncTarget {
  vm: string;
  id: string;
}

/** Stops the sync of the node (or one picked from all of them); the guest keeps its files. */
export async function stopSync(deps: CommandDeps, target?: SyncTarget): Promise<{ removed: string[] } | undefined> {
  const syncs = requireSyncs(deps);
  await syncs.ready();
  const which = target ?? (await pickSync(syncs, 'Choose the sync to stop'));
  if (!which) return undefined;
  const status = syncs.get(which.vm, which.id);
  const result = await (await syncs.client()).remove(which.vm, { id: which.id });
  const name = status ? path.basename(status.hostDir) : which.id;
  void vscode.window.setStatusBarMessage(`$(debug-disconnect) Stopped syncing ${name} to ${which.vm}; the guest keeps its files`, 5000);
  return result;
}

/** Shows the sync's host folder in the Explorer (or the system's file manager when it is outside the workspace). */
export async function revealSyncFolder(deps: CommandDeps, target?: SyncTarget): Promise<void> {
  const syncs = requireSyncs(deps);
  await syncs.ready();
  const which = target ?? (await pickSync(syncs, 'Choose the sync whose folder to reveal'));
  const status = which && syncs.get(which.vm, which.id);
  if (!status) return;
  const uri = vscode.Uri.file(status.hostDir);
  if (vscode.workspace.getWorkspaceFolder(uri)) await vscode.commands.executeCommand('revealInExplorer', uri);
  else await vscode.commands.executeCommand('revealFileInOS', uri);
}

async function pickSync(syncs: SyncModel, title: string): Promise<SyncTarget | undefined> {
  const all = syncs.list();
  if (all.length === 0) {
    void vscode.window.showInformationMessage('No folder is being synced to a VM.');
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(
    all.map((s) => ({ label: path.basename(s.hostDir), description: `${s.vm}:${s.guestPath}`, detail: s.hostDir, vm: s.vm, id: s.id })),
    { title, placeHolder: 'Sync' },
  );
  return picked && { vm: picked.vm, id: picked.id };
}

function requireSyncs(deps: CommandDeps): SyncModel {
  if (!deps.syncs) throw new SandboxError(ErrorCode.Internal, 'workspace syncs are not available in this window');
  return deps.syncs;
}
