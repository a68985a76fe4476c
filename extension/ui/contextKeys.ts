/** Keeps the `when`-clause context keys (welcome views, menus) in step with the connection and model. */
import * as vscode from 'vscode';
import { ContextKey } from '../ids';
import type { ServiceConnection } from '../model/serviceConnection';
import type { VmModel } from '../model/vmModel';

export function bindContextKeys(connection: ServiceConnection<any>, model: VmModel): vscode.Disposable {
  const set = (key: string, value: unknown) => void vscode.commands.executeCommand('setContext', key, value);
  let count = -1;
  const onModel = () => {
    if (model.size !== count) set(ContextKey.vmCount, (count = model.size));
  };
  const onState = () => set(ContextKey.connection, connection.state === 'idle' ? 'connecting' : connection.state);
  onModel();
  onState();
  const a = model.onDidChange(onModel);
  const b = connection.onDidChangeState(onState);
  return { dispose: () => (a.dispose(), b.dispose()) };
}
