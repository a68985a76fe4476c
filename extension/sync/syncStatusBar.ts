/**
 * A status bar item for the service's workspace syncs (`sandboxvm sync`): in sync, syncing N of M
 * files, or an error in one sentence (tooltip: every sync). Fed by `sync.status` notifications on
 * each new service connection; hidden while there is no sync.
 */
import * as vscode from 'vscode';
import type { ServiceClient } from '../../runtime/client/serviceClient';
import { SyncClient } from '../../runtime/client/syncClient';
import type { SyncStatus } from '../../runtime/sync/types';
import type { ServiceConnection } from '../model/serviceConnection';
import { syncLook } from './syncPresentation';

export function createSyncStatusBar(connection: ServiceConnection<ServiceClient>, log: (m: string) => void): vscode.Disposable {
  const item = vscode.window.createStatusBarItem('sandboxvm.sync', vscode.StatusBarAlignment.Left, 49);
  item.name = 'Sandbox VM workspace sync';
  const syncs = new Map<string, SyncStatus>();
  const render = () => {
    const folders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === 'file').map((f) => f.uri.fsPath);
    const look = syncLook([...syncs.values()], folders);
    if (!look) return item.hide();
    item.text = look.text;
    item.tooltip = look.tooltip;
    item.show();
  };
  const follow = async () => {
    const client = await connection.client();
    const sync = new SyncClient(client);
    await sync.onStatus(
      (s) => {
        syncs.set(`${s.vm}/${s.id}`, s);
        render();
      },
      (vm, id) => {
        syncs.delete(`${vm}/${id}`);
        render();
      },
    );
    syncs.clear();
    for (const s of await sync.list()) syncs.set(`${s.vm}/${s.id}`, s);
    render();
  };
  const subs = [
    connection.onDidChangeState((state) => {
      if (state === 'connected') void follow().catch((err) => log(`sync status: ${(err as Error).message}`));
    }),
    vscode.workspace.onDidChangeWorkspaceFolders(render),
  ];
  if (connection.state === 'connected') void follow().catch((err) => log(`sync status: ${(err as Error).message}`));
  return { dispose: () => (subs.forEach((s) => s.dispose()), item.dispose()) };
}
