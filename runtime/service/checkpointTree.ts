/**
 * The checkpoint index of one VM (`checkpoints.json`) and the pure decisions on it: looking a
 * checkpoint up, naming, the tree as shown, and which deleted layers can be reclaimed now. No file
 * is touched here (checkpointStore.ts does the files); tests in test/unit/checkpoint-tree.test.ts.
 */
import { LAYER_PATH } from '../common/activeDisk';
import { ErrorCode, SandboxError } from '../common/errors';

/** What applying a checkpoint returns the VM to: the state it was in when the checkpoint was taken. */
export type CheckpointState = 'running' | 'paused' | 'saved' | 'stopped';

export interface CheckpointNode {
  /** 8 hex digits; the checkpoint's folder is `checkpoints/<id>`. */
  id: string;
  name: string;
  /** Its frozen disk layer, relative to the VM's folder (what the disk was when it was taken; never written again). */
  layer: string;
  /** The checkpoint whose layer this one's layer sits on; undefined: the base image. */
  parent?: string;
  createdAt: string;
  state: CheckpointState;
  /** Whether `checkpoints/<id>/memory.state` holds the VM's running state (running, paused, saved). */
  memory: boolean;
  /** Deleted by the user, its layer kept while a child layer or the VM's disk still needs it. Never shown. */
  deleted?: boolean;
  /** Running checkpoints: how long the guest's vCPUs were stopped to take it. */
  pausedMs?: number;
  /** Set when the running state could not be written and the checkpoint kept the disk only. */
  note?: string;
  /** An undo point (`exec --undo-point`): pruned by count, hidden from nothing. */
  undo?: boolean;
}

/** An operation under way: recorded before its first file changes, cleared with its last (recovery reads it). */
export type PendingOp = { op: 'create'; node: CheckpointNode; top: string } | { op: 'apply'; id: string; top: string };

export interface CheckpointIndex {
  version: 1;
  /** The checkpoint the VM's writable disk sits on (the VM's position in the tree); undefined: the base image. */
  current?: string;
  /** The writable disk, relative to the VM's folder; undefined: disk.qcow2 (no checkpoint yet). */
  top?: string;
  nodes: CheckpointNode[];
  pending?: PendingOp;
}

export const EMPTY_INDEX: CheckpointIndex = { version: 1, nodes: [] };

const ID = /^[0-9a-f]{8}$/;
const STATES: readonly CheckpointState[] = ['running', 'paused', 'saved', 'stopped'];

/** Parses and checks checkpoints.json; anything malformed throws (the caller says which file). */
export function parseIndex(text: string): CheckpointIndex {
  const raw = JSON.parse(text) as Partial<CheckpointIndex>;
  if (raw?.version !== 1 || !Array.isArray(raw.nodes)) throw new Error('not a version 1 checkpoint index');
  const nodes = raw.nodes.map(checkNode);
  const ids = new Set(nodes.map((n) => n.id));
  if (ids.size !== nodes.length) throw new Error('duplicate checkpoint ids');
  for (const n of nodes) if (n.parent !== undefined && !ids.has(n.parent)) throw new Error(`checkpoint ${n.id} has an unknown parent ${n.parent}`);
  if (raw.current !== undefined && !ids.has(raw.current)) throw new Error(`the current checkpoint ${raw.current} is unknown`);
  if (raw.top !== undefined && !LAYER_PATH.test(raw.top)) throw new Error('malformed top layer');
  let pending: PendingOp | undefined;
  const p = raw.pending as PendingOp | undefined;
  if (p !== undefined && !LAYER_PATH.test(p.top)) throw new Error('malformed pending operation');
  if (p?.op === 'create') pending = { op: 'create', node: checkNode(p.node), top: p.top };
  else if (p?.op === 'apply' && ids.has(p.id)) pending = { op: 'apply', id: p.id, top: p.top };
  else if (p !== undefined) throw new Error('malformed pending operation');
  return { version: 1, current: raw.current, top: raw.top, nodes, pending };
}

function checkNode(n: CheckpointNode): CheckpointNode {
  if (!n || !ID.test(n.id) || typeof n.name !== 'string' || !STATES.includes(n.state) || typeof n.memory !== 'boolean' || typeof n.createdAt !== 'string') {
    throw new Error(`malformed checkpoint ${JSON.stringify(n)?.slice(0, 100)}`);
  }
  if (typeof n.layer !== 'string' || !LAYER_PATH.test(n.layer)) throw new Error(`malformed layer of checkpoint ${n.id}`);
  if (n.parent !== undefined && !ID.test(n.parent)) throw new Error(`malformed parent of checkpoint ${n.id}`);
  return n;
}

/** Throws BadName unless `name` is 1-64 printable characters without leading or trailing spaces. */
export function validateCheckpointName(name: unknown): string {
  if (typeof name !== 'string' || name.length < 1 || name.length > 64 || /[\u0000-\u001f\u007f]/.test(name) || name.trim() !== name) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 80)) : String(name);
    throw new SandboxError(ErrorCode.BadName, `invalid checkpoint name ${shown}: use 1-64 printable characters, no leading or trailing spaces`);
  }
  return name;
}

/** The live (not deleted) checkpoints. */
export function live(index: CheckpointIndex): CheckpointNode[] {
  return index.nodes.filter((n) => !n.deleted);
}

/** Throws DuplicateName when a live checkpoint of the VM already has `name`. */
export function requireFreeName(index: CheckpointIndex, vm: string, name: string, except?: string): void {
  if (live(index).some((n) => n.name === name && n.id !== except)) {
    throw new SandboxError(ErrorCode.DuplicateName, `${vm} already has a checkpoint named ${JSON.stringify(name)}; pick another name or rename that one`);
  }
}

/** "checkpoint N", N one more than the highest such name in use. */
export function defaultName(index: CheckpointIndex, prefix = 'checkpoint'): string {
  let max = 0;
  for (const n of live(index)) {
    const m = new RegExp(`^${prefix} (\\d+)$`).exec(n.name);
    if (m) max = Math.max(max, Number(m[1]));
  }
  return `${prefix} ${max + 1}`;
}

/** The live checkpoint named `ref`, or else with id `ref`; throws UnknownCheckpoint with the way to list them. */
export function resolve(index: CheckpointIndex, vm: string, ref: unknown): CheckpointNode {
  if (typeof ref !== 'string' || ref.length === 0) throw new SandboxError(ErrorCode.BadArgument, 'name the checkpoint (its name or id)');
  const nodes = live(index);
  const found = nodes.find((n) => n.name === ref) ?? nodes.find((n) => n.id === ref);
  if (!found) throw new SandboxError(ErrorCode.UnknownCheckpoint, `${vm} has no checkpoint ${JSON.stringify(ref.slice(0, 80))}; see \`sandboxvm checkpoint list ${vm}\``);
  return found;
}

/** What sits on the layer of `id`: its child checkpoints, and `'disk'` when the VM's writable disk does. */
export function dependents(index: CheckpointIndex, id: string): string[] {
  const deps: string[] = index.nodes.filter((n) => n.parent === id).map((n) => n.id);
  if (index.current === id) deps.push('disk');
  return deps;
}

/** The ids from the current checkpoint up to the root: the layers a running QEMU has open. */
export function activeChain(index: CheckpointIndex): Set<string> {
  const byId = new Map(index.nodes.map((n) => [n.id, n]));
  const chain = new Set<string>();
  for (let id = index.current; id !== undefined && !chain.has(id); id = byId.get(id)?.parent) chain.add(id);
  return chain;
}

/**
 * The next reclaim step for a deleted checkpoint, or undefined when none can be done now:
 *  - `remove`: nothing sits on its layer any more; its folder goes.
 *  - `merge`: exactly one layer sits on it (a child checkpoint's, or the VM's disk): that layer's
 *    data is committed into this one, which then takes the child's place (checkpointStore.ts).
 * A layer with two or more dependents stays. While QEMU runs (`vmActive`) the layers of the active
 * chain are open in it, so they are not merged until it stops.
 */
export function nextReclaim(index: CheckpointIndex, vmActive: boolean): { kind: 'remove' | 'merge'; id: string; into?: string } | undefined {
  const chain = vmActive ? activeChain(index) : new Set<string>();
  for (const n of index.nodes) {
    if (!n.deleted) continue;
    const deps = dependents(index, n.id);
    if (deps.length === 0) return { kind: 'remove', id: n.id };
    if (deps.length === 1 && !chain.has(n.id)) return { kind: 'merge', id: n.id, into: deps[0] };
  }
  return undefined;
}

/** The index once `id`'s layer has been merged into its one dependent (or removed): children and the position move to its parent. */
export function withoutNode(index: CheckpointIndex, id: string): CheckpointIndex {
  const gone = index.nodes.find((n) => n.id === id);
  if (!gone) return index;
  return {
    ...index,
    current: index.current === id ? gone.parent : index.current,
    nodes: index.nodes.filter((n) => n.id !== id).map((n) => (n.parent === id ? { ...n, parent: gone.parent } : n)),
  };
}

/** A checkpoint as shown: its live children, deleted ones between skipped. */
export interface CheckpointView {
  id: string;
  name: string;
  createdAt: string;
  state: CheckpointState;
  pausedMs?: number;
  note?: string;
  undo?: boolean;
  /** Bytes on the host: its layer and its memory state. */
  sizeBytes: number;
  /** The VM's position: it sits on this checkpoint (a deleted ancestor in between counts as this one). */
  current: boolean;
  children: CheckpointView[];
}

/** The live tree, roots first by time; sizes from `sizeOf`. */
export function view(index: CheckpointIndex, sizeOf: (id: string) => number): CheckpointView[] {
  const byId = new Map(index.nodes.map((n) => [n.id, n]));
  const liveParent = (id: string | undefined): string | undefined => {
    for (let p = id; p !== undefined; p = byId.get(p)?.parent) if (!byId.get(p)?.deleted) return p;
    return undefined;
  };
  const position = liveParent(index.current);
  const views = new Map<string, CheckpointView>();
  for (const n of live(index)) {
    views.set(n.id, { id: n.id, name: n.name, createdAt: n.createdAt, state: n.state, pausedMs: n.pausedMs, note: n.note, undo: n.undo, sizeBytes: sizeOf(n.id), current: n.id === position, children: [] });
  }
  const roots: CheckpointView[] = [];
  for (const n of live(index).sort((a, b) => a.createdAt.localeCompare(b.createdAt))) {
    const p = liveParent(n.parent);
    (p !== undefined ? views.get(p)!.children : roots).push(views.get(n.id)!);
  }
  return roots;
}

/**
 * The undo points to delete, oldest first: those beyond the newest `keep`, then, while the ones
 * left cost more than `disk.maxBytes`, the oldest of them; the disk budget never takes the newest.
 *
 * What undo points cost: each one's files (`disk.sizeOf`: layer and memory state) except the
 * oldest one's layer (`disk.layerOf`), which holds what the VM wrote before its first undo point:
 * deleting undo points merges that data forward, it never frees it. Sizes change as layers merge,
 * so a caller deletes the first and asks again.
 */
export function undoPointsToPrune(index: CheckpointIndex, keep: number, disk?: { maxBytes: number; sizeOf: (id: string) => number; layerOf?: (id: string) => number }): CheckpointNode[] {
  const undo = live(index)
    .filter((n) => n.undo)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const cut = Math.max(0, undo.length - keep);
  if (!disk) return undo.slice(0, cut);
  const cost = (from: number) => undo.slice(from).reduce((sum, n) => sum + disk.sizeOf(n.id), 0) - (disk.layerOf?.(undo[from].id) ?? 0);
  let end = cut;
  while (end < undo.length - 1 && cost(end) > disk.maxBytes) end++;
  return undo.slice(0, end);
}

/** Undo-point limits when neither the VM (vm.json `undoPoints`) nor the client sets them. */
export const UNDO_DEFAULTS = { maxCount: 10, maxDiskMiB: 2048 } as const;
