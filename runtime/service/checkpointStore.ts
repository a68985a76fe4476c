/**
 * How a VM's checkpoints are stored, and every file operation on them.
 *
 * Layout, in the VM's folder:
 *
 *   disk.qcow2                       the VM's first disk (overlay on the base image)
 *   layers/<16 hex>.qcow2            disks made by checkpoint operations
 *   checkpoints.json                 the index (checkpointTree.ts): the checkpoints with their
 *                                    layers, the writable disk (`top`), the VM's position, an operation under way
 *   checkpoints/<id>/memory.state    running, paused and saved checkpoints: the QEMU migration stream
 *   checkpoints/<id>/epoch           beside it: the agent channel's epoch, so sessions are attachable after apply
 *
 * Every disk file is a qcow2 overlay whose backing file is its parent's (the first's is the base
 * image), so checkpoints are a tree of backing chains and the writable disk is one more leaf, on the
 * layer of the current checkpoint. **A file QEMU has open is never renamed**: QEMU reopens images
 * by path (a checkpoint makes the old disk read-only, and that reopen goes through its path), so a
 * layer stays where it was written and only the index says which file is which.
 *
 *  - create: the writable disk becomes the checkpoint's layer as it lies, and a new empty overlay
 *    on it (layers/<new>.qcow2, made as .partial and renamed) becomes the writable disk. For a
 *    running VM its worker writes the memory state with a pre-copy `migrate` to
 *    `exec:cat > memory.state.partial` (the stream `save` writes; fsynced, renamed) while the
 *    guest runs, with `pause-before-switchover`: QEMU stops the vCPUs for the last pass and waits,
 *    the worker moves QEMU onto the new overlay (QMP `blockdev-snapshot-sync`, mode `existing`),
 *    lets the migration finish and `cont`s. Disk and memory are of the same instant; the guest is
 *    paused for the last pass only (~20-40 ms for an idle 512 MiB guest under TCG, where a save
 *    pauses it ~1 s), recorded per checkpoint as `pausedMs` (QEMU's STOP to RESUME). A guest
 *    whose copy does not converge within 5 s is stopped for the rest; a QEMU that refuses the
 *    live way is checkpointed stopped throughout (and a paused VM always is). A saved VM's
 *    checkpoint hard-links saved.state.
 *  - apply: a new empty overlay on the checkpoint's layer becomes the writable disk (the old one is
 *    deleted), so the disk reads exactly as it did; a checkpoint with memory hard-links its
 *    memory.state as saved.state (its epoch as saved.epoch), and a running one is restored like a
 *    saved VM. Applying never writes a layer, so a checkpoint applies any number of times; one
 *    taken after applying an older one is a branch.
 *  - delete: the memory state goes at once. The layer goes when nothing sits on it; with one thing
 *    on it (a child's layer, or the writable disk) that one is committed into it (`qemu-img commit
 *    -d`: copies only the child's own data) and the layer is renamed into the child's place; with
 *    two or more it is kept, hidden, until one goes. A running QEMU has the current chain open, so
 *    its layers are merged only once the VM is not running (the next checkpoint operation or list).
 *
 * Crash safety: an operation records its intent (`pending`, with the new disk's name) in the index
 * before its first file change and clears it with its last; each step is a rename or makes a file
 * nothing refers to yet. `recover` finishes or undoes it: a create is finished when its new disk
 * exists, unless a running QEMU says it still writes the old one (`worker.activeDisk`); an apply
 * is finished. Files the index does not name are removed. So after a kill at any point the VM
 * boots and every listed checkpoint applies.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../common/atomicWrite';
import { ErrorCode, SandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { activeDisk } from '../common/activeDisk';
import { EMPTY_INDEX, nextReclaim, parseIndex, withoutNode, type CheckpointIndex, type CheckpointNode } from './checkpointTree';

export const CHECKPOINT_FILES = { memory: 'memory.state', epoch: 'epoch' } as const;

export class CheckpointStore {
  constructor(
    private readonly vmDir: string,
    private readonly qemuImg: string,
    /** The base image: the backing file of root checkpoints' layers. */
    private readonly baseDisk: string,
    private readonly diskGiB: number,
    private readonly log: (m: string) => void,
  ) {}

  file(f: keyof typeof VM_FILES): string {
    return path.join(this.vmDir, VM_FILES[f]);
  }

  folder(id: string): string {
    return path.join(this.file('checkpoints'), id);
  }

  path(id: string, f: keyof typeof CHECKPOINT_FILES): string {
    return path.join(this.folder(id), CHECKPOINT_FILES[f]);
  }

  /** The index; an empty one when the VM has never had a checkpoint. */
  async read(): Promise<CheckpointIndex> {
    let text: string;
    try {
      text = await fs.readFile(this.file('checkpointIndex'), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY_INDEX, nodes: [] };
      throw err;
    }
    try {
      return parseIndex(text);
    } catch (err) {
      throw new SandboxError(ErrorCode.Internal, `the checkpoint index ${this.file('checkpointIndex')} is damaged: ${(err as Error).message}`);
    }
  }

  write(index: CheckpointIndex): Promise<void> {
    return writeJsonAtomic(this.file('checkpointIndex'), index);
  }

  newId(index: CheckpointIndex): string {
    for (;;) {
      const id = randomBytes(4).toString('hex');
      if (!index.nodes.some((n) => n.id === id) && !existsSync(this.folder(id))) return id;
    }
  }

  /** A fresh name for a disk under layers/ (relative to the VM's folder). */
  newLayer(): string {
    return `${VM_FILES.layers}/${randomBytes(8).toString('hex')}.qcow2`;
  }

  abs(relative: string): string {
    return path.join(this.vmDir, relative);
  }

  /** The writable disk now (absolute). */
  top(index: CheckpointIndex): string {
    return this.abs(index.top ?? VM_FILES.disk);
  }

  /** Makes the checkpoint's folder (for its memory state). */
  async makeFolder(id: string): Promise<void> {
    await fs.mkdir(this.folder(id), { recursive: true, mode: 0o700 });
  }

  /** Makes `relative` an empty overlay on `backing` (absolute), complete or not at all. Idempotent. */
  async overlay(relative: string, backing: string): Promise<void> {
    if (existsSync(this.abs(relative))) return;
    await fs.mkdir(this.file('layers'), { recursive: true, mode: 0o700 });
    const partial = this.abs(relative) + '.partial';
    await fs.rm(partial, { force: true });
    await this.img(['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, '-u', partial, `${this.diskGiB}G`]);
    await fs.rename(partial, this.abs(relative));
  }

  /** A saved VM's checkpoint shares its saved state (hard links: no copy). */
  async keepSavedState(id: string): Promise<void> {
    await linkOver(this.file('savedState'), this.path(id, 'memory'));
    if (existsSync(this.file('savedEpoch'))) await fs.copyFile(this.file('savedEpoch'), this.path(id, 'epoch'));
  }

  /**
   * apply's files, once its intent is recorded: `top` (a new overlay on the layer of `node`) made,
   * the saved state replaced by the checkpoint's. Idempotent. The index is the caller's.
   */
  async switchTo(node: CheckpointNode, top: string): Promise<void> {
    await fs.rm(this.file('savedState'), { force: true });
    await fs.rm(this.file('savedEpoch'), { force: true });
    await this.overlay(top, this.abs(node.layer));
    if (node.memory) {
      if (existsSync(this.path(node.id, 'epoch'))) await writeFileAtomic(this.file('savedEpoch'), await fs.readFile(this.path(node.id, 'epoch')));
      await linkOver(this.path(node.id, 'memory'), this.file('savedState'));
    }
  }

  /**
   * Finishes or undoes an operation a crash cut short, drops folders the index does not know,
   * and reclaims what deleted checkpoints no longer need. `vmActive`: QEMU runs on the disk.
   * Call it with the VM's queue held and no worker operation under way.
   */
  async recover(vmActive: boolean, qemuDisk?: () => Promise<string | undefined>): Promise<CheckpointIndex> {
    let index = await this.read();
    const p = index.pending;
    if (p?.op === 'create') {
      const n = p.node;
      const running = vmActive && qemuDisk ? await qemuDisk().catch(() => undefined) : undefined;
      const moved = existsSync(this.abs(p.top)) && (running === undefined || running === this.abs(p.top));
      if (!moved) {
        this.log(`checkpoint ${n.id}: the create was cut short before the disk moved; undone`);
        await fs.rm(this.abs(p.top), { force: true });
        await fs.rm(this.abs(p.top) + '.partial', { force: true });
        await fs.rm(this.folder(n.id), { recursive: true, force: true });
        index = { ...index, pending: undefined };
      } else {
        const node = { ...n };
        if (n.memory && !existsSync(this.path(n.id, 'memory'))) {
          Object.assign(node, { memory: false, state: 'stopped', note: 'its running state was not written (cut short): it holds the disk only' });
          await fs.rm(this.path(n.id, 'memory') + '.partial', { force: true });
        }
        this.log(`checkpoint ${n.id}: the create was cut short after the disk moved; completed${node.memory ? '' : ' with the disk only'}`);
        index = { ...index, current: n.id, top: p.top, nodes: [...index.nodes, node], pending: undefined };
      }
      await this.write(index);
    } else if (p?.op === 'apply') {
      const node = index.nodes.find((n) => n.id === p.id)!;
      this.log(`checkpoint ${p.id}: the apply was cut short; completing it`);
      await this.switchTo(node, p.top);
      index = { ...index, current: p.id, top: p.top, pending: undefined };
      await this.write(index);
    }
    await this.dropOrphans(index);
    return this.reclaim(index, vmActive);
  }

  /** Removes checkpoint folders and layers the index does not name (left by a crash). */
  private async dropOrphans(index: CheckpointIndex): Promise<void> {
    const ids = new Set(index.nodes.map((n) => n.id));
    const disks = new Set([this.top(index), ...index.nodes.map((n) => this.abs(n.layer))]);
    const orphans = [
      ...readdir(this.file('checkpoints')).filter((f) => !ids.has(f)).map((f) => this.folder(f)),
      ...readdir(this.file('layers')).map((f) => path.join(this.file('layers'), f)).filter((f) => !disks.has(f)),
    ];
    if (!disks.has(this.file('disk'))) orphans.push(this.file('disk'));
    for (const f of orphans) {
      if (!existsSync(f)) continue;
      this.log(`removing ${f}: no checkpoint refers to it`);
      await fs.rm(f, { recursive: true, force: true });
    }
  }

  /** Reclaims deleted checkpoints' layers as far as possible now (see nextReclaim); returns the index after. */
  async reclaim(index: CheckpointIndex, vmActive: boolean): Promise<CheckpointIndex> {
    for (let step = nextReclaim(index, vmActive); step; step = nextReclaim(index, vmActive)) {
      if (step.kind === 'merge') {
        const node = index.nodes.find((n) => n.id === step.id)!;
        const target = step.into === 'disk' ? this.top(index) : this.abs(index.nodes.find((n) => n.id === step.into)!.layer);
        const layer = this.abs(node.layer);
        // Commit the one dependent's own data into this layer, which then takes its place: the
        // dependent reads the same, only its data moved. A crash before the rename leaves both
        // consistent (the dependent still overrides what it wrote); after it, only the index is left to do.
        if (existsSync(layer)) {
          await this.img(['commit', '-q', '-d', '-f', 'qcow2', target]);
          await fs.rename(layer, target);
        }
        this.log(`checkpoint ${step.id}: merged into ${step.into === 'disk' ? 'the disk' : `checkpoint ${step.into}`}`);
      } else {
        await fs.rm(this.abs(index.nodes.find((n) => n.id === step.id)!.layer), { force: true });
        this.log(`checkpoint ${step.id}: removed`);
      }
      await fs.rm(this.folder(step.id), { recursive: true, force: true });
      index = withoutNode(index, step.id);
      await this.write(index);
    }
    return index;
  }

  /** Bytes the checkpoint takes on the host (allocated blocks of its layer and memory state). */
  sizeOf(index: CheckpointIndex, id: string): number {
    const node = index.nodes.find((n) => n.id === id);
    return node ? blocks(this.abs(node.layer)) + blocks(this.path(id, 'memory')) : 0;
  }

  /** Bytes of the checkpoint's disk layer alone. */
  layerSizeOf(index: CheckpointIndex, id: string): number {
    const node = index.nodes.find((n) => n.id === id);
    return node ? blocks(this.abs(node.layer)) : 0;
  }

  /** True when disk.qcow2 holds no data of its own (nothing written since it was put on its checkpoint). */
  diskUnchanged(): Promise<boolean> {
    return new Promise((resolve) =>
      execFile(this.qemuImg, ['map', '--output=json', '-U', activeDisk(this.vmDir)], { timeout: 60_000, maxBuffer: 64 * 2 ** 20 }, (err, out) => {
        if (err) return resolve(false);
        try {
          resolve(!(JSON.parse(out) as { depth: number }[]).some((e) => e.depth === 0));
        } catch {
          resolve(false);
        }
      }),
    );
  }

  /** Throws DiskFull when the VM's filesystem has less than `bytes` free. */
  async requireFree(bytes: number, what: string): Promise<void> {
    const s = await fs.statfs(this.vmDir);
    const free = s.bavail * s.bsize;
    if (free < bytes) {
      throw new SandboxError(ErrorCode.DiskFull, `${what} needs up to ${mib(bytes)} MiB and the disk holding ${this.vmDir} has ${mib(free)} MiB free; free some space or delete checkpoints`);
    }
  }

  img(args: string[]): Promise<void> {
    return new Promise((resolve, reject) =>
      execFile(this.qemuImg, args, { timeout: 600_000 }, (err, _out, stderr) => {
        if (!err) return resolve();
        if (/No space left/i.test(stderr)) return reject(new SandboxError(ErrorCode.DiskFull, `the disk holding ${this.vmDir} is full (qemu-img ${args[0]}); free some space and try again`));
        reject(new SandboxError(ErrorCode.Internal, `qemu-img ${args[0]} failed: ${stderr.trim() || err.message}`));
      }),
    );
  }
}

function blocks(file: string): number {
  try {
    return statSync(file).blocks * 512;
  } catch {
    return 0;
  }
}

function readdir(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** `to` becomes a hard link of `from` (replacing it). */
async function linkOver(from: string, to: string): Promise<void> {
  const tmp = `${to}.link-${process.pid}`;
  await fs.rm(tmp, { force: true });
  await fs.link(from, tmp);
  await fs.rename(tmp, to);
}

function mib(bytes: number): number {
  return Math.floor(bytes / 2 ** 20);
}
