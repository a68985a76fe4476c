/**
 * Every id the extension shares with package.json: commands, views, settings, context keys, the
 * terminal profile. test/unit/extension-ids.test.ts checks that package.json's `contributes` and
 * these tables agree both ways. Plain objects (not a const enum) so the test can enumerate them.
 */

export const EXTENSION_ID = 'sandboxvms.sandbox-vms';

export const Command = {
  create: 'sandboxvm.vm.create',
  start: 'sandboxvm.vm.start',
  stop: 'sandboxvm.vm.stop',
  turnOff: 'sandboxvm.vm.turnOff',
  pause: 'sandboxvm.vm.pause',
  resume: 'sandboxvm.vm.resume',
  save: 'sandboxvm.vm.save',
  clone: 'sandboxvm.vm.clone',
  cloneFromCheckpoint: 'sandboxvm.checkpoint.clone',
  compactDisk: 'sandboxvm.vm.compact',
  restart: 'sandboxvm.vm.restart',
  delete: 'sandboxvm.vm.delete',
  openTerminal: 'sandboxvm.vm.openTerminal',
  showLog: 'sandboxvm.vm.showLog',
  focusTerminal: 'sandboxvm.terminal.focus',
  refresh: 'sandboxvm.view.refresh',
  showServiceLog: 'sandboxvm.service.showLog',
  showActions: 'sandboxvm.vm.showActions',
  buildImage: 'sandboxvm.image.build',
  showRequirements: 'sandboxvm.host.showRequirements',
  copyTo: 'sandboxvm.vm.copyTo',
  copyFrom: 'sandboxvm.vm.copyFrom',
  openSerialConsole: 'sandboxvm.vm.openSerialConsole',
  showDetails: 'sandboxvm.vm.showDetails',
  setNetworkPolicy: 'sandboxvm.vm.setNetworkPolicy',
  openFolder: 'sandboxvm.vm.openFolder',
  goToFile: 'sandboxvm.vm.goToFile',
  findInFolder: 'sandboxvm.vm.findInFolder',
  forwardPort: 'sandboxvm.port.forward',
  stopForwarding: 'sandboxvm.port.stopForwarding',
  openPortInBrowser: 'sandboxvm.port.openInBrowser',
  copyPortAddress: 'sandboxvm.port.copyAddress',
  syncFolder: 'sandboxvm.sync.start',
  stopSync: 'sandboxvm.sync.stop',
  revealSyncFolder: 'sandboxvm.sync.revealFolder',
  pullFolder: 'sandboxvm.vm.pullFolder',
  exportVm: 'sandboxvm.vm.export',
  importVm: 'sandboxvm.vm.import',
  createCheckpoint: 'sandboxvm.checkpoint.create',
  applyCheckpoint: 'sandboxvm.checkpoint.apply',
  renameCheckpoint: 'sandboxvm.checkpoint.rename',
  deleteCheckpoint: 'sandboxvm.checkpoint.delete',
  undo: 'sandboxvm.vm.undo',
  undoLastTaskRun: 'sandboxvm.task.undoLastRun',
} as const;
export type CommandId = (typeof Command)[keyof typeof Command];

export const ViewContainer = { main: 'sandboxVms' } as const;
export const View = { machines: 'sandboxvm.virtualMachines' } as const;

/** Settings, without the `sandboxvm.` section prefix (as `workspace.getConfiguration(SECTION)` reads them). */
export const SECTION = 'sandboxvm';
export const Setting = {
  defaultCpus: 'defaults.cpus',
  defaultMemory: 'defaults.memory',
  defaultDisk: 'defaults.disk',
  defaultNetwork: 'defaults.network',
  dataDirectory: 'dataDirectory',
  qemuPath: 'qemuPath',
  workspaceVm: 'workspaceVm',
  autoForwardPorts: 'ports.autoForward',
  /** Passed to vm.checkpoint.create {undo: true} as undoMaxCount / undoMaxDiskMiB. */
  undoMaxCount: 'undoPoints.maxCount',
  undoMaxDiskMiB: 'undoPoints.maxDiskMiB',
} as const;

export const ContextKey = {
  /** 'connecting' | 'connected' | 'reconnecting' | 'failed' */
  connection: 'sandboxvm.connection',
  /** Number of VMs the service reports. */
  vmCount: 'sandboxvm.vmCount',
  /** 'unknown' | 'ok' | 'missing' | 'tooOld' (extension/model/hostState.ts) */
  qemu: 'sandboxvm.qemu',
  /** 'unknown' | 'ready' | 'missing' | 'unbuildable' | 'building' */
  image: 'sandboxvm.image',
  /** Walkthrough progress in this window (completionEvents besides the commands): a VM terminal was opened; a VM was saved. */
  walkthroughTerminal: 'sandboxvm.walkthrough.terminalOpened',
  walkthroughSaved: 'sandboxvm.walkthrough.saved',
} as const;

export const TerminalProfile = { vm: 'sandboxvm.terminalProfile' } as const;

/** Tree items' contextValue: `<state>Vm` for VMs (menus filter with `viewItem =~ /^(running|paused)Vm$/`). */
export const ItemContext = {
  vm: (state: string) => `${state}Vm`,
  terminal: 'vmTerminal',
  port: 'vmPort',
  /** Forwarded ports (menus: `viewItem =~ /^vmForward/`): automatic, manual, a manual one that failed. */
  forward: 'vmForward',
  manualForward: 'vmForwardManual',
  failedManualForward: 'vmFailedForwardManual',
  sync: 'vmSync',
  /** The checkpoint tree's items (extension/checkpoints/checkpointItems.ts; menus: `viewItem =~ /^vmCheckpoint(Undo)?$/` for the actions on one). */
  checkpoints: 'vmCheckpoints',
  checkpoint: 'vmCheckpoint',
  undoPoint: 'vmCheckpointUndo',
  undoPoints: 'vmUndoPoints',
  now: 'vmCheckpointNow',
} as const;

/** Webview panels' view types. */
export const WebviewType = { details: 'sandboxvm.details' } as const;
