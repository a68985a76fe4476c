/** What every command gets: the extension's few long-lived objects, passed in (no global namespace). */
import type * as vscode from 'vscode';
import type { ServiceClient } from '../../runtime/client/serviceClient';
import type { SerialConsoles } from '../console/serialConsoles';
import type { DetailsPanels } from '../details/detailsPanel';
import type { ServiceConnection } from '../model/serviceConnection';
import type { HostState } from '../model/hostState';
import type { VmModel } from '../model/vmModel';
import type { SyncModel } from '../sync/syncModel';
import type { TerminalManager } from '../terminals/terminalManager';
import type { Notifications } from '../ui/notifications';
import type { CheckpointDeps } from '../checkpoints/checkpointCommands';

export interface CommandDeps {
  connection: ServiceConnection<ServiceClient>;
  model: VmModel;
  /** QEMU and base image status for the welcome views. */
  host: HostState;
  terminals: TerminalManager;
  notify: Notifications;
  log: vscode.LogOutputChannel;
  settings: () => vscode.WorkspaceConfiguration;
  serialConsoles: SerialConsoles;
  details: DetailsPanels;
  /** The service's workspace syncs (optional so older callers and tests need not build one). */
  syncs?: SyncModel;
  /** Checkpoints and the last task run (optional so older callers and tests need not build them). */
  checkpoints?: CheckpointDeps;
}
