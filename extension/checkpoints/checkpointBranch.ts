/**
 * The checkpoint part of the Sandbox VMs view: under each VM that has checkpoints, a "Checkpoints"
 * item with the tree (checkpointItems.ts) below it. vmTreeProvider.ts asks this for the nodes and
 * their TreeItems. Node objects are kept per key so `TreeView.reveal` and `getParent` work.
 */
import * as vscode from 'vscode';
import { ItemContext } from '../ids';
import type { VmModel } from '../model/vmModel';
import { checkpointItems, checkpointLook, flatten, groupLook, nowLook, undoGroupLook, type CheckpointItem, type ItemLook } from './checkpointItems';
import type { CheckpointModel } from './checkpointModel';

/** A node of the checkpoint branch: the VM's "Checkpoints" item (`key` 'group') or one item below it. */
export interface CheckpointNode {
  readonly kind: 'checkpoint';
  readonly vm: string;
  readonly key: string;
}

interface Built {
  roots: CheckpointItem[];
  byKey: Map<string, { item: CheckpointItem; parent?: string }>;
}

export class CheckpointBranch {
  private readonly built = new Map<string, Built>();
  private readonly nodes = new Map<string, CheckpointNode>();
  /** VMs whose "Checkpoints" item the tree was last given. */
  private readonly shown = new Set<string>();

  /** A VM's checkpoint list changed (its name); the tree then calls `changed`. */
  readonly onDidChange: vscode.Event<string>;

  constructor(private readonly checkpoints: CheckpointModel, private readonly model: VmModel) {
    this.onDidChange = checkpoints.onDidChange;
  }

  /**
   * Rebuilds `vm`'s items from its new list and says what the tree must render again: the VM's
   * "Checkpoints" node when only what is below it changed, 'vm' when the group came or went, and
   * nothing when the VM had and has no checkpoints (a re-render would drop a hover or a click).
   */
  changed(vm: string): CheckpointNode | 'vm' | undefined {
    this.built.delete(vm);
    const had = this.shown.has(vm);
    const has = this.has(vm);
    return had && has ? this.node(vm, 'group') : had || has ? 'vm' : undefined;
  }

  private build(vm: string): Built | undefined {
    let b = this.built.get(vm);
    if (b) return b;
    const list = this.checkpoints.get(vm);
    if (!list) return undefined;
    const roots = checkpointItems(list);
    b = { roots, byKey: new Map(flatten(roots).map((e) => [e.item.key, e])) };
    this.built.set(vm, b);
    return b;
  }

  /** Whether `vm` shows a "Checkpoints" item. */
  has(vm: string): boolean {
    return (this.build(vm)?.roots.length ?? 0) > 0;
  }

  node(vm: string, key: string): CheckpointNode {
    const id = `${vm}\n${key}`;
    let n = this.nodes.get(id);
    if (!n) this.nodes.set(id, (n = { kind: 'checkpoint', vm, key }));
    return n;
  }

  /** The VM's "Checkpoints" item, when it has checkpoints. */
  groupOf(vm: string): CheckpointNode | undefined {
    const has = this.has(vm);
    if (has) this.shown.add(vm);
    else this.shown.delete(vm);
    return has ? this.node(vm, 'group') : undefined;
  }

  /** The node of checkpoint `id` (an undo point in a folded group included), when shown. */
  checkpointNode(vm: string, id: string): CheckpointNode | undefined {
    return this.build(vm)?.byKey.has(id) ? this.node(vm, id) : undefined;
  }

  children(n: CheckpointNode): CheckpointNode[] {
    const b = this.build(n.vm);
    if (!b) return [];
    if (n.key === 'group') return b.roots.map((i) => this.node(n.vm, i.key));
    const item = b.byKey.get(n.key)?.item;
    if (item?.kind === 'checkpoint') return item.children.map((i) => this.node(n.vm, i.key));
    if (item?.kind === 'undoGroup') return item.points.map((p) => this.node(n.vm, p.id));
    return [];
  }

  /** The node above `n`: the VM (undefined here) for the group, else the group or a checkpoint. */
  parent(n: CheckpointNode): CheckpointNode | undefined {
    if (n.key === 'group') return undefined;
    const parent = this.build(n.vm)?.byKey.get(n.key)?.parent;
    return this.node(n.vm, parent ?? 'group');
  }

  /** The checkpoint a node stands for (undefined for groups and Now). */
  view(n: CheckpointNode) {
    const item = this.build(n.vm)?.byKey.get(n.key)?.item;
    return item?.kind === 'checkpoint' ? item.view : undefined;
  }

  treeItem(n: CheckpointNode): vscode.TreeItem {
    const vmId = this.model.get(n.vm)?.config.id ?? n.vm;
    const list = this.checkpoints.get(n.vm);
    if (n.key === 'group') {
      const item = make(list ? groupLook(list) : { icon: 'versions', label: 'Checkpoints', description: '', tooltip: '', contextValue: ItemContext.checkpoints }, vscode.TreeItemCollapsibleState.Expanded);
      item.id = `checkpoints:${vmId}`;
      return item;
    }
    const entry = this.build(n.vm)?.byKey.get(n.key);
    if (!entry) return new vscode.TreeItem('(gone)');
    const it = entry.item;
    let item: vscode.TreeItem;
    if (it.kind === 'now') item = make(nowLook(n.vm, this.model.get(n.vm)?.state), vscode.TreeItemCollapsibleState.None);
    else if (it.kind === 'undoGroup') item = make(undoGroupLook(it.points), vscode.TreeItemCollapsibleState.Collapsed);
    else item = make(checkpointLook(it.view), it.children.length > 0 ? vscode.TreeItemCollapsibleState.Expanded : vscode.TreeItemCollapsibleState.None);
    item.id = `checkpoint:${vmId}:${n.key}`;
    return item;
  }
}

function make(look: ItemLook, state: vscode.TreeItemCollapsibleState): vscode.TreeItem {
  const item = new vscode.TreeItem(look.label, state);
  item.iconPath = new vscode.ThemeIcon(look.icon, look.color ? new vscode.ThemeColor(look.color) : undefined);
  item.description = look.description;
  item.tooltip = new vscode.MarkdownString(look.tooltip);
  item.contextValue = look.contextValue;
  item.accessibilityInformation = { label: `${look.label}, ${look.description}` };
  return item;
}
