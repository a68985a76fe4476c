/**
 * The "Virtual Machines" view: one item per VM (state icon, description, tooltip from
 * vmPresentation), its open terminals and (while the view is visible and the guest says) its
 * listening ports as children. Renders the model; never calls the service for
 * state. Nodes are cached by name so updates of one VM refresh only its item; items carry the VM's
 * id so selection and expansion survive updates.
 */
import * as vscode from 'vscode';
import type { MetricsStore } from '../model/metricsStore';
import type { VmModel } from '../model/vmModel';
import type { TerminalManager } from '../terminals/terminalManager';
import { Command, ItemContext } from '../ids';
import { vmLook, type LiveFigures } from './vmPresentation';
import { forwardKey, forwardLooks } from '../ports/portPresentation';
import type { SyncModel } from '../sync/syncModel';
import { syncItemLook } from '../sync/syncPresentation';
import type { CheckpointBranch, CheckpointNode } from '../checkpoints/checkpointBranch';

export interface VmNode {
  readonly kind: 'vm';
  readonly name: string;
}
export interface TerminalNode {
  readonly kind: 'terminal';
  readonly vm: string;
  readonly terminalId: number;
}
export interface PortNode {
  readonly kind: 'port';
  readonly vm: string;
  /** The guest port. */
  readonly port: number;
  /** Where it is forwarded on the host, when it is. */
  readonly hostPort?: number;
}
export interface SyncNode {
  readonly kind: 'sync';
  readonly vm: string;
  readonly id: string;
}
export type Node = VmNode | TerminalNode | PortNode | SyncNode | CheckpointNode;

/** The shortest time between two re-renders of a VM's item for a changed CPU figure alone. */
const SAMPLE_RENDER_MS = 5_000;

export class VmTreeProvider implements vscode.TreeDataProvider<Node>, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<Node | undefined>();
  readonly onDidChangeTreeData = this.changed.event;
  private readonly nodes = new Map<string, VmNode>();
  /** Per VM: what its item last showed from samples, when it was last re-rendered, and a pending re-render. */
  private readonly shown = new Map<string, { description: string; ports: string; firedAt: number; timer?: NodeJS.Timeout }>();
  private readonly subscriptions: vscode.Disposable[] = [];

  /** Sync nodes by `vm/id`, so a status change re-renders just that item. */
  private readonly syncNodes = new Map<string, SyncNode>();

  constructor(private readonly model: VmModel, private readonly terminals: TerminalManager, private readonly onFirstRender: () => void, private readonly metrics?: MetricsStore, private readonly syncs?: SyncModel, private readonly checkpoints?: CheckpointBranch) {
    this.subscriptions.push(
      model.onDidChange((change) => {
        const node = change && this.nodes.get(change.name);
        this.fire(node);
      }),
      terminals.onDidChange((vm) => this.fire(this.nodes.get(vm))),
    );
    if (metrics) this.subscriptions.push(metrics.onDidChange((vm) => this.sampled(vm)));
    if (checkpoints) this.subscriptions.push(checkpoints.onDidChange((vm) => {
      const what = checkpoints.changed(vm);
      if (what === 'vm') this.fire(this.nodes.get(vm));
      else if (what) this.changed.fire(what);
    }));
    if (syncs) this.subscriptions.push(syncs.onDidChange((c) => {
      if (!c) return this.fire(undefined);
      if (c.kind === 'removed') this.syncNodes.delete(`${c.vm}/${c.id}`);
      const own = this.syncNodes.get(`${c.vm}/${c.id}`);
      if (c.kind === 'changed' && own) this.changed.fire(own);
      else this.fire(this.nodes.get(c.vm));
    }));
  }

  /** The node of a sync (the same object each time, as `TreeView.reveal` needs). */
  syncNode(vm: string, id: string): SyncNode {
    let n = this.syncNodes.get(`${vm}/${id}`);
    if (!n) this.syncNodes.set(`${vm}/${id}`, (n = { kind: 'sync', vm, id }));
    return n;
  }

  /** Re-renders a VM's item (or, with no node, the whole tree). */
  private fire(node: VmNode | undefined): void {
    const shown = node ? this.shown.get(node.name) : undefined;
    if (shown) {
      clearTimeout(shown.timer);
      shown.timer = undefined;
      shown.firedAt = Date.now();
    }
    if (!node) for (const s of this.shown.values()) clearTimeout(s.timer);
    this.changed.fire(node);
  }

  /**
   * A metrics sample re-renders the VM's item only when what it shows changed, and a changed CPU
   * figure at most every SAMPLE_RENDER_MS: VS Code drops an item's hover on every re-render (open or
   * about to open), so re-rendering on each sample would keep its tooltip from ever showing to a
   * user holding the mouse still. Ports appearing or going re-render at once.
   */
  private sampled(vm: string): void {
    const info = this.model.get(vm);
    const node = this.nodes.get(vm);
    if (!info || !node) return;
    const description = vmLook(info, Date.now(), this.live(vm)).description;
    const ports = this.ports(vm).map((p) => `${p.port} ${p.description}`).join(',');
    let shown = this.shown.get(vm);
    if (!shown) this.shown.set(vm, (shown = { description: '', ports: '', firedAt: 0 }));
    if (shown.description === description && shown.ports === ports) return;
    const portsChanged = shown.ports !== ports;
    shown.description = description;
    shown.ports = ports;
    const wait = shown.firedAt + SAMPLE_RENDER_MS - Date.now();
    if (portsChanged || wait <= 0) this.fire(node);
    else shown.timer ??= setTimeout(() => {
      const current = this.nodes.get(vm);
      if (current) this.fire(current);
    }, wait);
  }

  private node(name: string): VmNode {
    let n = this.nodes.get(name);
    if (!n) this.nodes.set(name, (n = { kind: 'vm', name }));
    return n;
  }

  getChildren(element?: Node): Node[] {
    if (!element) {
      this.onFirstRender();
      const names = new Set(this.model.list().map((i) => i.name));
      for (const name of this.nodes.keys()) if (!names.has(name)) this.nodes.delete(name);
      return [...names].map((n) => this.node(n));
    }
    if (element.kind === 'vm') {
      const terminals: Node[] = this.terminals.of(element.name).map((g) => ({ kind: 'terminal', vm: element.name, terminalId: g.id }));
      const syncs: Node[] = (this.syncs?.list(element.name) ?? []).map((s) => this.syncNode(element.name, s.id));
      const checkpoints = this.checkpoints?.groupOf(element.name);
      return [...terminals, ...syncs, ...this.ports(element.name).map((p): Node => ({ kind: 'port', vm: element.name, port: p.port, hostPort: p.hostPort })), ...(checkpoints ? [checkpoints] : [])];
    }
    if (element.kind === 'checkpoint') return this.checkpoints?.children(element) ?? [];
    return [];
  }

  getParent(element: Node): Node | undefined {
    if (element.kind === 'checkpoint') return this.checkpoints?.parent(element) ?? this.node(element.vm);
    return element.kind === 'vm' ? undefined : this.node(element.vm);
  }

  /** What the metrics store knows of a VM now (nothing while the view is hidden). */
  private live(name: string): LiveFigures | undefined {
    const latest = this.metrics?.latest(name);
    return latest || this.metrics?.guestInfo(name) ? { cpuPercent: latest?.cpuPercent, guestInfo: this.metrics?.guestInfo(name) } : undefined;
  }

  /** Forwards (from the VM's status) and listening ports without one (from the metrics, while the view shows). */
  private ports(name: string) {
    const info = this.model.get(name);
    return info ? forwardLooks(info, this.metrics?.guestInfo(name)?.listening) : [];
  }

  getTreeItem(element: Node): vscode.TreeItem {
    if (element.kind === 'checkpoint') return this.checkpoints?.treeItem(element) ?? new vscode.TreeItem('checkpoint');
    if (element.kind === 'terminal') {
      const g = this.terminals.get(element.terminalId);
      const index = this.terminals.of(element.vm).findIndex((t) => t.id === element.terminalId);
      const item = new vscode.TreeItem(`Terminal ${index + 1}`, vscode.TreeItemCollapsibleState.None);
      const info = this.model.get(element.vm);
      item.id = `terminal:${info?.config.id ?? element.vm}:${element.terminalId}`;
      item.iconPath = new vscode.ThemeIcon('terminal');
      item.description = g?.pty.hasEnded ? 'ended' : g?.pty.sessionId !== undefined ? `session ${g.pty.sessionId}` : 'opening';
      item.tooltip = g?.pty.hasEnded ? `A shell on ${element.vm} that has ended; its tab says why` : `A shell on ${element.vm}; click to show it`;
      item.contextValue = ItemContext.terminal;
      item.command = { command: Command.focusTerminal, title: 'Show Terminal', arguments: [element] };
      return item;
    }
    if (element.kind === 'sync') {
      const status = this.syncs?.get(element.vm, element.id);
      if (!status) return new vscode.TreeItem('sync (stopped)');
      const look = syncItemLook(status, this.syncs?.lastError(element.vm, element.id));
      const item = new vscode.TreeItem(look.label, vscode.TreeItemCollapsibleState.None);
      item.id = `sync:${this.model.get(element.vm)?.config.id ?? element.vm}:${element.id}`;
      item.iconPath = new vscode.ThemeIcon(look.icon, look.color ? new vscode.ThemeColor(look.color) : undefined);
      item.description = look.description;
      item.tooltip = look.tooltip;
      item.contextValue = ItemContext.sync;
      item.accessibilityInformation = { label: `Sync of ${look.label} ${look.description.replace('→', 'to')}` };
      return item;
    }
    if (element.kind === 'port') {
      const key = forwardKey({ port: element.port, hostPort: element.hostPort });
      const look = this.ports(element.vm).find((p) => forwardKey(p) === key);
      const item = new vscode.TreeItem(look?.label ?? `${element.port}/tcp`, vscode.TreeItemCollapsibleState.None);
      item.id = `port:${this.model.get(element.vm)?.config.id ?? element.vm}:${key}`;
      item.iconPath = new vscode.ThemeIcon(look?.contextValue === ItemContext.port || !look ? 'plug' : look.description === 'failed' ? 'warning' : 'radio-tower');
      item.description = look?.description;
      item.tooltip = look?.tooltip ?? `TCP port ${element.port} of ${element.vm} (gone)`;
      item.contextValue = look?.contextValue ?? ItemContext.port;
      return item;
    }
    const info = this.model.get(element.name);
    if (!info) return new vscode.TreeItem(element.name);
    const look = vmLook(info, Date.now(), this.live(element.name));
    const hasChildren = this.terminals.of(element.name).length > 0 || this.ports(element.name).length > 0 || (this.syncs?.list(element.name).length ?? 0) > 0 || !!this.checkpoints?.has(element.name);
    const item = new vscode.TreeItem(look.label, hasChildren ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
    item.id = `vm:${info.config.id}`;
    item.iconPath = new vscode.ThemeIcon(look.icon, look.color ? new vscode.ThemeColor(look.color) : undefined);
    item.description = look.description;
    item.contextValue = look.contextValue;
    item.accessibilityInformation = { label: `${info.name}, ${look.description}` };
    return item;
  }

  /** The tooltip is made when it is shown, so uptime and ages are those of the moment of hovering. */
  resolveTreeItem(item: vscode.TreeItem, element: Node): vscode.TreeItem {
    const info = element.kind === 'vm' ? this.model.get(element.name) : undefined;
    if (info && element.kind === 'vm') item.tooltip = new vscode.MarkdownString(vmLook(info, Date.now(), this.live(element.name)).tooltip);
    return item;
  }

  dispose(): void {
    for (const s of this.shown.values()) clearTimeout(s.timer);
    for (const s of this.subscriptions) s.dispose();
    this.changed.dispose();
  }
}
