/**
 * Pull Folder from VM: a one-shot pull of a guest folder into a host folder through the runtime's
 * pull engine (runtime/sync/pull/), run here in the extension host as `sandboxvm pull` runs it: the
 * guest is hostile, so files that could run programs on this host are held back (kept in the
 * quarantine) until the user allows them, and a host file changed since the last pull is kept, the
 * guest's version written beside it. Progress in a cancellable notification; the outcome in one
 * notification, whose action lists the held-back files to allow.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { formatBytes } from '../../runtime/cli/progress';
import { GuestFiles } from '../../runtime/client/guestFiles';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import { guestPullSource } from '../../runtime/sync/pull/guestSource';
import { printable } from '../../runtime/sync/pull/hostPath';
import { pull, type PullSummary } from '../../runtime/sync/pull/pullEngine';
import { pullStateDir } from '../../runtime/sync/pull/pullState';
import type { CommandDeps } from '../commands/deps';
import type { VmTarget } from '../ui/pickVm';
import { pickRunningVm } from './syncFolder';
import { pullSentence } from './syncPresentation';

/** Test and automation arguments: skip the prompts. */
export interface PullFolderOptions {
  guestPath?: string;
  hostFolder?: string;
  /** Held-back paths to write anyway (relative to the guest folder; a folder allows what is under it). */
  allow?: string[];
}

/** An absolute guest folder of printable characters, or the sentence saying what is wrong. */
export function checkPullGuestPath(value: string): string | undefined {
  if (!value.startsWith('/')) return 'Give an absolute folder in the guest, like /root/project.';
  if (value.length > 4096 || /[\x00-\x1f\x7f]/.test(value)) return 'The path is too long or has control characters.';
  return undefined;
}

/**
 * From a VM's context menu or the palette: the guest folder typed, the host folder picked (in the
 * workspace, or any), the pull run. Resolves with its summary, or undefined when the user
 * dismissed a prompt or cancelled (files written before the cancel are kept).
 */
export async function pullFolder(deps: CommandDeps, home: string, target?: VmTarget, options: PullFolderOptions = {}): Promise<PullSummary | undefined> {
  await deps.connection.client();
  const vm = await pickRunningVm(deps, target, 'pull a folder from');
  if (!vm) return undefined;
  const typed = options.guestPath ?? (await vscode.window.showInputBox({
    title: `Pull a folder from ${vm}`,
    prompt: 'The folder in the guest to copy to this machine',
    value: '/root/',
    validateInput: checkPullGuestPath,
  }));
  if (typed === undefined) return undefined;
  const problem = checkPullGuestPath(typed);
  if (problem) throw new SandboxError(ErrorCode.BadArgument, problem);
  const guestPath = path.posix.normalize(typed).replace(/(.)\/+$/, '$1');
  const hostFolder = options.hostFolder ?? (await pickHostFolder(vm, guestPath));
  if (!hostFolder) return undefined;
  return runPull(deps, home, vm, guestPath, path.resolve(hostFolder), options.allow ?? []);
}

async function runPull(deps: CommandDeps, home: string, vm: string, guestPath: string, hostRoot: string, allow: string[]): Promise<PullSummary | undefined> {
  const sessions = await (await deps.connection.client()).attach(vm);
  try {
    const root = await new GuestFiles(sessions).stat(guestPath, true).catch((err: Error) => {
      throw new SandboxError(ErrorCode.BadArgument, /ENOENT/.test(err.message) ? `There is no folder ${guestPath} in ${vm}.` : `Cannot read ${guestPath} in ${vm}: ${printable(err.message)}.`);
    });
    if (root.type !== 'dir') throw new SandboxError(ErrorCode.BadArgument, `${guestPath} in ${vm} is a ${root.type === 'file' ? 'file' : root.type}, not a folder; give a folder to pull.`);
    const parent = fs.statSync(path.dirname(hostRoot), { throwIfNoEntry: false });
    if (!parent?.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `The folder ${path.dirname(hostRoot)} does not exist on this machine.`);
    const existing = fs.statSync(hostRoot, { throwIfNoEntry: false });
    if (existing && !existing.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${hostRoot} is a file; choose a folder to pull into.`);
    if (!existing) fs.mkdirSync(hostRoot, { mode: 0o755 });
    const summary = await vscode.window.withProgress({ location: vscode.ProgressLocation.Notification, title: `Pulling ${vm}:${guestPath}`, cancellable: true }, async (progress, token) => {
      const cancel = new AbortController();
      const sub = token.onCancellationRequested(() => cancel.abort());
      let shown = 0;
      try {
        return await pull(guestPullSource(sessions), {
          vm,
          guestPath,
          hostRoot,
          allow,
          stateDir: pullStateDir(vm, hostRoot, guestPath, home),
          signal: cancel.signal,
          onProgress: (p) => {
            const pct = p.totalFiles > 0 ? Math.min(100, (p.files / p.totalFiles) * 100) : 0;
            progress.report({ message: `${p.files} of ${p.totalFiles} files, ${formatBytes(p.bytes)}${p.current ? ` · ${printable(p.current, 200).slice(-50)}` : ''}`, increment: Math.max(0, pct - shown) });
            shown = Math.max(shown, pct);
          },
        });
      } catch (err) {
        if (err instanceof SandboxError && err.code === ErrorCode.Cancelled) return undefined;
        throw err;
      } finally {
        sub.dispose();
      }
    });
    if (!summary) {
      deps.notify.info(`The pull of ${vm}:${guestPath} was cancelled; the files written before it are kept.`);
      return undefined;
    }
    tell(deps, home, vm, summary, allow);
    return summary;
  } finally {
    sessions.dispose();
  }
}

const REVIEW = 'Review Held-Back Files...';
const DETAILS = 'Show Details';

/** One notification with the outcome; its actions review the held-back files and show the full list in the log. */
function tell(deps: CommandDeps, home: string, vm: string, s: PullSummary, allowed: string[]): void {
  logSummary(deps, vm, s);
  const text = pullSentence(vm, s);
  const attention = s.heldBack.length + s.conflicts.length + s.refused.length;
  if (attention === 0) return void vscode.window.showInformationMessage(text);
  const actions = s.heldBack.length > 0 ? [REVIEW, DETAILS] : [DETAILS];
  void vscode.window.showWarningMessage(text, ...actions).then(async (choice) => {
    if (choice === DETAILS) deps.log.show(true);
    if (choice !== REVIEW) return;
    const picked = await vscode.window.showQuickPick(
      s.heldBack.map((h) => ({ label: h.path, detail: h.reason, picked: false })),
      { title: `Write which held-back files into ${path.basename(s.hostRoot)}?`, placeHolder: 'They could run programs on this machine: allow only what you trust', canPickMany: true },
    );
    if (!picked || picked.length === 0) return;
    await runPull(deps, home, vm, s.guestPath, s.hostRoot, [...allowed, ...picked.map((p) => p.label)]);
  }).then(undefined, (err) => deps.notify.error(err, 'pull'));
}

function logSummary(deps: CommandDeps, vm: string, s: PullSummary): void {
  deps.log.info(`pull ${vm}:${s.guestPath} -> ${s.hostRoot} in ${s.seconds.toFixed(2)} s: ${s.written} written (${formatBytes(s.bytes)}), ${s.unchanged} unchanged, ${s.removed} removed, ${s.folders} new folders`);
  for (const h of s.heldBack) deps.log.info(`  held back ${h.path}: ${h.reason}${h.quarantined ? ` (kept in ${h.quarantined})` : ''}`);
  for (const c of s.conflicts) deps.log.info(`  conflict ${c.path}: ${c.reason}${c.guestCopy ? `; the guest's version is ${c.guestCopy}` : ''}`);
  for (const r of s.refused) deps.log.info(`  refused ${r.path}: ${r.reason}`);
}

/** Where to pull into: a new folder named after the guest's in a workspace folder, a workspace folder, or any folder. */
async function pickHostFolder(vm: string, guestPath: string): Promise<string | undefined> {
  const base = path.posix.basename(guestPath) || 'pulled';
  const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file');
  const choose = { label: '$(folder-opened) Choose a Folder...', dir: undefined as string | undefined };
  const items = [
    ...folders.map((f) => ({ label: `$(new-folder) ${f.name}/${base}`, description: fs.existsSync(path.join(f.uri.fsPath, base)) ? 'a folder in the workspace' : 'a new folder in the workspace', dir: path.join(f.uri.fsPath, base) })),
    ...folders.map((f) => ({ label: `$(root-folder) ${f.name}`, description: 'the workspace folder itself', dir: f.uri.fsPath })),
    choose,
  ];
  const picked = folders.length === 0 ? choose : await vscode.window.showQuickPick(items, { title: `Pull ${vm}:${guestPath} into`, placeHolder: 'Host folder' });
  if (!picked) return undefined;
  if (picked.dir) return picked.dir;
  const chosen = await vscode.window.showOpenDialog({ canSelectFiles: false, canSelectFolders: true, canSelectMany: false, openLabel: 'Pull Here', title: `Where to pull ${vm}:${guestPath}`, defaultUri: folders[0]?.uri });
  if (!chosen?.[0]) return undefined;
  if (chosen[0].scheme !== 'file') throw new SandboxError(ErrorCode.BadArgument, `${chosen[0].toString()} is not a folder on this machine.`);
  return chosen[0].fsPath;
}
