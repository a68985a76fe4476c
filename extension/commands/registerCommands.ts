/**
 * Every command in one flat table: id -> handler(deps, ...args). Each is wrapped once: failures are
 * shown as one sentence (cancellations not at all) and logged; the handler's result is returned to
 * the caller (the tests use it).
 */
import * as vscode from 'vscode';
import { Command, type CommandId } from '../ids';
import { buildImage } from './buildImage';
import { showRequirements } from './showRequirements';
import { copyFromVm, copyToVm } from './copyFiles';
import { createVm } from './createVm';
import { deleteVm } from './deleteVm';
import type { CommandDeps } from './deps';
import { focusTerminal, openTerminal } from './openTerminal';
import { openSerialConsole } from './openSerialConsole';
import { pauseVm, resumeVm } from './pauseVm';
import { refresh } from './refresh';
import { restartVm } from './restartVm';
import { saveVm } from './saveVm';
import { cloneVm } from '../clones/cloneVm';
import { cloneFromCheckpoint } from '../clones/cloneFromCheckpoint';
import { compactDisk } from '../disk/compactDisk';
import { showActions } from './showActions';
import { showDetails } from './showDetails';
import { showLog, showServiceLog } from './showLog';
import { startVm } from './startVm';
import { stopVm, turnOffVm } from './stopVm';
import { setNetworkPolicy } from './setNetworkPolicy';
import { openFolderInVm } from '../guestFs/openFolderInVm';
import { findInVmFolder, goToFileInVm } from '../guestFs/guestSearch';
import { copyPortAddress, forwardPort, openPortInBrowser, stopForwarding } from '../ports/portCommands';
import { revealSyncFolder, stopSync, syncFolder } from '../sync/syncFolder';
import { pullFolder } from '../sync/pullFolder';
import { exportVm } from '../transfer/exportVm';
import { importVm } from '../transfer/importVm';
import { applyCheckpoint, createCheckpoint, deleteCheckpoint, renameCheckpoint, undoLastTaskRun, undoVm } from '../checkpoints/checkpointCommands';

type Handler = (deps: CommandDeps, ...args: any[]) => Promise<unknown>;

export function registerCommands(deps: CommandDeps, home: () => string): vscode.Disposable[] {
  const table: Record<CommandId, Handler> = {
    [Command.create]: createVm,
    [Command.start]: startVm,
    [Command.stop]: stopVm,
    [Command.turnOff]: turnOffVm,
    [Command.pause]: pauseVm,
    [Command.resume]: resumeVm,
    [Command.save]: saveVm,
    [Command.clone]: cloneVm,
    [Command.cloneFromCheckpoint]: cloneFromCheckpoint,
    [Command.compactDisk]: compactDisk,
    [Command.restart]: restartVm,
    [Command.delete]: deleteVm,
    [Command.openTerminal]: openTerminal,
    [Command.showLog]: showLog,
    [Command.focusTerminal]: focusTerminal,
    [Command.refresh]: refresh,
    [Command.showServiceLog]: (d) => showServiceLog(d, home()),
    [Command.showActions]: showActions,
    [Command.buildImage]: buildImage,
    [Command.showRequirements]: showRequirements,
    [Command.copyTo]: copyToVm,
    [Command.copyFrom]: copyFromVm,
    [Command.openSerialConsole]: openSerialConsole,
    [Command.showDetails]: showDetails,
    [Command.setNetworkPolicy]: setNetworkPolicy,
    [Command.openFolder]: openFolderInVm,
    [Command.goToFile]: goToFileInVm,
    [Command.findInFolder]: findInVmFolder,
    [Command.forwardPort]: forwardPort,
    [Command.stopForwarding]: stopForwarding,
    [Command.openPortInBrowser]: openPortInBrowser,
    [Command.copyPortAddress]: copyPortAddress,
    [Command.syncFolder]: syncFolder,
    [Command.stopSync]: stopSync,
    [Command.revealSyncFolder]: revealSyncFolder,
    [Command.pullFolder]: (d, ...a) => pullFolder(d, home(), ...a),
    [Command.exportVm]: exportVm,
    [Command.importVm]: importVm,
    [Command.createCheckpoint]: createCheckpoint,
    [Command.applyCheckpoint]: applyCheckpoint,
    [Command.renameCheckpoint]: renameCheckpoint,
    [Command.deleteCheckpoint]: deleteCheckpoint,
    [Command.undo]: undoVm,
    [Command.undoLastTaskRun]: undoLastTaskRun,
  };
  return Object.entries(table).map(([id, handler]) =>
    vscode.commands.registerCommand(id, async (...args: unknown[]) => {
      try {
        return await handler(deps, ...args);
      } catch (err) {
        deps.notify.error(err, id);
        return undefined;
      }
    }),
  );
}
