/** Keeps the `when`-clause context keys (welcome views, menus) in step with the connection, model and host. */
import * as vscode from 'vscode';
import { ContextKey } from '../ids';
import type { HostState } from '../model/hostState';
import type { ServiceConnection } from '../model/serviceConnection';
import type { VmModel } from '../model/vmModel';

export function bindContextKeys(connection: ServiceConnection<any>, model: VmModel, host: HostState): vscode.Disposable {
  const set = (key: string, value: unknown) => void vscode.commands.executeCommand('setContext', key, value);
  let count = -1;
  const onModel = () => {
    if (model.size !== count) set(ContextKey.vmCount, (count = model.size));
  };
  const onState = () => set(ContextKey.connection, connection.state === 'idle' ? 'connecting' : connection.state);
  const onHost = () => {
    set(ContextKey.qemu, host.qemu);
    set(ContextKey.image, host.image);
  };
  onModel();
  onState();
  onHost();
  const subs = [model.onDidChange(onModel), connection.onDidChangeState(onState), host.onDidChange(onHost)];
  return { dispose: () => subs.forEach((s) => s.dispose()) };
}
