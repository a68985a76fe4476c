/**
 * The service's model of every VM: configuration from disk, a worker handle for those running, and
 * the lifecycle operations. Operations on one VM go through one queue (never interleaved); every
 * change is published as a whole VmInfo snapshot.
 *
 * State is derived, never stored: a connected worker says what it is; without one, a saved.state
 * file means `saved` and anything else `stopped`. So a dead worker can never leave a stale
 * `running` behind.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { promises as fsp, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { DEFAULTS, LIMITS, UNDO_LIMITS, checkRange, migrateNetwork, parseNetworkPolicy, parseUndoLimits, parseVmConfig, type NetworkPolicy, type UndoLimits, type VmConfig } from '../common/config';
import { ErrorCode, SandboxError, asSandboxError, type WireError } from '../common/errors';
import { wrongStateMessage } from '../common/stateMessages';
import { writeJsonAtomic } from '../common/atomicWrite';
import { validateVmName } from '../common/names';
import { RUNNING_VM_FILES, VM_FILES, imageCacheDir, vmsDir } from '../common/paths';
import { activeDisk } from '../common/activeDisk';
import type { VmInfo, VmState, WorkerRecord, WorkerStatus } from '../common/status';
import { locateQemu } from '../qemu/locate';
import { SequencerByKey } from './sequencer';
import { isProcessOf, killIfProcessOf } from './processes';
import { WORKER_SCRIPT_NAME, WorkerHandle, readWorkerRecord } from './workerHandle';
import { checkDiskSize, virtualSize } from './diskSize';
import { DEFAULT_PORTS_CONFIG, type PortsConfig } from '../common/ports';
import { Checkpoints } from './checkpoints';
import { Transfers } from '../transfer/transfers';
import { diskUsage, forgetDiskUsage } from './diskUsage';
import { dropImageUses, registerImageUse } from '../image/imageGc';
import { Clones, instantState } from './clones';
import { Templates, templatesWanted } from './templates';
import { probeAccelerator } from '../accel/probe';

export interface CreateParams {
  name: string;
  cpus?: number;
  memoryMiB?: number;
  diskGiB?: number;
  /** A policy; a boolean (clients from before policies) means isolated (false) or the default (true). */
  network?: NetworkPolicy | boolean;
}

/** What `vm.set` changes; each field is optional, and only a stopped VM takes changes. */
export interface SetParams {
  name: string;
  network?: NetworkPolicy;
  /** Undo-point limits (any state; 0 clears the VM's own, so the client's or the defaults apply). */
  undoMaxCount?: number;
  undoMaxDiskMiB?: number;
}

export interface Progress {
  (step: number, total: number, message: string): void;
}

/** Provides the base image (built on first use). Injected so the service can be tested without builds. */
export type ImageProvider = (progress: Progress, signal?: AbortSignal) => Promise<VmConfig['image']>;

interface Entry {
  config: VmConfig;
  worker?: WorkerHandle;
  /** An operation under way that the worker can't report yet (starting before it exists). */
  transient?: VmState;
  lastError?: WireError;
  /** VmInfo.applying: a checkpoint being applied (checkpoints.ts sets it). */
  applying?: VmInfo['applying'];
  /** A worker being spawned (start, restore or takeover) until it reports ready or fails. */
  spawning?: Spawning;
}

interface Spawning {
  /** The worker's pid, once spawned: it leads a process group holding the QEMU it starts. */
  pid?: number;
  /** Set by `stop --force`: the spawn is killed (at once, or as soon as it has a pid). */
  turnedOff: boolean;
  /** Settles when the spawn has (its outcome does not matter to the waiter). */
  settled: Promise<void>;
}

export class VmManager {
  private readonly entries = new Map<string, Entry>();
  private readonly sequencer = new SequencerByKey<string>();
  private readonly emitter = new EventEmitter();
  /** Checkpoint operations (checkpoints.ts), run in this manager's per-VM queue. */
  readonly checkpoints = new Checkpoints({
    queue: (name, fn) => {
      this.entry(name);
      return this.sequencer.queue(name, fn);
    },
    dir: (name) => this.dir(name),
    config: (name) => this.entry(name).config,
    state: (name) => {
      this.entry(name);
      return this.stateOf(name);
    },
    worker: (name) => this.workerOf(name),
    turnOff: async (name) => {
      await this.halt(name, this.entry(name), true);
    },
    boot: async (name) => {
      await this.boot(name, this.entry(name), () => undefined);
    },
    pause: async (name) => {
      const w = this.entry(name).worker!;
      await w.call('worker.pause');
      w.status = await w.call<WorkerStatus>('worker.status');
    },
    publish: (name) => this.publish(name),
    setApplying: (name, applying) => {
      this.entry(name).applying = applying;
      this.publish(name);
    },
    snapshot: (name) => this.snapshot(name),
    log: (m) => this.log(m),
  });
  /** Export and import (runtime/transfer/transfers.ts), run in this manager's per-VM queue. */
  readonly transfers = new Transfers({
    home: () => this.home,
    vmsDir: () => vmsDir(this.home),
    imageCacheDir: () => imageCacheDir(),
    queue: (name, fn) => this.sequencer.queue(name, fn),
    dir: (name) => this.dir(name),
    config: (name) => this.entry(name).config,
    state: (name) => {
      this.entry(name);
      return this.stateOf(name);
    },
    exists: (name) => this.entries.has(name) || existsSync(this.dir(name)),
    recoverCheckpoints: async (name) => {
      if (existsSync(this.file(name, 'checkpointIndex'))) await this.checkpoints.recoverBeforeBoot(name);
    },
    checkpoint: (name, label) => this.checkpoints.create(name, label),
    deleteCheckpoint: async (name, id) => {
      await this.checkpoints.delete(name, id);
    },
    register: (name, config) => {
      this.entries.set(name, { config });
      this.publish(name);
    },
    snapshot: (name) => this.snapshot(name),
    log: (m) => this.log(m),
  });

  /** Linked and full clones (clones.ts), run in the source's queue. */
  readonly clones = new Clones({
    queue: (name, fn) => this.sequencer.queue(name, fn),
    home: () => this.home,
    names: () => [...this.entries.keys()],
    config: (name) => this.entry(name).config,
    state: (name) => {
      this.entry(name);
      return this.stateOf(name);
    },
    register: (config) => {
      this.entries.set(config.name, { config });
      this.publish(config.name);
    },
    checkpoints: this.checkpoints,
    log: (m) => this.log(m),
  });

  /** Templates for instant create (templates.ts), under the image cache. */
  readonly templates = new Templates(
    imageCacheDir(),
    async () => (await locateQemu()).img,
    async () => ({ accel: probeAccelerator().accel, qemuVersion: (await locateQemu()).version }),
    (m) => this.log(m),
  );

  constructor(private readonly home: string, private readonly images: ImageProvider, private readonly log: (m: string) => void) {}

  onDidChangeVm(listener: (info: VmInfo) => void): void {
    this.emitter.on('vm', listener);
  }

  onDidRemoveVm(listener: (name: string) => void): void {
    this.emitter.on('removed', listener);
  }

  private dir(name: string): string {
    return path.join(vmsDir(this.home), name);
  }

  private file(name: string, f: keyof typeof VM_FILES): string {
    return path.join(this.dir(name), VM_FILES[f]);
  }

  /** Loads every VM from disk and adopts the workers a previous service left running. */
  async load(): Promise<void> {
    this.templates.sweep();
    let names: string[] = [];
    try {
      names = readdirSync(vmsDir(this.home)).filter((n) => !n.startsWith('.'));
    } catch {
      return;
    }
    await Promise.all(
      names.map(async (name) => {
        try {
          validateVmName(name);
          const config = parseVmConfig(readFileSync(this.file(name, 'config'), 'utf8'), name);
          const entry: Entry = { config };
          this.entries.set(name, entry);
          await this.adopt(name, entry);
          if (existsSync(this.file(name, 'checkpointIndex'))) void this.checkpoints.recoverAtLoad(name);
        } catch (err) {
          this.log(`skipping ${this.dir(name)}: ${(err as Error).message}`);
        }
      }),
    );
  }

  private async adopt(name: string, entry: Entry): Promise<void> {
    const handle = await WorkerHandle.adopt(this.dir(name), entry.config.id, (s) => this.onWorkerStatus(name, s));
    if (handle) {
      this.log(`adopted ${name}: worker ${handle.record.workerPid}, QEMU ${handle.record.qemuPid}, ${handle.status.state}`);
      this.attach(name, entry, handle);
      return;
    }
    await this.recoverDeadWorker(name, entry);
  }

  /**
   * A worker.json whose worker is gone. When its QEMU still runs (and is this VM's, with its
   * sockets), a new worker takes it over and the VM runs on, as a Hyper-V VM outlives a crashed
   * VMWP. Otherwise, or when the takeover fails, QEMU is stopped and the VM reads stopped with why.
   * Queued with the VM's other operations.
   */
  private recoverDeadWorker(name: string, entry: Entry): Promise<void> {
    return this.sequencer.queue(name, async () => {
      if (entry.worker && !entry.worker.isClosed) return; // already recovered
      const record = readWorkerRecord(this.dir(name));
      if (!existsSync(this.file(name, 'worker'))) return; // the worker exited cleanly
      const sockets = existsSync(this.file(name, 'agentSocket')) && existsSync(this.file(name, 'qmpSocket'));
      if (record && sockets && isProcessOf(record.qemuPid, [this.file(name, 'consoleLog')])) {
        entry.transient = 'starting';
        this.publish(name);
        try {
          const handle = await this.spawnWorker(name, entry, false, undefined, record.qemuPid);
          entry.transient = undefined;
          this.log(`${name}: worker ${record.workerPid} died; worker ${handle.record.workerPid} took over QEMU ${record.qemuPid}`);
          this.attach(name, entry, handle);
          return;
        } catch (err) {
          entry.transient = undefined;
          this.log(`${name}: taking over QEMU ${record.qemuPid} failed: ${(err as Error).message}`);
        }
      }
      this.reapDeadWorker(name, entry, record);
    });
  }

  /** Stops the QEMU of a worker that is gone, if it is still ours, and says what happened. */
  private reapDeadWorker(name: string, entry: Entry, record: WorkerRecord | undefined): void {
    if (record && killIfProcessOf(record.qemuPid, [this.file(name, 'consoleLog')])) {
      this.log(`${name}: killed QEMU ${record.qemuPid}, orphaned by its worker`);
    }
    if (record?.passtPid && killIfProcessOf(record.passtPid, ['passt', this.file(name, 'passtLog')])) this.log(`${name}: killed passt ${record.passtPid}, orphaned by its worker`);
    entry.lastError = {
      code: ErrorCode.WorkerLost,
      message: `the VM's worker exited unexpectedly and the VM was stopped; see ${this.file(name, 'workerLog')}`,
    };
    this.log(`${name}: ${entry.lastError.message}`);
    for (const f of RUNNING_VM_FILES) rmSync(this.file(name, f), { force: true });
  }

  private attach(name: string, entry: Entry, handle: WorkerHandle): void {
    entry.worker = handle;
    handle.onClose(() => {
      if (entry.worker !== handle) return;
      entry.worker = undefined;
      if (handle.exitError) entry.lastError = { code: ErrorCode.WorkerLost, message: handle.exitError };
      // A worker that exits cleanly removes its record before its socket closes: a record left
      // behind means it died.
      this.publish(name);
      void this.recoverDeadWorker(name, entry).then(() => this.publish(name));
    });
    this.publish(name);
  }

  private onWorkerStatus(name: string, _status: WorkerStatus): void {
    this.publish(name);
  }

  private publish(name: string): void {
    forgetDiskUsage(this.dir(name));
    const info = this.entries.has(name) ? this.snapshot(name) : undefined;
    if (info) this.emitter.emit('vm', info);
  }

  private entry(name: unknown): Entry {
    const valid = validateVmName(name);
    const e = this.entries.get(valid);
    if (!e) throw new SandboxError(ErrorCode.UnknownVm, `no VM named ${valid}; see \`sandboxvm list\` for the VMs there are`);
    return e;
  }

  stateOf(name: string): VmState {
    const e = this.entries.get(name)!;
    if (e.transient) return e.transient;
    if (e.worker && !e.worker.isClosed) return e.worker.status.state;
    return existsSync(this.file(name, 'savedState')) ? 'saved' : 'stopped';
  }

  snapshot(name: string): VmInfo {
    const e = this.entry(name);
    const state = this.stateOf(name);
    const c = e.config;
    const runtime = e.worker && !e.worker.isClosed ? e.worker.status : undefined;
    return {
      name,
      state,
      config: { id: c.id, cpus: c.cpus, memoryMiB: c.memoryMiB, diskGiB: c.diskGiB, network: c.network, createdAt: c.createdAt, ports: c.ports, imageHash: c.image.hash, undoPoints: c.undoPoints, linkedTo: c.linkedTo, template: c.template },
      runtime,
      paths: {
        dir: this.dir(name),
        disk: activeDisk(this.dir(name)),
        consoleLog: this.file(name, 'consoleLog'),
        workerLog: this.file(name, 'workerLog'),
        savedState: state === 'saved' ? this.file(name, 'savedState') : undefined,
      },
      lastError: e.lastError,
      disk: diskUsage(this.dir(name), c.image.disk),
      applying: e.applying,
    };
  }

  /** The live worker of `name`, if it has one (the metrics hub watches it). Throws UnknownVm. */
  workerOf(name: string): WorkerHandle | undefined {
    const w = this.entry(name).worker;
    return w && !w.isClosed ? w : undefined;
  }

  /** Every VM, with fresh worker status as `info` gets it (all asked at once). Never waits on a guest. */
  async list(): Promise<VmInfo[]> {
    await Promise.all([...this.entries.values()].map((e) => this.refresh(e)));
    return [...this.entries.keys()].sort().map((n) => this.snapshot(n));
  }

  /**
   * Fresh status from the worker (its latest heartbeat time), falling back to the cached snapshot
   * when the worker does not answer within INFO_WAIT_MS. Never waits on the guest.
   */
  async info(name: string): Promise<VmInfo> {
    await this.refresh(this.entry(name));
    return this.snapshot(name);
  }

  /** Asks a running worker for its status (snapshots are pushed on changes, not on each heartbeat). */
  private async refresh(e: Entry): Promise<void> {
    const worker = e.worker;
    if (!worker || worker.isClosed) return;
    const fresh = await orTimeout(worker.call<WorkerStatus>('worker.status'), INFO_WAIT_MS).catch(() => undefined);
    if (fresh && e.worker === worker) worker.status = fresh;
  }

  /**
   * Creates a VM: a linked clone (qcow2 overlay) of the base image plus its vm.json, assembled in a
   * hidden directory and renamed into place, so a failure leaves nothing behind.
   */
  create(p: CreateParams, progress: Progress): Promise<VmInfo> {
    const name = validateVmName(p.name);
    return this.sequencer.queue(name, async () => {
      if (this.entries.has(name) || existsSync(this.dir(name))) {
        throw new SandboxError(ErrorCode.DuplicateName, `a VM named ${name} already exists; pick another name or remove it with \`sandboxvm rm ${name}\``);
      }
      const cpus = checkRange(p.cpus ?? DEFAULTS.cpus, LIMITS.cpus, 'cpus');
      const memoryMiB = checkRange(p.memoryMiB ?? DEFAULTS.memoryMiB, LIMITS.memoryMiB, 'memory', ' MiB');
      const diskGiB = checkRange(p.diskGiB ?? DEFAULTS.diskGiB, LIMITS.diskGiB, 'disk', ' GiB');
      const network = p.network === undefined || typeof p.network === 'boolean' ? migrateNetwork(p.network) : parseNetworkPolicy(p.network);
      const qemu = await locateQemu();
      const image = await this.images(progress);
      checkDiskSize(diskGiB, await virtualSize(qemu.img, image.disk));
      await registerImageUse(image.disk, this.dir(name));
      await fsp.mkdir(vmsDir(this.home), { recursive: true, mode: 0o700 });
      const staging = path.join(vmsDir(this.home), `.${name}.creating-${process.pid}-${Date.now()}`);
      await fsp.mkdir(staging, { mode: 0o700 });
      const spec = { cpus, memoryMiB, diskGiB, network };
      const template = templatesWanted(spec) ? await this.templates.ready(image, spec) : undefined;
      try {
        progress(1, 1, template ? 'creating the disk (linked clone of the template)' : 'creating the disk (linked clone of the base image)');
        await run(qemu.img, ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', template?.disk ?? image.disk, path.join(staging, VM_FILES.disk), `${diskGiB}G`]);
        if (template) await instantState(template, staging, name);
        const config: VmConfig = { id: randomUUID(), name, cpus, memoryMiB, diskGiB, image, network, createdAt: new Date().toISOString(), template: template?.dir };
        await writeJsonAtomic(path.join(staging, VM_FILES.config), config);
        try {
          await fsp.rename(staging, this.dir(name));
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOTEMPTY' || (err as NodeJS.ErrnoException).code === 'EEXIST') {
            throw new SandboxError(ErrorCode.DuplicateName, `a VM named ${name} already exists`);
          }
          throw err;
        }
        this.entries.set(name, { config });
      } catch (err) {
        await fsp.rm(staging, { recursive: true, force: true });
        if ((err as NodeJS.ErrnoException).code === 'ENOSPC') {
          throw new SandboxError(ErrorCode.DiskFull, `creating ${name} failed: the disk holding ${vmsDir(this.home)} is full; free some space and try again`, { cause: err });
        }
        throw asSandboxError(err, `creating ${name} failed`);
      }
      this.log(`created ${name}${template ? ` from template ${template.dir} (instant: its start restores the template's state)` : ''}`);
      if (!template && templatesWanted(spec)) void this.templates.ensureInBackground(image, spec);
      this.publish(name);
      return this.snapshot(name);
    });
  }

  /**
   * Changes a stopped VM's configuration (vm.json, written atomically); it takes effect at the next
   * start. Refused while the VM runs, is paused, or is saved (its saved state holds the devices it
   * was started with); nothing changes then. Setting the value it has already is not an error.
   */
  set(p: SetParams): Promise<VmInfo> {
    const e = this.entry(p.name);
    const name = e.config.name;
    const network = p.network === undefined ? undefined : parseNetworkPolicy(p.network);
    const undoPoints = undoLimitsAfter(e.config.undoPoints, p);
    return this.sequencer.queue(name, async () => {
      let state = network === undefined ? 'stopped' : this.stateOf(name);
      if (state === 'saved' && e.config.template && existsSync(this.file(name, 'identity'))) {
        // Never started: its saved state is the template's, not the user's; it boots instead.
        await this.halt(name, e, false);
        state = this.stateOf(name);
      }
      if (state === 'saved') {
        throw new SandboxError(ErrorCode.WrongState, `cannot change ${name}'s network policy while it is saved: the saved state has its network device in it; start it and stop it (\`sandboxvm start ${name}\`, then \`sandboxvm stop ${name}\`), or discard the saved state with \`sandboxvm stop ${name}\`, then set the policy`);
      }
      if (state !== 'stopped') {
        throw new SandboxError(ErrorCode.WrongState, `cannot change ${name}'s network policy while it is ${state}: stop it first (\`sandboxvm stop ${name}\`); the policy takes effect at its next start`);
      }
      const config: VmConfig = { ...e.config, ...(network !== undefined ? { network } : {}), undoPoints };
      await writeJsonAtomic(this.file(name, 'config'), config);
      e.config = config;
      this.log(`${name}: network policy ${config.network}${undoPoints ? `, undo points ${JSON.stringify(undoPoints)}` : ''}`);
      this.publish(name);
      return this.snapshot(name);
    });
  }

  /** The base image new VMs clone, built first if missing (idempotent). */
  ensureImage(progress: Progress): Promise<VmConfig['image']> {
    return this.sequencer.queue('\0image', () => this.images(progress));
  }

  /**
   * The template new VMs of the default configuration start from (templates.ts): found, or built
   * now (a boot and a save, ~10 s under TCG). Resolves undefined when building failed (logged).
   */
  async ensureTemplate(progress: Progress): Promise<{ dir: string; bootMs?: number } | undefined> {
    const image = await this.ensureImage(progress);
    const t = await this.templates.ensureInBackground(image, { cpus: DEFAULTS.cpus, memoryMiB: DEFAULTS.memoryMiB, diskGiB: DEFAULTS.diskGiB, network: DEFAULTS.network });
    return t && { dir: t.dir, bootMs: t.record.bootMs };
  }

  /** Boots a stopped VM or restores a saved one; resolves when its agent answers. */
  start(name: string, progress: Progress, bootTimeoutMs?: number): Promise<VmInfo> {
    const e = this.entry(name);
    return this.sequencer.queue(name, () => this.boot(name, e, progress, bootTimeoutMs));
  }

  /** start's body, within the VM's queue. */
  private async boot(name: string, e: Entry, progress: Progress, bootTimeoutMs?: number): Promise<VmInfo> {
    this.requireState(name, ['stopped', 'saved'], 'start');
    if (existsSync(this.file(name, 'checkpointIndex'))) await this.checkpoints.recoverBeforeBoot(name);
    const restore = this.stateOf(name) === 'saved';
    e.lastError = undefined;
    e.transient = 'starting';
    this.publish(name);
    let spawning: Spawning | undefined;
    try {
      progress(1, 2, restore ? 'restoring the saved state' : 'booting');
      const spawn = this.spawnWorker(name, e, restore, bootTimeoutMs);
      spawning = e.spawning;
      const handle = await spawn;
      e.transient = undefined;
      this.attach(name, e, handle);
      progress(2, 2, `agent ready after ${handle.status.boot?.readyMs ?? '?'} ms`);
    } catch (err) {
      e.transient = undefined;
      if (spawning?.turnedOff) {
        this.publish(name);
        throw new SandboxError(ErrorCode.Cancelled, `${name} was turned off (\`sandboxvm stop --force ${name}\`) while it was ${restore ? 'restoring' : 'booting'}`);
      }
      e.lastError = asSandboxError(err).toWire();
      this.publish(name);
      throw err;
    }
    return this.snapshot(name);
  }

  /**
   * Spawns the VM's worker (booting, restoring, or taking over `adoptQemuPid`), tracked in
   * `e.spawning` so that `stop --force` can kill it before it is ready.
   */
  private spawnWorker(name: string, e: Entry, restore: boolean, bootTimeoutMs?: number, adoptQemuPid?: number): Promise<WorkerHandle> {
    const spawning: Spawning = { turnedOff: false, settled: Promise.resolve() };
    e.spawning = spawning;
    const spawn = WorkerHandle.spawn(this.dir(name), restore, (s) => this.onWorkerStatus(name, s), bootTimeoutMs, adoptQemuPid, (pid) => {
      spawning.pid = pid;
      if (spawning.turnedOff) killGroup(pid);
    });
    spawning.settled = spawn.then(
      () => undefined,
      () => undefined,
    );
    void spawning.settled.then(() => {
      if (e.spawning === spawning) e.spawning = undefined;
    });
    return spawn;
  }

  /**
   * Stops a running or paused VM (graceful unless `force`). On a saved VM, discards the saved
   * state. Resolves once QEMU and the worker are gone.
   *
   * `force` does not queue behind the VM's other operations: it turns the VM off at once, whatever
   * is under way. A start (or restore) in progress then fails with "turned off".
   */
  stop(name: string, force: boolean, stepMs?: number): Promise<VmInfo> {
    const e = this.entry(name);
    if (force && (e.spawning || (e.worker && !e.worker.isClosed))) return this.turnOff(name, e);
    return this.sequencer.queue(name, () => this.halt(name, e, force, stepMs));
  }

  /** stop's body, within the VM's queue. */
  private async halt(name: string, e: Entry, force: boolean, stepMs?: number): Promise<VmInfo> {
    const state = this.requireState(name, ['running', 'paused', 'saved'], 'stop');
    if (state === 'saved') {
      await fsp.rm(this.file(name, 'savedState'), { force: true });
      await fsp.rm(this.file(name, 'savedEpoch'), { force: true });
      await fsp.rm(this.file(name, 'memoryFile'), { force: true });
      this.log(`${name}: discarded the saved state`);
    } else {
      const worker = e.worker!;
      const closed = worker.waitClosed();
      await worker.call('worker.stop', { force, stepMs });
      await closed;
    }
    this.publish(name);
    return this.snapshot(name);
  }

  /**
   * stop --force, outside the queue: a worker being spawned is killed with its process group
   * (QEMU is in it); a running worker is told to kill QEMU, and if it does not answer within
   * TURN_OFF_ASK_MS its process group and its QEMU are killed.
   */
  private async turnOff(name: string, e: Entry): Promise<VmInfo> {
    const spawning = e.spawning;
    if (spawning) {
      this.log(`${name}: stop --force while its worker is starting; killing it`);
      spawning.turnedOff = true;
      if (spawning.pid !== undefined) killGroup(spawning.pid);
      await spawning.settled;
      // A worker killed before it was ready leaves its sockets behind (and its record, if it had
      // just written it): nothing of it runs any more.
      if (!e.worker || e.worker.isClosed) this.killRecordedQemu(name);
    }
    const worker = e.worker;
    if (worker && !worker.isClosed) {
      const closed = worker.waitClosed();
      const asked = await orTimeout(
        worker.call('worker.stop', { force: true }).then(
          () => true,
          () => false,
        ),
        TURN_OFF_ASK_MS,
      );
      if (!asked) {
        this.log(`${name}: stop --force: the worker did not answer within ${TURN_OFF_ASK_MS} ms; killing it and QEMU`);
        if (isProcessOf(worker.record.workerPid, [WORKER_SCRIPT_NAME, this.dir(name)])) killGroup(worker.record.workerPid);
        this.killRecordedQemu(name);
      }
      await closed;
    }
    this.publish(name);
    return this.snapshot(name);
  }

  /** Kills the QEMU that worker.json names (if it still is this VM's) and removes the worker's files. */
  private killRecordedQemu(name: string): void {
    const record = readWorkerRecord(this.dir(name));
    if (record && killIfProcessOf(record.qemuPid, [this.file(name, 'consoleLog')])) this.log(`${name}: killed QEMU ${record.qemuPid}`);
    if (record?.passtPid && killIfProcessOf(record.passtPid, ['passt', this.file(name, 'passtLog')])) this.log(`${name}: killed passt ${record.passtPid}`);
    for (const f of RUNNING_VM_FILES) rmSync(this.file(name, f), { force: true });
  }

  pause(name: string): Promise<VmInfo> {
    return this.workerOp(name, ['running'], 'pause', 'worker.pause');
  }

  resume(name: string): Promise<VmInfo> {
    return this.workerOp(name, ['paused'], 'resume', 'worker.resume');
  }

  /** Saves the running state to disk and ends QEMU; `start` restores it. */
  save(name: string): Promise<VmInfo> {
    const e = this.entry(name);
    return this.sequencer.queue(name, async () => {
      this.requireState(name, ['running', 'paused'], 'save');
      const closed = e.worker!.waitClosed();
      await e.worker!.call('worker.save');
      await closed;
      return this.snapshot(name);
    });
  }

  /**
   * A graceful stop, then a start: one operation in the VM's queue, so nothing queued meanwhile
   * lands between the two. Allowed when running or paused.
   */
  restart(name: string, progress: Progress): Promise<VmInfo> {
    const e = this.entry(name);
    return this.sequencer.queue(name, async () => {
      this.requireState(name, ['running', 'paused'], 'restart');
      progress(1, 3, 'stopping');
      await this.halt(name, e, false);
      return this.boot(name, e, (step, total, message) => progress(step + 1, total + 1, message));
    });
  }

  /** Removes a VM and every file of it. Refuses a running VM unless `force`. */
  remove(name: string, force: boolean): Promise<void> {
    const e = this.entry(name);
    return this.sequencer.queue(name, async () => {
      const state = this.stateOf(name);
      if ((state === 'running' || state === 'paused') && !force) {
        throw new SandboxError(ErrorCode.WrongState, `${name} is ${state}; stop it first or use \`sandboxvm rm --force ${name}\``);
      }
      this.clones.requireNoClones(name);
      if (e.worker && !e.worker.isClosed) {
        const closed = e.worker.waitClosed();
        await e.worker.call('worker.stop', { force: true }).catch(() => undefined);
        await closed;
      }
      const trash = path.join(vmsDir(this.home), `.${name}.removing-${Date.now()}`);
      await fsp.rename(this.dir(name), trash);
      await dropImageUses(path.dirname(path.dirname(e.config.image.disk)), this.dir(name));
      this.entries.delete(name);
      await fsp.rm(trash, { recursive: true, force: true });
      this.log(`removed ${name}`);
      this.emitter.emit('removed', name);
    });
  }

  /** Where a client connects to open sessions on a running VM. */
  attachInfo(name: string): { socket: string } {
    const e = this.entry(name);
    this.requireState(name, ['running'], 'attach to');
    return { socket: e.worker!.record.socket };
  }

  private workerOp(name: string, allowed: VmState[], verb: string, method: string): Promise<VmInfo> {
    const e = this.entry(name);
    return this.sequencer.queue(name, async () => {
      this.requireState(name, allowed, verb);
      await e.worker!.call(method);
      e.worker!.status = await e.worker!.call<WorkerStatus>('worker.status');
      this.publish(name);
      return this.snapshot(name);
    });
  }

  private requireState(name: string, allowed: VmState[], verb: string): VmState {
    const state = this.stateOf(name);
    if (!allowed.includes(state)) {
      throw new SandboxError(ErrorCode.WrongState, wrongStateMessage(name, state, verb, allowed));
    }
    return state;
  }

  /**
   * Changes a VM's port forwarding, in its queue: `change` gets the current configuration, the live
   * worker (while running) and the state, applies what it must to the worker, and returns the new
   * configuration, which is then written to vm.json (atomically). When `change` throws nothing is written.
   */
  changePorts(name: string, change: (ports: PortsConfig, worker: WorkerHandle | undefined, state: VmState) => Promise<PortsConfig>): Promise<VmInfo> {
    const e = this.entry(name);
    return this.sequencer.queue(name, async () => {
      const state = this.stateOf(name);
      const worker = state === 'running' || state === 'paused' ? e.worker : undefined;
      const ports = await change(e.config.ports ?? { ...DEFAULT_PORTS_CONFIG, forwards: [] }, worker && !worker.isClosed ? worker : undefined, state);
      const config: VmConfig = { ...e.config, ports };
      await writeJsonAtomic(this.file(name, 'config'), config);
      e.config = config;
      if (worker && !worker.isClosed) worker.status = await worker.call<WorkerStatus>('worker.status').catch(() => worker.status);
      this.publish(name);
      return this.snapshot(name);
    });
  }

  /** Runs `fn` in the VM's queue, after the operations on it before (compact.ts). Throws UnknownVm. */
  queued<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.entry(name);
    return this.sequencer.queue(name, fn);
  }

  /** The VM's configuration (vm.json as loaded). Throws UnknownVm. */
  configOf(name: string): VmConfig {
    return this.entry(name).config;
  }

  /** Publishes the VM's snapshot again (after a change the manager did not make itself, e.g. its disk usage). */
  publishVm(name: string): void {
    this.publish(name);
  }

  dispose(): void {
    this.templates.dispose();
    for (const e of this.entries.values()) e.worker?.dispose();
  }
}

/** The VM's undo limits after vm.set: given ones replace, 0 clears one, the rest stay. Throws BadArgument. */
function undoLimitsAfter(now: UndoLimits | undefined, p: SetParams): UndoLimits | undefined {
  const next: UndoLimits = { ...now };
  for (const [key, value] of [['maxCount', p.undoMaxCount], ['maxDiskMiB', p.undoMaxDiskMiB]] as const) {
    if (value === 0) delete next[key];
    else if (value !== undefined) next[key] = value;
  }
  const parsed = parseUndoLimits(next, UNDO_LIMITS);
  return parsed && Object.keys(parsed).length > 0 ? parsed : undefined;
}

/** How long stop --force waits for a worker to say it killed QEMU before killing both itself. */
const TURN_OFF_ASK_MS = 2000;

/** SIGKILL to a process group (a detached worker and the QEMU it started); gone already is fine. */
function killGroup(pid: number): void {
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // already gone
  }
}

/** How long `info` waits for a worker's fresh status before serving the last snapshot. */
const INFO_WAIT_MS = 1000;

/** `p`, or undefined once `ms` have passed. */
function orTimeout<T>(p: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { timeout: 60_000 }, (err, _out, stderr) => {
      if (!err) return resolve();
      if (/No space left/i.test(stderr)) return reject(Object.assign(new Error(stderr.trim()), { code: 'ENOSPC' }));
      reject(new Error(`${path.basename(file)} ${args[0]} failed: ${stderr.trim() || err.message}`));
    }),
  );
}
