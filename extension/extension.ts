/**
 * The extension's entry: `activate` builds the few long-lived objects (the service connection, the
 * VM model, the terminal manager, the view), hands them to the registrations and pushes every
 * disposable into `context.subscriptions`. Nothing waits for the service until a view or command
 * needs it. Returns a small API (the tests in test/vscode use it).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { ServiceClient } from '../runtime/client/serviceClient';
import { dataHome } from '../runtime/common/paths';
import { RUNTIME_VERSION } from '../runtime/common/version';
import { findOnPath } from '../runtime/qemu/locate';
import { registerCommands } from './commands/registerCommands';
import type { CommandDeps } from './commands/deps';
import { SerialConsoles } from './console/serialConsoles';
import { DetailsPanels } from './details/detailsPanel';
import { registerGuestFs, type GuestFs } from './guestFs/registerGuestFs';
import { SECTION, Setting, View } from './ids';
import { HostState } from './model/hostState';
import { MetricsStore } from './model/metricsStore';
import { ServiceConnection } from './model/serviceConnection';
import { VmModel } from './model/vmModel';
import { TerminalManager } from './terminals/terminalManager';
import { registerTerminalProfile } from './terminals/terminalProfile';
import { bindTreeMetrics } from './tree/treeMetrics';
import { VmTreeProvider } from './tree/vmTreeProvider';
import { bindContextKeys } from './ui/contextKeys';
import { Notifications } from './ui/notifications';
import { createStatusBar } from './ui/statusBar';
import { createSyncStatusBar } from './sync/syncStatusBar';
import { SyncModel } from './sync/syncModel';
import { CheckpointModel } from './checkpoints/checkpointModel';
import { CheckpointBranch } from './checkpoints/checkpointBranch';
import { VmTasks } from './tasks/vmTaskProvider';

export interface SandboxVmsApi {
  readonly model: VmModel;
  readonly connection: ServiceConnection<ServiceClient>;
  readonly terminals: TerminalManager;
  readonly tree: VmTreeProvider;
  readonly treeView: vscode.TreeView<unknown>;
  readonly notifications: Notifications;
  readonly host: HostState;
  readonly metrics: MetricsStore;
  readonly serialConsoles: SerialConsoles;
  readonly details: DetailsPanels;
  readonly guestFs: GuestFs;
  readonly syncs: SyncModel;
  readonly checkpoints: CheckpointModel;
  readonly checkpointBranch: CheckpointBranch;
  readonly tasks: VmTasks;
}

const settings = () => vscode.workspace.getConfiguration(SECTION);

/** The data directory: the setting, else SANDBOXVM_HOME, else the platform's default. */
function home(): string {
  const configured = settings().get<string>(Setting.dataDirectory, '').trim();
  return configured ? path.resolve(configured.replace(/^~(?=$|\/)/, process.env.HOME ?? '~')) : dataHome();
}

/**
 * The environment for a service this window starts. Under Electron (desktop VS Code) the service
 * runs as Node (ELECTRON_RUN_AS_NODE, set by spawnDetached), but a guest needs a real `node`: the
 * one on PATH, when there is one.
 */
function serviceEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  const qemu = settings().get<string>(Setting.qemuPath, '').trim();
  if (qemu) env.SANDBOXVM_QEMU = qemu;
  if (process.versions.electron && !process.env.SANDBOXVM_GUEST_NODE) {
    const node = findOnPath('node');
    if (node) env.SANDBOXVM_GUEST_NODE = node;
  }
  return env;
}

export function activate(context: vscode.ExtensionContext): SandboxVmsApi {
  const log = vscode.window.createOutputChannel('Sandbox VMs', { log: true });
  const model = new VmModel();
  const notify = new Notifications(log);
  const connection = new ServiceConnection<ServiceClient>(model, {
    connect: () => ServiceClient.connect({ home: home(), serviceScript: context.asAbsolutePath(path.join('dist', 'service.js')), env: serviceEnv() }),
    log: (m) => log.info(m),
    version: RUNTIME_VERSION,
    onNewerService: (v) => notify.warn(`The Sandbox VMs service is version ${v}, newer than this extension (${RUNTIME_VERSION}); update the extension.`),
  });
  const host = new HostState(async () => (await connection.client()).hostStatus(), (m) => log.info(m));
  const terminals = new TerminalManager(async (vm) => (await connection.client()).attach(vm), model, (m) => log.info(m), context.workspaceState);
  const metrics = new MetricsStore(connection, (m) => log.info(m));
  const serialConsoles = new SerialConsoles(async (vm) => (await connection.client()).console(vm, { waitMs: model.get(vm)?.state === 'starting' ? 60_000 : 0 }), (m) => log.info(m));
  const details = new DetailsPanels(context.extensionUri, model, metrics);
  const syncs = new SyncModel(connection, (m) => log.warn(m));
  const checkpoints = new CheckpointModel(connection, model, (m) => log.warn(m));
  const checkpointBranch = new CheckpointBranch(checkpoints, model);
  const tasks = new VmTasks(connection, model, settings, (m) => log.info(m));
  const tree = new VmTreeProvider(model, terminals, () => connection.ensure(), metrics, syncs, checkpointBranch);
  const treeView = vscode.window.createTreeView(View.machines, { treeDataProvider: tree, showCollapseAll: false });
  const guestFs = registerGuestFs(model, () => connection.client(), async (vm) => (await connection.client()).attach(vm), (m) => log.info(`guest files: ${m}`));
  const deps: CommandDeps = { connection, model, host, terminals, notify, log, settings, serialConsoles, details, syncs, checkpoints: { model: checkpoints, branch: checkpointBranch, lastTaskRun: () => { const r = tasks.lastRun(); return r?.undoPoint && { vm: r.vm, checkpoint: r.undoPoint.id }; } } };

  const terminalCounts = new Map<string, number>();
  const checkpointsShown = new Map<string, boolean>();
  let lastSize = model.size;
  const updateMessage = () => {
    treeView.message =
      connection.state === 'reconnecting' && model.size > 0 ? 'Reconnecting to the Sandbox VMs service...'
      : connection.state === 'failed' && model.size > 0 ? `The service cannot be reached: ${connection.error?.message ?? 'see the log'}`
      : undefined;
  };
  context.subscriptions.push(
    log,
    { dispose: () => connection.dispose() },
    { dispose: () => model.dispose() },
    notify,
    terminals,
    metrics,
    serialConsoles,
    details,
    guestFs,
    syncs,
    checkpoints,
    tasks,
    tree,
    treeView,
    host,
    bindTreeMetrics(treeView, model, metrics),
    bindContextKeys(connection, model, host, terminals.onDidChange),
    connection.onDidChangeState((s) => {
      log.info(`service connection: ${s}`);
      if (s === 'connected') void host.refresh();
      updateMessage();
      // Terminals the previous window had open (a reload): attach their shells again.
      if (s === 'connected') void terminals.revive().catch((err) => log.warn(`terminals were not revived: ${(err as Error).message}`));
    }),
    model.onDidChange(() => {
      // The last VM went away: the welcome views show again, so ask about QEMU and the image afresh.
      if (model.size === 0 && lastSize !== 0 && connection.state === 'connected') void host.refresh();
      lastSize = model.size;
      updateMessage();
    }),
    // A new terminal shows under its VM: reveal it (expands the VM) when the view is open.
    terminals.onDidChange((vm) => {
      const open = terminals.of(vm);
      const grew = open.length > (terminalCounts.get(vm) ?? 0);
      terminalCounts.set(vm, open.length);
      const newest = open.at(-1);
      if (grew && newest && treeView.visible) void treeView.reveal({ kind: 'terminal', vm, terminalId: newest.id }, { select: false, focus: false, expand: true }).then(undefined, () => undefined);
    }),
    // A new sync shows under its VM: reveal it (expands the VM) when the view is open.
    syncs.onDidChange((c) => {
      if (c?.kind === 'added' && treeView.visible) void treeView.reveal(tree.syncNode(c.vm, c.id), { select: false, focus: false }).then(undefined, () => undefined);
    }),
    // A VM's first checkpoint: reveal its Checkpoints item (expands the VM) when the view is open.
    checkpoints.onDidChange((vm) => {
      const had = checkpointsShown.get(vm);
      const has = checkpointBranch.has(vm);
      checkpointsShown.set(vm, has);
      if (has && had === false && treeView.visible) void treeView.reveal(checkpointBranch.node(vm, 'group'), { select: false, focus: false, expand: true }).then(undefined, () => undefined);
    }),
    registerTerminalProfile(model, terminals, () => connection.client()),
    createStatusBar(model, () => connection.ensure()),
    createSyncStatusBar(syncs),
    ...registerCommands(deps, home),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (e.affectsConfiguration(`${SECTION}.${Setting.dataDirectory}`)) log.warn('the data directory changed: reload the window to use it');
    }),
  );
  if (treeView.visible || terminals.saved().length > 0) connection.ensure();
  return { model, connection, terminals, tree, treeView, notifications: notify, host, metrics, serialConsoles, details, guestFs, syncs, checkpoints, checkpointBranch, tasks };
}

export function deactivate(): void {
  // Everything is in context.subscriptions; VMs and the service keep running.
}
