/**
 * Checkpoint operations of the service (Hyper-V's standard checkpoints): create, list, apply,
 * rename, delete, and undo points. Each runs in its VM's queue; the files are checkpointStore.ts's
 * (which has the storage design), the tree logic checkpointTree.ts's.
 *
 * Allowed states: create, apply and delete in running, paused, saved and stopped, checked when
 * asked (a VM starting, stopping or saving is refused at once, not waited for) and again in the
 * queue; apply turns a running VM off after its state was checkpointed unless `discardCurrent`.
 * list and rename in any state.
 */
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import { neverStarted } from './clones';
import { UNDO_LIMITS, parseUndoLimits, type UndoLimits, type VmConfig } from '../common/config';
import { ErrorCode, SandboxError } from '../common/errors';
import { wrongStateMessage } from '../common/stateMessages';
import type { VmInfo, VmState } from '../common/status';
import { VM_FILES } from '../common/paths';
import { locateQemu } from '../qemu/locate';
import { CheckpointStore } from './checkpointStore';
import {
  defaultName,
  live,
  requireFreeName,
  resolve,
  undoPointsToPrune,
  UNDO_DEFAULTS,
  validateCheckpointName,
  view,
  type CheckpointIndex,
  type CheckpointNode,
  type CheckpointState,
  type CheckpointView,
} from './checkpointTree';
import type { WorkerHandle } from './workerHandle';

/** What the VM manager lends the checkpoint operations. All but `queue` are called inside the VM's queue. */
export interface CheckpointHost {
  /** Runs `fn` in the VM's queue (throws UnknownVm first). */
  queue<T>(name: string, fn: () => Promise<T>): Promise<T>;
  dir(name: string): string;
  config(name: string): VmConfig;
  state(name: string): VmState;
  worker(name: string): WorkerHandle | undefined;
  /** Turns the VM off at once (its running state is discarded); resolves when QEMU is gone. */
  turnOff(name: string): Promise<void>;
  /** Restores the saved state (start's body). */
  boot(name: string): Promise<void>;
  pause(name: string): Promise<void>;
  publish(name: string): void;
  /** Sets (or clears) what VmInfo.applying says, and publishes it. */
  setApplying(name: string, applying: VmInfo['applying']): void;
  snapshot(name: string): VmInfo;
  log(message: string): void;
}

export interface CheckpointList {
  vm: string;
  state: VmState;
  /** The checkpoint the VM sits on (its disk is a layer on it); undefined: on the base image. */
  position?: string;
  tree: CheckpointView[];
  /** Bytes of every checkpoint's files together. */
  totalBytes: number;
}

export interface CreatedCheckpoint {
  id: string;
  name: string;
  state: CheckpointState;
  /** Running and paused checkpoints: how long the guest was paused. */
  pausedMs?: number;
  sizeBytes: number;
  elapsedMs: number;
  /** Undo points: the older ones deleted to stay within the limits (count and disk). */
  pruned?: PrunedUndoPoint[];
}

export interface PrunedUndoPoint {
  id: string;
  name: string;
  /** Bytes freed on the host by deleting it. */
  reclaimedBytes: number;
}

export interface AppliedCheckpoint {
  info: VmInfo;
  /** The checkpoint taken of the state the apply left, unless asked not to. */
  saved?: CreatedCheckpoint;
  elapsedMs: number;
}

const ALL: VmState[] = ['running', 'paused', 'saved', 'stopped'];

/** Extra free space a checkpoint with memory wants beyond the guest's memory size (the stream's overhead). */
const MEMORY_HEADROOM = 64 * 2 ** 20;

export class Checkpoints {
  private readonly listeners = new Set<(name: string) => void>();

  constructor(private readonly host: CheckpointHost) {}

  /** Called with the VM's name after a create, apply, rename, delete or undo ends (failed ones too: they may have changed the tree). */
  onDidChange(listener: (name: string) => void): void {
    this.listeners.add(listener);
  }

  private changed(name: string): void {
    for (const l of this.listeners) l(name);
  }

  /**
   * Set by the clone operations (clones.ts): throws, in one sentence naming the clones, when a
   * linked clone's disk sits on `node`'s layer or on one above it (deleting it would move or merge
   * a layer the clone reads).
   */
  guardDelete?: (vm: string, index: CheckpointIndex, node: CheckpointNode) => void;

  /** For clones, inside the VM's queue: a checkpoint of the current state named `label` (any state create allows). */
  takeLocked(name: string, label: string): Promise<CreatedCheckpoint> {
    this.requireState(name, 'clone');
    return this.take(name, label, false);
  }

  /** For clones, inside the VM's queue: the recovered index. */
  async indexLocked(name: string): Promise<CheckpointIndex> {
    return (await this.recovered(name)).index;
  }

  /** For clones, inside the VM's queue: deletes checkpoint `id` (a full clone's temporary one). */
  async deleteLocked(name: string, id: string): Promise<void> {
    const { store, index } = await this.recovered(name);
    const node = index.nodes.find((n) => n.id === id && !n.deleted);
    if (node) await this.remove(name, store, index, node);
  }

  /** Whether a linked clone sits on `node`'s layer (guardDelete refuses it): such an undo point is kept. */
  private clonesSitOn(name: string, index: CheckpointIndex, node: CheckpointNode): boolean {
    try {
      this.guardDelete?.(name, index, node);
      return false;
    } catch {
      return true;
    }
  }

  private async store(name: string): Promise<CheckpointStore> {
    const c = this.host.config(name);
    return new CheckpointStore(this.host.dir(name), (await locateQemu()).img, c.image.disk, c.diskGiB, (m) => this.host.log(`${name}: ${m}`));
  }

  private active(name: string): boolean {
    return this.host.worker(name) !== undefined;
  }

  private requireState(name: string, verb: string): VmState {
    const state = this.host.state(name);
    if (!ALL.includes(state)) throw new SandboxError(ErrorCode.WrongState, wrongStateMessage(name, state, verb, ALL));
    return state;
  }

  /** The index made consistent: an operation a crash cut short is finished or undone, reclaimable layers go. */
  private async recovered(name: string): Promise<{ store: CheckpointStore; index: CheckpointIndex }> {
    const store = await this.store(name);
    const worker = this.host.worker(name);
    if (worker) await worker.call('worker.idle').catch(() => undefined);
    return { store, index: await store.recover(this.active(name), () => this.qemuDisk(name)) };
  }

  /** The file the VM's running QEMU writes, as QEMU says; undefined when it does not run or answer. */
  private async qemuDisk(name: string): Promise<string | undefined> {
    const worker = this.host.worker(name);
    return worker ? worker.call<string>('worker.activeDisk') : undefined;
  }

  /** Before a boot or restore (inside the VM's queue; no QEMU runs): settles an operation a crash cut short, so QEMU opens the right disk. */
  async recoverBeforeBoot(name: string): Promise<void> {
    await (await this.store(name)).recover(false);
  }

  /** Recovers a VM's checkpoint index at service start (queued). Logs, never throws. */
  recoverAtLoad(name: string): Promise<void> {
    return this.host
      .queue(name, async () => {
        await this.recovered(name);
      })
      .catch((err) => this.host.log(`${name}: recovering its checkpoints failed: ${(err as Error).message}`));
  }

  list(name: string): Promise<CheckpointList> {
    return this.host.queue(name, async () => {
      const { store, index } = await this.recovered(name);
      const tree = view(index, (id) => store.sizeOf(index, id));
      const totalBytes = totalBytes_(store, index);
      const position = tree.length ? findCurrent(tree)?.id : undefined;
      return { vm: name, state: this.host.state(name), position, tree, totalBytes };
    });
  }

  /**
   * `limits` (undo points only): the client's budget, used unless the VM has its own (vm.json
   * `undoPoints`); then UNDO_DEFAULTS. Checked before anything is done.
   */
  create(name: string, checkpointName?: string, undo = false, limits?: UndoLimits): Promise<CreatedCheckpoint> {
    this.requireState(name, 'checkpoint');
    const asked = parseUndoLimits(limits, UNDO_LIMITS);
    return this.host.queue(name, async () => {
      this.requireState(name, 'checkpoint');
      const created = await this.take(name, checkpointName, undo);
      if (undo) created.pruned = await this.pruneUndo(name, created.id, { ...asked, ...this.host.config(name).undoPoints });
      this.host.publish(name);
      return created;
    }).finally(() => this.changed(name));
  }

  /** create's body, in the queue. */
  private async take(name: string, checkpointName: string | undefined, undo: boolean): Promise<CreatedCheckpoint> {
    const t0 = Date.now();
    const { store, index } = await this.recovered(name);
    const chosen = checkpointName === undefined ? defaultName(index, undo ? 'undo point' : 'checkpoint') : validateCheckpointName(checkpointName);
    requireFreeName(index, name, chosen);
    const state = this.host.state(name) as CheckpointState;
    if (state === 'saved' && existsSync(path.join(this.host.dir(name), VM_FILES.memoryFile))) throw neverStarted(name);
    const memory = state !== 'stopped';
    if (state === 'running' || state === 'paused') await store.requireFree(this.host.config(name).memoryMiB * 2 ** 20 + MEMORY_HEADROOM, `checkpointing ${name}'s running state`);
    const id = store.newId(index);
    const node: CheckpointNode = { id, name: chosen, layer: index.top ?? VM_FILES.disk, parent: index.current, createdAt: new Date().toISOString(), state, memory, undo: undo || undefined };
    const top = store.newLayer();
    await store.write({ ...index, pending: { op: 'create', node, top } });
    let pausedMs: number | undefined;
    try {
      await store.makeFolder(id);
      await store.overlay(top, store.top(index));
      if (state === 'running' || state === 'paused') {
        const worker = this.host.worker(name);
        const lost = () => new SandboxError(ErrorCode.WorkerLost, `${name}'s worker exited while the checkpoint was taken; the VM is taken over and the checkpoint settled at the next operation (see \`sandboxvm checkpoint list ${name}\`)`);
        if (!worker) throw lost();
        const r = await worker
          .call<{ pausedMs: number }>('worker.checkpoint', { top: store.abs(top), memory: store.path(id, 'memory'), epochFile: store.path(id, 'epoch') })
          .catch((err) => {
            throw worker.isClosed ? lost() : err;
          });
        pausedMs = r.pausedMs;
        node.pausedMs = pausedMs;
      } else if (state === 'saved') {
        await store.keepSavedState(id);
      }
      await store.write({ ...index, current: id, top, nodes: [...index.nodes, node], pending: undefined });
    } catch (err) {
      // Finish or undo from what the files and QEMU say (the disk may have moved already). A
      // worker that died leaves a QEMU that only its successor can ask: the intent stays for the
      // next operation (or start) to settle.
      const workerLost = (state === 'running' || state === 'paused') && !this.active(name);
      const after = workerLost ? undefined : await store.recover(this.active(name), () => this.qemuDisk(name)).catch(() => undefined);
      const kept = after?.nodes.find((n) => n.id === id);
      this.host.log(`${name}: checkpoint ${id} failed (${(err as Error).message}); ${kept ? `kept with ${kept.memory ? 'its state' : 'the disk only'}` : 'nothing changed'}`);
      if (kept) throw new SandboxError((err as SandboxError).code ?? ErrorCode.Internal, `${(err as Error).message}; the checkpoint ${JSON.stringify(chosen)} was kept with the disk only`);
      throw err;
    }
    this.host.log(`${name}: checkpoint ${id} ${JSON.stringify(chosen)} of the ${state} VM${pausedMs !== undefined ? `, guest paused ${pausedMs} ms` : ''}`);
    return { id, name: chosen, state, pausedMs, sizeBytes: store.sizeOf({ ...index, nodes: [node] }, id), elapsedMs: Date.now() - t0 };
  }

  /**
   * Returns the VM to checkpoint `ref` exactly: its disk, and its running state for a running
   * (paused, saved) checkpoint, which comes back running (paused, saved). Unless `discardCurrent`,
   * the state being left is checkpointed first (named "before applying <name>"); skipped only when
   * it is a stopped VM whose disk has not changed since it was put on its checkpoint.
   */
  apply(name: string, ref: string, discardCurrent = false): Promise<AppliedCheckpoint> {
    this.requireState(name, 'apply a checkpoint to');
    return this.host.queue(name, async () => {
      const t0 = Date.now();
      const state = this.requireState(name, 'apply a checkpoint to');
      let { store, index } = await this.recovered(name);
      const target = resolve(index, name, ref);
      let saved: CreatedCheckpoint | undefined;
      if (!discardCurrent && !(state === 'stopped' && index.current !== undefined && (await store.diskUnchanged()))) {
        const base = `before applying ${target.name}`.slice(0, 56);
        let label = base;
        for (let i = 2; live(index).some((n) => n.name === label); i++) label = `${base} (${i})`;
        saved = await this.take(name, label, false);
        index = await store.read();
      }
      // Said before the VM turns off, so clients hear it before their sessions end.
      this.host.setApplying(name, { checkpoint: target.name, withMemory: target.state !== 'stopped' });
      if (this.active(name)) await this.host.turnOff(name);
      const top = store.newLayer();
      await store.write({ ...index, pending: { op: 'apply', id: target.id, top } });
      await store.switchTo(target, top);
      const old = store.top(index);
      index = { ...index, current: target.id, top, pending: undefined };
      await store.write(index);
      await fs.rm(old, { force: true });
      await store.reclaim(index, false);
      this.host.log(`${name}: applied checkpoint ${target.id} ${JSON.stringify(target.name)} (${target.state})`);
      if (target.state === 'running' || target.state === 'paused') {
        await this.host.boot(name);
        if (target.state === 'paused') await this.host.pause(name);
      }
      this.host.setApplying(name, undefined);
      return { info: this.host.snapshot(name), saved, elapsedMs: Date.now() - t0 };
    })
      .catch((err) => {
        this.host.setApplying(name, undefined);
        throw err;
      })
      .finally(() => this.changed(name));
  }

  rename(name: string, ref: string, newName: string): Promise<CheckpointView> {
    return this.host.queue(name, async () => {
      const { store, index } = await this.recovered(name);
      const node = resolve(index, name, ref);
      const chosen = validateCheckpointName(newName);
      requireFreeName(index, name, chosen, node.id);
      const next = { ...index, nodes: index.nodes.map((n) => (n.id === node.id ? { ...n, name: chosen } : n)) };
      await store.write(next);
      return find(view(next, (id) => store.sizeOf(next, id)), node.id)!;
    }).finally(() => this.changed(name));
  }

  /**
   * Deletes checkpoint `ref`: its memory state at once, its layer as soon as nothing needs it
   * (merged into its one child, or kept hidden while two need it or a running QEMU has it open).
   * Returns the bytes freed now.
   */
  delete(name: string, ref: string): Promise<{ id: string; name: string; reclaimedBytes: number }> {
    this.requireState(name, 'delete a checkpoint of');
    return this.host.queue(name, async () => {
      this.requireState(name, 'delete a checkpoint of');
      const { store, index } = await this.recovered(name);
      const node = resolve(index, name, ref);
      this.guardDelete?.(name, index, node);
      return { id: node.id, name: node.name, reclaimedBytes: await this.remove(name, store, index, node) };
    }).finally(() => this.changed(name));
  }

  private async remove(name: string, store: CheckpointStore, index: CheckpointIndex, node: CheckpointNode): Promise<number> {
    const before = totalBytes_(store, index);
    const next = { ...index, nodes: index.nodes.map((n) => (n.id === node.id ? { ...n, deleted: true, memory: false } : n)) };
    await store.write(next);
    for (const f of ['memory', 'epoch'] as const) await fs.rm(store.path(node.id, f), { force: true });
    const after = await store.reclaim(next, this.active(name));
    this.host.log(`${name}: deleted checkpoint ${node.id} ${JSON.stringify(node.name)}`);
    return Math.max(0, before - totalBytes_(store, after));
  }

  /**
   * Deletes undo points, oldest first, until at most `maxCount` are left and they cost at most
   * `maxDiskMiB` (undoPointsToPrune says how that is counted; never `justMade`). Sizes are measured again after each delete (a layer merged
   * into its child moves its data there). Returns what went and the bytes each freed.
   */
  private async pruneUndo(name: string, justMade: string, limits: UndoLimits): Promise<PrunedUndoPoint[]> {
    const maxCount = limits.maxCount ?? UNDO_DEFAULTS.maxCount;
    const maxBytes = (limits.maxDiskMiB ?? UNDO_DEFAULTS.maxDiskMiB) * 2 ** 20;
    const store = await this.store(name);
    let index = await store.read();
    const pruned: PrunedUndoPoint[] = [];
    for (let round = 0; round < 1000; round++) {
      const idx = index;
      const old = undoPointsToPrune(idx, maxCount, { maxBytes, sizeOf: (id) => store.sizeOf(idx, id), layerOf: (id) => store.layerSizeOf(idx, id) }).find((n) => n.id !== justMade && !this.clonesSitOn(name, idx, n));
      if (!old) break;
      pruned.push({ id: old.id, name: old.name, reclaimedBytes: await this.remove(name, store, index, old) });
      index = await store.read();
    }
    if (pruned.length) this.host.log(`${name}: pruned ${pruned.length} undo point(s), ${pruned.reduce((s, p) => s + p.reclaimedBytes, 0)} bytes freed`);
    return pruned;
  }

  /** Applies the newest undo point, discarding the state since (that is what undo asks for). */
  async undo(name: string): Promise<AppliedCheckpoint & { checkpoint: string }> {
    const { index } = await this.host.queue(name, () => this.recovered(name));
    const last = live(index)
      .filter((n) => n.undo)
      .sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    if (!last) throw new SandboxError(ErrorCode.UnknownCheckpoint, `${name} has no undo point; \`sandboxvm exec --undo-point ${name} -- <command>\` makes one`);
    return { ...(await this.apply(name, last.id, true)), checkpoint: last.name };
  }
}

/** How many undo points a VM keeps by default (the oldest go first). */
export const UNDO_KEEP = UNDO_DEFAULTS.maxCount;

/** Bytes of every checkpoint's files (deleted ones still kept included). */
function totalBytes_(store: CheckpointStore, index: CheckpointIndex): number {
  return index.nodes.reduce((sum, n) => sum + store.sizeOf(index, n.id), 0);
}

function find(tree: CheckpointView[], id: string): CheckpointView | undefined {
  for (const v of tree) {
    if (v.id === id) return v;
    const below = find(v.children, id);
    if (below) return below;
  }
  return undefined;
}

function findCurrent(tree: CheckpointView[]): CheckpointView | undefined {
  for (const v of tree) {
    if (v.current) return v;
    const below = findCurrent(v.children);
    if (below) return below;
  }
  return undefined;
}
