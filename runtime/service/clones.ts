/**
 * Clones of a VM (VirtualBox's linked and full clones, after Hyper-V's export-import-as-copy):
 *
 *  - linked (default): the new VM's disk is an empty qcow2 overlay on a frozen layer of the
 *    source: a checkpoint's layer when `checkpoint` is given, else a checkpoint taken of the
 *    current state for the purpose (named "clone base for <new>", visible in the source's tree,
 *    as VirtualBox's "Linked Base"). Milliseconds and kilobytes.
 *  - full: the new VM's disk is that state flattened into a standalone qcow2 (`qemu-img convert`,
 *    progress reported); a running source is checkpointed for a consistent instant and the
 *    checkpoint deleted after.
 *
 * When the state cloned has memory (a running, paused or saved VM, a running checkpoint) the new
 * VM is `saved`: its saved.state is a hard link of the (never modified) memory state, and
 * identity.json beside it makes its first start give the guest a new identity (vmRunner.ts).
 * The agent's channel epoch is not copied, so the new VM's host end never takes the source's sessions.
 * A clone of a stopped state boots, and takes its own identity too (its disk has the source's files).
 *
 * Shared layers stay valid by refusal: a VM that linked clones sit on cannot be removed, and a
 * checkpoint under a linked clone cannot be deleted; each refusal names the clones and the way out.
 * Allowed states of the source: running, paused, saved, stopped.
 */
import { execFile } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { VmConfig } from '../common/config';
import { ErrorCode, SandboxError, asSandboxError } from '../common/errors';
import { writeJsonAtomic } from '../common/atomicWrite';
import { validateVmName } from '../common/names';
import { VM_FILES, vmsDir } from '../common/paths';
import { activeDisk } from '../common/activeDisk';
import { wrongStateMessage } from '../common/stateMessages';
import type { VmState } from '../common/status';
import { locateQemu } from '../qemu/locate';
import type { Checkpoints } from './checkpoints';
import { CHECKPOINT_FILES } from './checkpointStore';
import { live, resolve, type CheckpointIndex, type CheckpointNode } from './checkpointTree';
import type { Progress } from './vmManager';

export interface CloneParams {
  name: string;
  newName: string;
  /** A checkpoint of the source (name or id); default: its current state. */
  checkpoint?: string;
  full?: boolean;
}

export interface CloneResult {
  name: string;
  kind: 'linked' | 'full';
  state: 'saved' | 'stopped';
  /** The source's checkpoint the clone's disk sits on (linked clones). */
  checkpoint?: string;
  elapsedMs: number;
}

/** identity.json: what a restored clone becomes (read by the worker). */
export interface NewIdentity {
  hostname: string;
  machineId: string;
}

/** What the VM manager lends the clone operations. */
export interface CloneHost {
  queue<T>(name: string, fn: () => Promise<T>): Promise<T>;
  home(): string;
  names(): string[];
  config(name: string): VmConfig;
  state(name: string): VmState;
  /** Adds a VM whose folder is in place, and publishes it. */
  register(config: VmConfig): void;
  checkpoints: Checkpoints;
  log(message: string): void;
}

const ALLOWED: VmState[] = ['running', 'paused', 'saved', 'stopped'];

export class Clones {
  constructor(private readonly host: CloneHost) {
    host.checkpoints.guardDelete = (vm, index, node) => this.guardDelete(vm, index, node);
  }

  private dir(name: string): string {
    return path.join(vmsDir(this.host.home()), name);
  }

  clone(p: CloneParams, progress: Progress): Promise<CloneResult> {
    const src = validateVmName(p.name);
    const name = validateVmName(p.newName);
    this.host.config(src); // UnknownVm first
    this.requireFree(name);
    this.requireState(src);
    return this.host.queue(src, () => this.host.queue(name, () => this.run(src, name, p, progress)));
  }

  private requireFree(name: string): void {
    if (this.host.names().includes(name) || existsSync(this.dir(name))) {
      throw new SandboxError(ErrorCode.DuplicateName, `a VM named ${name} already exists; pick another name for the clone`);
    }
  }

  private requireState(src: string): VmState {
    const state = this.host.state(src);
    if (!ALLOWED.includes(state)) throw new SandboxError(ErrorCode.WrongState, wrongStateMessage(src, state, 'clone', ALLOWED));
    return state;
  }

  private async run(src: string, name: string, p: CloneParams, progress: Progress): Promise<CloneResult> {
    const t0 = Date.now();
    this.requireFree(name);
    const state = this.requireState(src);
    const source = this.host.config(src);
    const srcDir = this.dir(src);
    const full = p.full === true;
    if (state === 'saved' && existsSync(path.join(srcDir, VM_FILES.memoryFile))) throw neverStarted(src);
    const qemuImg = (await locateQemu()).img;
    let node: CheckpointNode | undefined;
    let temporary = false;
    if (p.checkpoint !== undefined) {
      node = resolve(await this.host.checkpoints.indexLocked(src), src, p.checkpoint);
    } else if (!full || state === 'running' || state === 'paused') {
      progress(1, 3, `checkpointing ${src}'s ${state} state`);
      const index = await this.host.checkpoints.indexLocked(src);
      const label = freeLabel(index, full ? `full clone ${name}` : `clone base for ${name}`);
      const made = await this.host.checkpoints.takeLocked(src, label);
      node = (await this.host.checkpoints.indexLocked(src)).nodes.find((n) => n.id === made.id)!;
      temporary = full;
    }
    const disk = node ? path.join(srcDir, node.layer) : activeDisk(srcDir);
    const memory = node ? (node.memory ? path.join(srcDir, VM_FILES.checkpoints, node.id, CHECKPOINT_FILES.memory) : undefined) : state === 'saved' ? path.join(srcDir, VM_FILES.savedState) : undefined;
    const staging = path.join(vmsDir(this.host.home()), `.${name}.cloning-${process.pid}-${Date.now()}`);
    await fs.mkdir(staging, { mode: 0o700 });
    try {
      if (full) {
        progress(2, 3, `copying the disk`);
        await convert(qemuImg, disk, path.join(staging, VM_FILES.disk), (pct) => progress(2, 3, `copying the disk: ${pct.toFixed(0)}%`));
      } else {
        progress(2, 3, 'creating the disk (linked to the source)');
        await img(qemuImg, ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', disk, path.join(staging, VM_FILES.disk), `${source.diskGiB}G`]);
      }
      if (memory) await instantState({ memory }, staging, name);
      // A stopped clone boots, but its disk has the source's machine id and hostname files: it takes its own too.
      else await writeIdentity(staging, name);
      const config: VmConfig = {
        ...source,
        id: randomUUID(),
        name,
        createdAt: new Date().toISOString(),
        ports: source.ports ? { ...source.ports, forwards: [] } : undefined,
        linkedTo: full ? undefined : { vm: src, vmId: source.id, checkpoint: node!.id },
        template: full ? undefined : source.template,
      };
      await writeJsonAtomic(path.join(staging, VM_FILES.config), config);
      await fs.rename(staging, this.dir(name)).catch((err: NodeJS.ErrnoException) => {
        throw err.code === 'ENOTEMPTY' || err.code === 'EEXIST' ? new SandboxError(ErrorCode.DuplicateName, `a VM named ${name} already exists`) : err;
      });
      this.host.register(config);
    } catch (err) {
      await fs.rm(staging, { recursive: true, force: true });
      if (temporary && node) await this.host.checkpoints.deleteLocked(src, node.id).catch(() => undefined);
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new SandboxError(ErrorCode.DiskFull, `cloning ${src} failed: the disk holding ${vmsDir(this.host.home())} is full; free some space and try again`);
      throw asSandboxError(err, `cloning ${src} as ${name} failed`);
    }
    if (temporary && node) await this.host.checkpoints.deleteLocked(src, node.id);
    progress(3, 3, 'done');
    const kind = full ? 'full' : 'linked';
    this.host.log(`cloned ${src} as ${name} (${kind}${node && !temporary ? `, on checkpoint ${node.id}` : ''}${memory ? ', with its memory state' : ''}) in ${Date.now() - t0} ms`);
    return { name, kind, state: memory ? 'saved' : 'stopped', checkpoint: temporary ? undefined : node?.id, elapsedMs: Date.now() - t0 };
  }

  /** The linked clones of `vm` (by id), as names. */
  clonesOf(vm: string): { name: string; checkpoint: string }[] {
    const id = this.host.config(vm).id;
    return this.host
      .names()
      .map((n) => ({ n, l: this.host.config(n).linkedTo }))
      .filter(({ l }) => l?.vmId === id)
      .map(({ n, l }) => ({ name: n, checkpoint: l!.checkpoint }));
  }

  /** Throws WrongState, naming the clones and the way out, when linked clones sit on `vm`. */
  requireNoClones(vm: string): void {
    const clones = this.clonesOf(vm).map((c) => c.name);
    if (clones.length === 0) return;
    throw new SandboxError(ErrorCode.WrongState, `cannot remove ${vm}: the linked clone${clones.length > 1 ? 's' : ''} ${clones.join(', ')} use${clones.length > 1 ? '' : 's'} its disk; remove ${clones.length > 1 ? 'them' : 'it'} first, or keep an independent copy with \`sandboxvm clone --full ${clones[0]} <new name>\``);
  }

  private guardDelete(vm: string, index: CheckpointIndex, node: CheckpointNode): void {
    const users = this.clonesOf(vm).filter((c) => ancestors(index, c.checkpoint).has(node.id)).map((c) => c.name);
    if (users.length === 0) return;
    throw new SandboxError(ErrorCode.WrongState, `cannot delete checkpoint ${JSON.stringify(node.name)} of ${vm}: the linked clone${users.length > 1 ? 's' : ''} ${users.join(', ')} sit${users.length > 1 ? '' : 's'} on its disk layer; remove ${users.length > 1 ? 'them' : 'it'} first (\`sandboxvm rm ${users[0]}\`)`);
  }
}

/** A VM made from a template and never started: its saved state is the template's devices, not a state to copy. */
export function neverStarted(vm: string): SandboxError {
  return new SandboxError(ErrorCode.WrongState, `${vm} has never been started (its saved state is its template's); start it once, or discard that state with \`sandboxvm stop ${vm}\`, then try again`);
}

/** `id` and every checkpoint its layer backs onto. */
function ancestors(index: CheckpointIndex, id: string): Set<string> {
  const out = new Set<string>();
  for (let n = index.nodes.find((x) => x.id === id); n && !out.has(n.id); n = n.parent ? index.nodes.find((x) => x.id === n!.parent) : undefined) out.add(n.id);
  return out;
}

/**
 * A VM made from a template (VmManager.create) starts saved: its saved.state links the template's
 * memory, and identity.json makes its first start give it its own identity.
 */
export async function instantState(template: { memory: string; ram?: string }, vmDir: string, name: string): Promise<void> {
  await linkOrCopy(template.memory, path.join(vmDir, VM_FILES.savedState));
  if (template.ram) await writeJsonAtomic(path.join(vmDir, VM_FILES.memoryFile), { path: template.ram, share: false });
  await writeIdentity(vmDir, name);
}

/** identity.json: the identity the VM's guest takes at its next start (vmRunner.ts takeNewIdentity). */
async function writeIdentity(vmDir: string, name: string): Promise<void> {
  const identity: NewIdentity = { hostname: name, machineId: randomBytes(16).toString('hex') };
  await writeJsonAtomic(path.join(vmDir, VM_FILES.identity), identity);
}

/** `base`, or `base (2)`, `(3)`...: the first free checkpoint name, at most 64 characters. */
function freeLabel(index: CheckpointIndex, base: string): string {
  const b = base.slice(0, 56);
  let label = b;
  for (let i = 2; live(index).some((n) => n.name === label); i++) label = `${b} (${i})`;
  return label;
}

/** `to` as a hard link of `from` (never modified: both only ever get replaced or removed), or a copy across file systems. */
async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await fs.link(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EXDEV' && (err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
    await fs.copyFile(from, to);
  }
}

function img(qemuImg: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(qemuImg, args, { timeout: 600_000 }, (err, _out, stderr) => {
      if (!err) return resolve();
      if (/No space left/i.test(stderr)) return reject(Object.assign(new Error(stderr.trim()), { code: 'ENOSPC' }));
      reject(new SandboxError(ErrorCode.Internal, `qemu-img ${args[0]} failed: ${stderr.trim() || err.message}`));
    }),
  );
}

/** `qemu-img convert -p`: the chain under `from` flattened into a standalone qcow2 `to`, progress in percent. */
function convert(qemuImg: string, from: string, to: string, onPercent: (pct: number) => void): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(qemuImg, ['convert', '-p', '-f', 'qcow2', '-O', 'qcow2', from, to], { timeout: 3_600_000, maxBuffer: 64 * 2 ** 20 }, (err, _out, stderr) => {
      if (!err) return resolve();
      if (/No space left/i.test(stderr)) return reject(Object.assign(new Error(stderr.trim()), { code: 'ENOSPC' }));
      reject(new SandboxError(ErrorCode.Internal, `qemu-img convert failed: ${stderr.trim() || err.message}`));
    });
    let last = -1;
    child.stdout?.on('data', (chunk: Buffer) => {
      const m = /\((\d+(?:\.\d+)?)\/100%\)\s*$/.exec(chunk.toString().trimEnd());
      const pct = m ? Number(m[1]) : NaN;
      if (pct >= last + 1) onPercent((last = pct));
    });
  });
}
