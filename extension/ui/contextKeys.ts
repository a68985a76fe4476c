/** Keeps the `when`-clause context keys (welcome views, menus) in step with the connection, model and host. */
import * as vscode from 'vscode';
import { ContextKey } from '../ids';
import type { Event } from '../model/event';
import type { HostState } from '../model/hostState';
import type { ServiceConnection } from '../model/serviceConnection';
import type { VmModel } from '../model/vmModel';

/**
 * `terminalsChanged` fires when a VM's terminals change (TerminalManager.onDidChange). The
 * walkthrough keys only ever turn true: VS Code's walkthrough reads them whenever it is first shown.
 */
export function bindContextKeys(connection: ServiceConnection<any>, model: VmModel, host: HostState, terminalsChanged: Event<string>): vscode.Disposable {
  const set = (key: string, value: unknown) => void vscode.commands.executeCommand('setContext', key, value);
  let count = -1;
  let saved = false;
  const onModel = () => {
    if (model.size !== count) set(ContextKey.vmCount, (count = model.size));
    if (!saved && model.list().some((vm) => vm.state === 'saved')) set(ContextKey.walkthroughSaved, (saved = true));
  };
  let terminal = false;
  const onTerminals = () => {
    if (!terminal) set(ContextKey.walkthroughTerminal, (terminal = true));
  };
  const onState = () => set(ContextKey.connection, connection.state === 'idle' ? 'connecting' : connection.state);
  const onHost = () => {
    set(ContextKey.qemu, host.qemu);
    set(ContextKey.image, host.image);
  };
  onModel();
  onState();
  onHost();
  const subs = [model.onDidChange(onModel), connection.onDidChangeState(onState), host.onDidChange(onHost), terminalsChanged(onTerminals)];
  return { dispose: () => subs.forEach((s) => s.dispose()) };
}
