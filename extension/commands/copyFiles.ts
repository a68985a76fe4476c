/**
 * Copy to VM (Explorer: files and folders) and Copy from VM (a VM in the tree): a client of
 * runtime/client/copyFiles.ts, as `sandboxvm cp -r` is. The copy shows its bytes in a cancellable
 * notification; a cancelled copy removes the file in progress and keeps those before it.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { GuestCopy } from '../../runtime/client/copyFiles';
import { GuestFiles } from '../../runtime/client/guestFiles';
import type { SessionClient } from '../../runtime/client/sessionClient';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import { formatBytes } from '../../runtime/cli/progress';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

/** Where a copy to the VM goes unless the user types another guest directory. */
export const DEFAULT_GUEST_DIR = '/root';

export interface CopyOutcome {
  files: number;
  bytes: number;
  skipped: number;
  /** Where each source landed (guest paths for a copy to the VM, host paths from it). */
  destinations: string[];
}

/** Test and automation arguments: skip the prompts. */
export interface CopyToOptions {
  vm?: string;
  destination?: string;
}
export interface CopyFromOptions {
  guestPath?: string;
  hostFolder?: string;
}

/** An absolute guest path of printable characters, or the sentence saying what is wrong. */
export function checkGuestPath(value: string): string | undefined {
  if (!value.startsWith('/')) return 'Give an absolute path in the guest, like /root.';
  if (value.length > 4096 || /[\x00-\x1f\x7f]/.test(value)) return 'The path is too long or has control characters.';
  return undefined;
}

/**
 * Explorer: `uri` is the item right-clicked and `uris` the selection (VS Code passes both). From the
 * palette: an open dialog. Then the VM (asked when more than one runs) and the guest directory.
 */
export async function copyToVm(deps: CommandDeps, uri?: vscode.Uri, uris?: vscode.Uri[], options: CopyToOptions = {}): Promise<CopyOutcome | undefined> {
  let sources = uris && uris.length > 0 ? uris : uri ? [uri] : undefined;
  sources ??= await vscode.window.showOpenDialog({ canSelectFiles: true, canSelectFolders: true, canSelectMany: true, openLabel: 'Copy to VM', title: 'Files or folders to copy to a VM' });
  if (!sources || sources.length === 0) return undefined;
  const foreign = sources.find((s) => s.scheme !== 'file');
  if (foreign) throw new SandboxError(ErrorCode.BadArgument, `${foreign.toString()} is not a file on this machine; only local files can be copied to a VM`);
  await deps.connection.client();
  const vm = options.vm ?? (await pickRunning(deps, undefined, 'copy files to'));
  if (!vm) return undefined;
  const destination = options.destination ?? (await vscode.window.showInputBox({
    title: `Copy ${describe(sources.map((s) => s.fsPath))} to ${vm}`,
    prompt: 'The guest directory to copy into',
    value: DEFAULT_GUEST_DIR,
    validateInput: checkGuestPath,
  }));
  if (destination === undefined) return undefined;
  const problem = checkGuestPath(destination);
  if (problem) throw new SandboxError(ErrorCode.BadArgument, problem);
  // A trailing slash: the destination must be an existing directory (cp's rules put each source in it).
  const into = destination.endsWith('/') ? destination : `${destination}/`;
  return transfer(deps, vm, `Copying to ${vm}:${destination}`, async (copy) => {
    const type = await copy.guest.stat(into, true).then((e) => e.type, (err: Error) => {
      if (/in the guest: ENOENT\b/.test(err.message)) return 'missing';
      throw err;
    });
    if (type !== 'dir') throw new SandboxError(ErrorCode.BadArgument, `There is no directory ${destination} in ${vm}${type === 'missing' ? '' : ` (it is a ${type})`}; give an existing one.`);
    const landed: string[] = [];
    for (const s of sources) {
      await copy.upload(s.fsPath, into);
      landed.push(path.posix.join(into, path.basename(s.fsPath)));
    }
    return landed;
  });
}

/** A VM in the tree (or picked): a guest path typed, a host folder chosen, the copy made there. */
export async function copyFromVm(deps: CommandDeps, target?: VmTarget, options: CopyFromOptions = {}): Promise<CopyOutcome | undefined> {
  await deps.connection.client();
  const vm = await pickRunning(deps, target, 'copy files from');
  if (!vm) return undefined;
  const guestPath = options.guestPath ?? (await vscode.window.showInputBox({
    title: `Copy from ${vm}`,
    prompt: 'The file or folder in the guest to copy',
    value: `${DEFAULT_GUEST_DIR}/`,
    validateInput: checkGuestPath,
  }));
  if (guestPath === undefined) return undefined;
  const problem = checkGuestPath(guestPath);
  if (problem) throw new SandboxError(ErrorCode.BadArgument, problem);
  let hostFolder = options.hostFolder;
  if (hostFolder === undefined) {
    const picked = await vscode.window.showOpenDialog({
      canSelectFiles: false, canSelectFolders: true, canSelectMany: false, openLabel: 'Copy Here',
      title: `Where to copy ${vm}:${guestPath}`, defaultUri: vscode.workspace.workspaceFolders?.[0]?.uri,
    });
    if (!picked?.[0]) return undefined;
    if (picked[0].scheme !== 'file') throw new SandboxError(ErrorCode.BadArgument, `${picked[0].toString()} is not a folder on this machine`);
    hostFolder = picked[0].fsPath;
  }
  const into = hostFolder.endsWith(path.sep) ? hostFolder : hostFolder + path.sep;
  return transfer(deps, vm, `Copying ${vm}:${guestPath} to ${hostFolder}`, async (copy) => {
    await copy.download(guestPath, into);
    return [path.join(hostFolder, path.posix.basename(guestPath.replace(/\/+$/, '')))];
  });
}

async function pickRunning(deps: CommandDeps, target: VmTarget, verb: string): Promise<string | undefined> {
  if (target === undefined) {
    const running = deps.model.list().filter((i) => i.state === 'running');
    if (running.length === 1) return running[0].name;
  }
  return pickVm(deps.model, target, ['running'], verb);
}

/** Runs one copy in a cancellable notification showing its bytes; says how it went. */
async function transfer(deps: CommandDeps, vm: string, title: string, work: (copy: GuestCopy) => Promise<string[]>): Promise<CopyOutcome | undefined> {
  let sessions: SessionClient | undefined;
  const warnings: string[] = [];
  const t0 = Date.now();
  try {
    sessions = await (await deps.connection.client()).attach(vm);
    const guest = new GuestFiles(sessions);
    const outcome = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title, cancellable: true }, async (progress, token) => {
      const cancel = new AbortController();
      const sub = token.onCancellationRequested(() => cancel.abort());
      let shown = 0;
      const copy = new GuestCopy(vm, guest, {
        recursive: true,
        signal: cancel.signal,
        onProgress: (bytes, total, current) => {
          const pct = total > 0 ? Math.min(100, (bytes / total) * 100) : 0;
          progress.report({ message: `${formatBytes(bytes)} of ${formatBytes(total)}${current ? ` · ${current}` : ''}`, increment: Math.max(0, pct - shown) });
          shown = Math.max(shown, pct);
        },
        onWarning: (message) => {
          warnings.push(message);
          deps.log.warn(`copy: ${message}`);
        },
      });
      try {
        const destinations = await work(copy);
        return { files: copy.files, bytes: copy.bytes, skipped: copy.skipped, destinations };
      } catch (err) {
        if (err instanceof SandboxError && err.code === ErrorCode.Cancelled) {
          deps.notify.info(`The copy was cancelled; the file in progress was removed${copy.files > 0 ? `, the ${copy.files} file(s) before it are kept` : ''}.`);
          return undefined;
        }
        throw err;
      } finally {
        sub.dispose();
      }
    });
    if (!outcome) return undefined;
    const seconds = Math.max((Date.now() - t0) / 1000, 0.001);
    deps.log.info(`${title}: ${outcome.files} file(s), ${formatBytes(outcome.bytes)} in ${seconds.toFixed(2)} s`);
    if (warnings.length > 0) deps.notify.warn(`${title.replace(/^Copying/, 'Copied')}, but ${warnings.length} entr${warnings.length === 1 ? 'y was' : 'ies were'} skipped: ${warnings[0]}${warnings.length > 1 ? ' (the others are in the log)' : ''}`);
    else void vscode.window.setStatusBarMessage(`$(check) Copied ${outcome.files} file(s), ${formatBytes(outcome.bytes)}`, 5000);
    return outcome;
  } finally {
    sessions?.dispose();
  }
}

function describe(paths: string[]): string {
  return paths.length === 1 ? path.basename(paths[0]) : `${paths.length} items`;
}
