/**
 * A status bar item for the service's workspace syncs: in sync, syncing N of M files, or an error
 * in one sentence (tooltip: every sync). Renders the SyncModel; hidden while there is no sync.
 */
import * as vscode from 'vscode';
import type { SyncModel } from './syncModel';
import { syncLook } from './syncPresentation';

export function createSyncStatusBar(syncs: SyncModel): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('sandboxvm.sync', vscode.StatusBarAlignment.Left, 49);
  item.name = 'Sandbox VM workspace sync';
  const render = () => {
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
    const look = syncLook(syncs.list(), folders);
    if (!look) return item.hide();
    item.text = look.text;
    item.tooltip = look.tooltip;
    item.show();
  };
  const subs = [syncs.onDidChange(render), vscode.workspace.onDidChangeWorkspaceFolders(render)];
  render();
  return { dispose: () => (subs.forEach((s) => s.dispose()), item.dispose()) };
}
