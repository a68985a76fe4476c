/**
 * Open Folder in VM... (palette, and a running VM's context menu in the tree): a running VM (asked
 * when more than one runs), a guest folder (default /root), checked, then opened in VS Code (see
 * WHERE below for which window).
 */
import * as vscode from 'vscode';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import type { CommandDeps } from '../commands/deps';
import { DEFAULT_GUEST_DIR, checkGuestPath } from '../commands/copyFiles';
import { pickVm, type VmTarget } from '../ui/pickVm';
import { guestUri } from './guestUri';

/** Test and automation arguments: skip the prompts. */
export interface OpenFolderOptions {
  guestPath?: string;
  /**
   * 'auto' (default, see WHERE), 'thisWindow', 'newWindow', 'workspace' (added to this window's
   * folders), or 'none': checked and its URI returned, nothing opened (tests, other extensions).
   */
  where?: 'auto' | 'thisWindow' | 'newWindow' | 'workspace' | 'none';
}

/**
 * WHERE, by default: a window that has no folder open shows the guest folder itself; a window that
 * has one opens the guest folder in a new window, as Remote-SSH's "Connect to Host" and File > Open
 * Folder from a busy window do. Adding it to the current window instead would turn a single-folder
 * window into an untitled multi-root workspace (VS Code restarts every extension for that, and asks
 * to save the workspace when the window closes) and would put a folder that Search and Go to File
 * cannot index (their providers for a new scheme are proposed API) beside the user's host folders.
 * 'workspace' still adds it for a user who is already in a multi-root workspace and asks for that.
 */
export async function openFolderInVm(deps: CommandDeps, target?: VmTarget, options: OpenFolderOptions = {}): Promise<vscode.Uri | undefined> {
  await deps.connection.client();
  let vm: string | undefined;
  if (target === undefined) {
    const running = deps.model.list().filter((i) => i.state === 'running');
    vm = running.length === 1 ? running[0].name : await pickVm(deps.model, undefined, ['running'], 'open a folder in');
  } else vm = await pickVm(deps.model, target, ['running'], 'open a folder in');
  if (!vm) return undefined;
  const state = deps.model.get(vm)?.state;
  if (state !== 'running') throw new SandboxError(ErrorCode.WrongState, `${vm} is ${state ?? 'not known'}; start it to open its folders.`);
  const guestPath = options.guestPath ?? (await vscode.window.showInputBox({
    title: `Open Folder in ${vm}`,
    prompt: 'The guest folder to show in the Explorer',
    value: DEFAULT_GUEST_DIR,
    validateInput: checkGuestPath,
  }));
  if (guestPath === undefined) return undefined;
  const problem = checkGuestPath(guestPath);
  if (problem) throw new SandboxError(ErrorCode.BadArgument, problem);
  const uri = guestUri(vm, guestPath);
  const stat = await vscode.workspace.fs.stat(uri).then((s) => s, (err: Error) => {
    throw new SandboxError(ErrorCode.BadArgument, err instanceof vscode.FileSystemError && err.code === 'FileNotFound' ? `There is no folder ${uri.path} in ${vm}; give an existing one.` : `Cannot open ${vm}:${uri.path}: ${err.message}`);
  });
  if ((stat.type & vscode.FileType.Directory) === 0) throw new SandboxError(ErrorCode.BadArgument, `${uri.path} in ${vm} is not a folder; give a folder (files open with File > Open).`);
  const folders = vscode.workspace.workspaceFolders ?? [];
  const where = options.where === undefined || options.where === 'auto' ? (folders.length === 0 ? 'thisWindow' : 'newWindow') : options.where;
  if (where === 'none') return uri;
  if (where === 'thisWindow' || where === 'newWindow') {
    await vscode.commands.executeCommand('vscode.openFolder', uri, { forceNewWindow: where === 'newWindow' });
    return uri;
  }
  const already = folders.find((f) => f.uri.toString() === uri.toString());
  if (already) {
    await vscode.commands.executeCommand('workbench.view.explorer');
    return uri;
  }
  const refused = new SandboxError(ErrorCode.Internal, `VS Code did not add ${vm}:${uri.path} to this window's folders; open it in a new window instead`);
  const added = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => (sub.dispose(), reject(refused)), 15_000);
    const sub = vscode.workspace.onDidChangeWorkspaceFolders(() => {
      if (!vscode.workspace.workspaceFolders?.some((f) => f.uri.toString() === uri.toString())) return;
      clearTimeout(timer);
      sub.dispose();
      resolve();
    });
  });
  if (!vscode.workspace.updateWorkspaceFolders(folders.length, 0, { uri, name: `${vm}:${uri.path}` })) throw refused;
  await added;
  await vscode.commands.executeCommand('workbench.view.explorer');
  return uri;
}
