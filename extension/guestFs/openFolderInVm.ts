/**
 * Open Folder in VM... (palette, and a running VM's context menu in the tree): a running VM (asked
 * when more than one runs), a guest folder (default /root), then the folder as a workspace folder
 * of this window, named `<vm>:<path>`. See WHERE below for why this window and not a new one.
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
  /** 'workspace' (default): add to this window's folders; 'newWindow': a window of its own. */
  where?: 'workspace' | 'newWindow';
}

/**
 * WHERE: this window by default. A guest folder sits beside the host folders the user already has
 * open, next to the Sandbox VMs view and the VM's terminals, the way Copy to VM and the tree already
 * work; nothing reloads, and "Remove Folder from Workspace" takes it away. Remote-SSH opens a new
 * window because its extension host moves to the remote machine; ours stays on the host, so a new
 * window would only duplicate the service connection and the tree. `where: 'newWindow'` is there
 * for a window that should hold only the guest (its extension activates on `onFileSystem:sandboxvm`).
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
  if ((stat.type & vscode.FileType.Directory) === 0) throw new SandboxError(ErrorCode.BadArgument, `${vm}:${uri.path} is not a folder; give a folder (files open with File > Open).`);
  if (options.where === 'newWindow') {
    await vscode.commands.executeCommand('vscode.openFolder', uri, { forceNewWindow: true });
    return uri;
  }
  const folders = vscode.workspace.workspaceFolders ?? [];
  const already = folders.find((f) => f.uri.toString() === uri.toString());
  if (already) {
    await vscode.commands.executeCommand('workbench.view.explorer');
    return uri;
  }
  const added = new Promise<void>((resolve) => {
    const sub = vscode.workspace.onDidChangeWorkspaceFolders((e) => {
      if (!e.added.some((f) => f.uri.toString() === uri.toString())) return;
      sub.dispose();
      resolve();
    });
  });
  if (!vscode.workspace.updateWorkspaceFolders(folders.length, 0, { uri, name: `${vm}:${uri.path}` })) {
    throw new SandboxError(ErrorCode.Internal, `VS Code did not add ${vm}:${uri.path} to the workspace; try again`);
  }
  await added;
  await vscode.commands.executeCommand('workbench.view.explorer');
  return uri;
}
