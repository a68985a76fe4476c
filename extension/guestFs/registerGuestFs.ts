/**
 * Registers the `sandboxvm` file system (guestFileSystemProvider.ts) for the extension's lifetime,
 * and VS Code's Go to File and Search on it where VS Code grants the proposed API (guestSearchProviders.ts).
 */
import * as vscode from 'vscode';
import type { SessionClient } from '../../runtime/client/sessionClient';
import type { VmModel } from '../model/vmModel';
import { GuestConnections } from './guestConnections';
import { GuestFileSystemProvider } from './guestFileSystemProvider';
import { registerSearchProviders, type SearchProviders } from './guestSearchProviders';
import { GUEST_SCHEME } from './guestUri';

export interface GuestFs {
  readonly provider: GuestFileSystemProvider;
  readonly connections: GuestConnections;
  /** Whether Go to File and the Search view search guest folders in this VS Code. */
  readonly search: Pick<SearchProviders, 'file' | 'text'>;
}

/** `ready`: the service connected and the model filled; `attach`: a session connection to a VM's worker. */
export function registerGuestFs(model: VmModel, ready: () => Promise<unknown>, attach: (vm: string) => Promise<SessionClient>, log: (message: string) => void): GuestFs & vscode.Disposable {
  const connections = new GuestConnections(model, ready, attach);
  const provider = new GuestFileSystemProvider(connections, model, log);
  const registration = vscode.workspace.registerFileSystemProvider(GUEST_SCHEME, provider, { isCaseSensitive: true });
  const search = registerSearchProviders({ model, attach }, log);
  return {
    provider,
    connections,
    search: { file: search.file, text: search.text },
    dispose: () => {
      search.dispose();
      registration.dispose();
      provider.dispose();
      connections.dispose();
    },
  };
}
