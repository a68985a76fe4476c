/**
 * How a VM's checkpoints are stored, and every file operation on them.
 *
 * Layout, in the VM's folder:
 *
 *   disk.qcow2                       the VM's disk: always the writable top overlay (QEMU's -drive)
 *   checkpoints.json                 the index (checkpointTree.ts): nodes, the current position, an operation under way
 *   checkpoints/<id>/disk.qcow2      the checkpoint's frozen layer: what disk.qcow2 was when it was taken
 *   checkpoints/<id>/memory.state    running, paused and saved checkpoints: the QEMU migration stream
 *   checkpoints/<id>/epoch           beside it: the agent channel's epoch, so sessions are attachable after apply
 *
 * Every layer is a qcow2 overlay whose backing file is its parent checkpoint's layer (the first
 * one's is the base image), so the checkpoints are a tree of backing chains and disk.qcow2 is one
 * more leaf, on the layer of the current checkpoint.
 *
 *  - create: disk.qcow2 is renamed into the new checkpoint's folder (frozen: nothing writes it
 *    again) and a fresh, empty disk.next.qcow2 made beforehand on top of it is renamed to
 *    disk.qcow2. A running VM is paused for this: its worker renames the files and moves QEMU onto
 *    the new overlay with QMP `blockdev-snapshot-sync` (mode `existing`; QEMU keeps the old file
 *    open by fd, so the renames under it are safe), writes the memory state with `migrate` to
 *    `exec:cat > memory.state.partial` (the same stream `save` writes), then `cont`s. The guest is
 *    paused for the migration: about the time of a save (~1 s for a 512 MiB guest under TCG),
 *    recorded per checkpoint as `pausedMs`. A saved VM's checkpoint hard-links saved.state.
 *  - apply: disk.qcow2 is replaced (rename) by a fresh overlay on the checkpoint's layer, so the
 *    disk reads exactly as it did; a checkpoint with memory hard-links its memory.state as
 *    saved.state (and its epoch as saved.epoch), and a running one is then restored like a saved VM.
 *    Applying never changes a layer, so a checkpoint can be applied any number of times; taking one
 *    after applying an older one makes a branch.
 *  - delete: the memory state goes at once. The layer goes when nothing sits on it; with one thing
 *    on it (a child's layer, or disk.qcow2) that layer is committed into it (`qemu-img commit -d`,
 *    which copies only the child's own data) and it is renamed into the child's place; with two or
 *    more it is kept, hidden, until one goes. A running QEMU has the current chain open, so layers
 *    in it are merged only once the VM is not running (the next checkpoint operation or listing
 *    then does it).
 *
 * Crash safety: an operation writes its intent (`pending`) to the index before its first file
 * change and clears it with its last; every step is a rename or makes a file nothing refers to yet.
 * `recover` reads the intent and finishes or undoes it from what the files say, so after a kill at
 * any point the VM boots and every listed checkpoint applies. One window is not covered: a worker
 * killed between its rename of disk.qcow2 and QMP's switch (microseconds, guest paused) leaves
 * QEMU writing into the new checkpoint's layer.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs, readdirSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../common/atomicWrite';
import { ErrorCode, SandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { EMPTY_INDEX, nextReclaim, parseIndex, withoutNode, type CheckpointIndex, type CheckpointNode } from './checkpointTree';

export const CHECKPOINT_FILES = { layer: 'disk.qcow2', memory: 'memory.state', epoch: 'epoch' } as const;

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

  /** Makes the checkpoint's folder and disk.next.qcow2, an empty overlay on the layer it will have (which need not exist yet). */
  async prepare(id: string): Promise<void> {
    await fs.mkdir(this.file('checkpoints'), { recursive: true, mode: 0o700 });
    await fs.mkdir(this.folder(id), { recursive: true, mode: 0o700 });
    await this.overlayOn(this.path(id, 'layer'));
  }

  private async overlayOn(backing: string): Promise<void> {
    await fs.rm(this.file('nextDisk'), { force: true });
    await this.img(['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', backing, '-u', this.file('nextDisk'), `${this.diskGiB}G`]);
  }

  /** A VM without QEMU: disk.qcow2 becomes the layer of `id`, disk.next.qcow2 the disk. */
  async freeze(id: string): Promise<void> {
    await fs.rename(this.file('disk'), this.path(id, 'layer'));
    await fs.rename(this.file('nextDisk'), this.file('disk'));
  }

  /** A saved VM's checkpoint shares its saved state (hard links: no copy). */
  async keepSavedState(id: string): Promise<void> {
    await linkOver(this.file('savedState'), this.path(id, 'memory'));
    if (existsSync(this.file('savedEpoch'))) await fs.copyFile(this.file('savedEpoch'), this.path(id, 'epoch'));
  }

  /** apply's files: disk.qcow2 becomes an empty overlay on the layer of `node`; its memory state becomes saved.state. Idempotent. */
  async switchTo(node: CheckpointNode): Promise<void> {
    await fs.rm(this.file('savedState'), { force: true });
    await fs.rm(this.file('savedEpoch'), { force: true });
    await this.overlayOn(this.path(node.id, 'layer'));
    await fs.rename(this.file('nextDisk'), this.file('disk'));
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
  async recover(vmActive: boolean): Promise<CheckpointIndex> {
    let index = await this.read();
    const p = index.pending;
    if (p?.op === 'create') {
      const n = p.node;
      if (!existsSync(this.path(n.id, 'layer'))) {
        this.log(`checkpoint ${n.id}: the create was cut short before the disk moved; undone`);
        await fs.rm(this.file('nextDisk'), { force: true });
        await fs.rm(this.folder(n.id), { recursive: true, force: true });
      } else {
        if (!existsSync(this.file('disk'))) await fs.rename(this.file('nextDisk'), this.file('disk'));
        await fs.rm(this.file('nextDisk'), { force: true });
        const node = { ...n };
        if (n.memory && !existsSync(this.path(n.id, 'memory'))) {
          Object.assign(node, { memory: false, state: 'stopped', note: 'the running state was not written (cut short); applying it gives the disk only' });
          await fs.rm(this.path(n.id, 'memory') + '.partial', { force: true });
        }
        this.log(`checkpoint ${n.id}: the create was cut short after the disk moved; completed${node.note ? ' with the disk only' : ''}`);
        index = { ...index, current: n.id, nodes: [...index.nodes, node] };
      }
      index = { ...index, pending: undefined };
      await this.write(index);
    } else if (p?.op === 'apply') {
      const node = index.nodes.find((n) => n.id === p.id)!;
      this.log(`checkpoint ${p.id}: the apply was cut short; completing it`);
      await this.switchTo(node);
      index = { ...index, current: p.id, pending: undefined };
      await this.write(index);
    }
    await this.dropOrphans(index);
    return this.reclaim(index, vmActive);
  }

  private async dropOrphans(index: CheckpointIndex): Promise<void> {
    let names: string[];
    try {
      names = readdirSync(this.file('checkpoints'));
    } catch {
      return;
    }
    for (const name of names) {
      if (index.nodes.some((n) => n.id === name)) continue;
      this.log(`removing ${this.folder(name)}: no checkpoint refers to it`);
      await fs.rm(this.folder(name), { recursive: true, force: true });
    }
  }

  /** Reclaims deleted checkpoints' layers as far as possible now (see nextReclaim); returns the index after. */
  async reclaim(index: CheckpointIndex, vmActive: boolean): Promise<CheckpointIndex> {
    for (let step = nextReclaim(index, vmActive); step; step = nextReclaim(index, vmActive)) {
      if (step.kind === 'merge') {
        const target = step.into === 'disk' ? this.file('disk') : this.path(step.into!, 'layer');
        const layer = this.path(step.id, 'layer');
        // Commit the one dependent's own data into this layer, which then takes its place: the
        // dependent reads the same, only its data moved. A crash before the rename leaves both
        // consistent (the dependent still overrides what it wrote); after it, only the index is left to do.
        if (existsSync(layer)) {
          await this.img(['commit', '-q', '-d', '-f', 'qcow2', target]);
          await fs.rename(layer, target);
        }
        this.log(`checkpoint ${step.id}: merged into ${step.into === 'disk' ? 'the disk' : `checkpoint ${step.into}`}`);
      } else {
        this.log(`checkpoint ${step.id}: removed`);
      }
      await fs.rm(this.folder(step.id), { recursive: true, force: true });
      index = withoutNode(index, step.id);
      await this.write(index);
    }
    return index;
  }

  /** Bytes the checkpoint takes on the host (allocated blocks of its layer and memory state). */
  sizeOf(id: string): number {
    let total = 0;
    for (const f of ['layer', 'memory'] as const) {
      try {
        total += statSync(this.path(id, f)).blocks * 512;
      } catch {
        // absent
      }
    }
    return total;
  }

  /** True when disk.qcow2 holds no data of its own (nothing written since it was put on its checkpoint). */
  diskUnchanged(): Promise<boolean> {
    return new Promise((resolve) =>
      execFile(this.qemuImg, ['map', '--output=json', '-U', this.file('disk')], { timeout: 60_000, maxBuffer: 64 * 2 ** 20 }, (err, out) => {
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
