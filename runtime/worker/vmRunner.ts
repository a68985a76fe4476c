/**
 * One running VM: its QEMU process, QMP client and agent link, and the lifecycle operations on
 * them. Lives in the worker process; the service talks to it through the worker's RPC socket.
 *
 * Ends when QEMU ends. `onDidExit` says how: stopped (asked, or the guest powered off), saved
 * (state written to saved.state), or failed (QEMU died on its own).
 *
 * QEMU serves the agent channel and QMP on listening sockets in the VM's directory (qemuSockets.ts),
 * so a worker that crashed is replaced by one that `adopt`s the running QEMU: the guest runs on.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { promises as fs, openSync, closeSync, fsyncSync } from 'node:fs';
import * as path from 'node:path';
import type { Socket } from 'node:net';
import type { VmConfig } from '../common/config';
import { ErrorCode, SandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { activeDisk } from '../common/activeDisk';
import type { VmState, WorkerStatus } from '../common/status';
import type { AccelChoice } from '../accel/probe';
import { buildQemuArgv, macForVm, shellQuote } from '../qemu/argv';
import { randomBytes } from 'node:crypto';
import type { QemuInstall } from '../qemu/locate';
import { QmpClient } from '../qemu/qmp';
import { AgentLink } from './agentLink';
import { writeFileAtomic } from '../common/atomicWrite';
import { connectToQemu, listenForQemu, type ListeningSocket } from './qemuSockets';
import { guestCid, type TransportChoice } from '../accel/transport';
import { AGENT_VSOCK_PORT, vsockConnect } from '../native/vsock';
import { SerialConsole, listenSerialForQemu } from './serialConsole';
import { locatePasst } from '../qemu/passt';
import { killPasst, spawnPasst, type SpawnedPasst } from './passtProcess';
import { waitForExit } from '../service/processes';

export interface ExitReport {
  state: 'stopped' | 'saved';
  /** Set when QEMU ended without being asked to (crash, boot failure). */
  error?: string;
}

const STOP_STEP_MS = 15_000;

/** The relay binary in the guest image (runtime/image/guest/agent-loop); its --identity mode does the identity step. */
const GUEST_RELAY = '/opt/sandboxvm/agent/bin/sandboxvm-relay';

/** How QEMU ended, as far as the worker can tell. */
interface QemuExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** How long a live checkpoint lets the guest run while its memory is copied before stopping it for the rest. */
const LIVE_COPY_MS = 5000;

/** How long a save waits for sessions' clients to acknowledge the output they were given. */
const SAVE_QUIESCE_MS = 2000;

export class VmRunner {
  private readonly emitter = new EventEmitter();
  /** QEMU as our child (we started it), or only its pid (adopted from a worker that died). */
  private qemu?: ChildProcess;
  private adoptedPid?: number;
  private qmp?: QmpClient;
  agent?: AgentLink;
  private state: VmState = 'starting';
  private intent: 'none' | 'stop' | 'save' = 'none';
  private exitPromise?: Promise<ExitReport>;
  private boot?: WorkerStatus['boot'];
  private readonly startedAt = new Date().toISOString();
  private vsockActive = false;
  private serial?: SerialConsole;
  /** passt's pid (network policy `internet`): spawned here, or the dead worker's (adopt). */
  private passtPid?: number;
  private checkpointing?: Promise<unknown>;
  /** Guest RAM in a file (memory.json), for this start. */
  private memoryFile?: { path: string; share: boolean };

  constructor(
    private readonly dir: string,
    private readonly config: VmConfig,
    private readonly qemuInstall: QemuInstall,
    private readonly accel: AccelChoice,
    private readonly log: (m: string) => void,
    private readonly transport: TransportChoice = { transport: 'virtio-serial', reason: 'default' },
  ) {}

  private file(name: keyof typeof VM_FILES): string {
    return path.join(this.dir, VM_FILES[name]);
  }

  get qemuPid(): number | undefined {
    return this.qemu?.pid ?? this.adoptedPid;
  }

  /** passt's pid while it is part of this VM (network policy `internet`). */
  get passt(): number | undefined {
    return this.passtPid;
  }

  private killQemu(): void {
    try {
      if (this.qemu) this.qemu.kill('SIGKILL');
      else if (this.adoptedPid) process.kill(this.adoptedPid, 'SIGKILL');
    } catch {
      // already gone
    }
  }

  /** Connects the QMP client and the agent link (greeting with `epoch` when given) to QEMU's sockets. */
  private async connect(epoch?: string): Promise<void> {
    const [channel, qmpSocket] = await Promise.all([connectToQemu(this.file('agentSocket')), connectToQemu(this.file('qmpSocket'))]);
    this.qmp = new QmpClient(qmpSocket, this.log);
    this.agent = new AgentLink(channel, this.log, epoch);
    this.agent.vmName = this.config.name;
    this.agent.onDidChange(() => this.emitter.emit('status'));
  }

  private removeSockets(): void {
    for (const f of ['agentSocket', 'qmpSocket', 'qemuSerialSocket'] as const) void fs.rm(this.file(f), { force: true });
  }

  status(): WorkerStatus {
    return {
      state: this.state,
      accel: this.accel.accel,
      accelReason: this.accel.reason,
      channel: this.agent && this.transport.transport === 'vsock' && this.vsockActive ? 'vsock' : 'virtio-serial',
      qemuVersion: this.qemuInstall.version,
      workerPid: process.pid,
      qemuPid: this.qemuPid,
      passtPid: this.passtPid,
      agent: this.agent?.status ?? { connected: false },
      startedAt: this.startedAt,
      boot: this.boot,
    };
  }

  onDidChangeStatus(listener: () => void): void {
    this.emitter.on('status', listener);
  }

  private setState(state: VmState): void {
    if (this.state === state) return;
    this.state = state;
    this.log(`state: ${state}`);
    this.emitter.emit('status');
  }

  /**
   * Spawns QEMU (booting, or restoring when saved.state exists and `restore` is set) and resolves
   * when the guest agent answers. Rejects with BootFailed (QEMU is killed) when it does not.
   */
  async start(restore: boolean, bootTimeoutMs: number): Promise<void> {
    const t0 = Date.now();
    const incomingFile = restore ? this.file('savedState') : undefined;
    const vsockCid = this.transport.transport === 'vsock' ? guestCid(this.config.id) : undefined;
    const passtBinary = this.config.network === 'internet' ? locatePasst(process.env, this.config.name) : undefined;
    this.memoryFile = await readMemoryFile(this.file('memoryFile'));
    const defer = restore && this.memoryFile !== undefined && !this.memoryFile.share;
    if (defer && !(await fs.stat(this.memoryFile!.path).then(() => true, () => false))) {
      throw new SandboxError(ErrorCode.BootFailed, `the template ${path.dirname(this.memoryFile!.path)} this VM's saved state needs is gone; discard the state with \`sandboxvm stop ${this.config.name}\` and start it again (it then boots)`);
    }
    const argv = buildQemuArgv({
      accel: this.accel.accel,
      cpus: this.config.cpus,
      memoryMiB: this.config.memoryMiB,
      kernel: this.config.image.kernel,
      initrd: this.config.image.initrd,
      disk: activeDisk(this.dir),
      consoleLog: this.file('consoleLog'),
      hostname: this.config.name,
      network: this.config.network,
      mac: macForVm(this.config.id),
      passtFd: passtBinary ? 6 : undefined,
      legacySocketNetdev: olderThan(this.qemuInstall.version, 7, 2),
      channelFd: 3,
      qmpFd: 4,
      serialFd: 5,
      incomingFile,
      incomingDefer: defer,
      memoryFile: this.memoryFile,
      vsockCid,
    });
    this.log(`spawning ${this.qemuInstall.system} ${argv.join(' ')}`);
    const listening: ListeningSocket[] = [];
    try {
      listening.push(await listenForQemu(this.file('agentSocket')), await listenForQemu(this.file('qmpSocket')), await listenSerialForQemu(this.dir));
    } catch (err) {
      for (const l of listening) l.discard();
      throw new SandboxError(ErrorCode.Internal, `cannot make QEMU's sockets in ${this.dir}: ${(err as Error).message}`, { cause: err });
    }
    const logFd = openSync(this.file('workerLog'), 'a');
    let passt: SpawnedPasst | undefined;
    let qemu: ChildProcess;
    try {
      // passt and QEMU in one tick: the worker's copy of QEMU's end must never be read (passtProcess.ts).
      if (passtBinary) passt = spawnPasst(passtBinary, this.dir, logFd);
      const netSlot = passt ? [passt.qemuEnd] : [];
      qemu = spawn(this.qemuInstall.system, argv, { stdio: ['ignore', logFd, logFd, listening[0].fd, listening[1].fd, listening[2].fd, ...netSlot] });
    } catch (err) {
      for (const l of listening) l.discard();
      if (passt) killPasst(passt.pid, this.dir);
      const what = passtBinary && !passt ? passtBinary : this.qemuInstall.system;
      throw new SandboxError(ErrorCode.BootFailed, `cannot start ${what}: ${(err as Error).message}`, { cause: err });
    } finally {
      passt?.handedOver();
      closeSync(logFd);
    }
    if (passt) {
      this.passtPid = passt.pid;
      this.log(`passt ${passt.pid} serves the guest's network (policy internet; log ${this.file('passtLog')})`);
      void passt.exited.then(({ code, signal }) => {
        if (this.passtPid === passt!.pid) this.passtPid = undefined;
        if (this.intent === 'none' && (this.state === 'running' || this.state === 'paused') && qemu.exitCode === null) this.log(`passt exited (${signal ?? `code ${code}`}) while the VM runs: the guest has no network until it is started again; see ${this.file('passtLog')}`);
      });
    }
    this.qemu = qemu;
    const exited = new Promise<QemuExit>((resolve) => qemu.once('exit', (code, signal) => resolve({ code, signal })));
    qemu.once('error', (err) => this.log(`QEMU spawn error: ${err.message}`));
    this.exitPromise = exited.then((r) => this.onQemuExit(r.code, r.signal));
    await Promise.all(listening.map((l) => l.handOver()));
    // Before QMP: QEMU accepts the serial line before it can run the `cont` that starts the guest.
    await this.openSerial();
    // A restored guest still runs the sessions of the epoch it was saved in: greet with it, so the
    // agent keeps them for their clients to attach again.
    const connected = (restore ? readSavedEpoch(this.file('savedEpoch')) : Promise.resolve(undefined)).then((epoch) => this.connect(epoch));
    const qemuFailed = exited.then(({ code, signal }) => {
      throw new SandboxError(ErrorCode.BootFailed, `QEMU exited during ${restore ? 'restore' : 'boot'} (${signal ?? `code ${code}`}); see ${this.file('workerLog')} and ${this.file('consoleLog')}`);
    });
    const passtFailed = passt
      ? passt.exited.then(({ code, signal }) => {
          throw new SandboxError(ErrorCode.BootFailed, `passt, the guest's network, exited during ${restore ? 'restore' : 'boot'} (${signal ?? `code ${code}`}); see ${this.file('passtLog')} and ${this.file('workerLog')}`);
        })
      : new Promise<never>(() => undefined);
    const bootFailed = Promise.race([qemuFailed, passtFailed]);
    bootFailed.catch(() => undefined);
    const phases: Record<string, number> = {};
    let newIdentity = false;
    try {
      await Promise.race([connected, bootFailed]);
      await Promise.race([this.bringUp(restore, bootTimeoutMs, phases, t0, defer ? incomingFile : undefined), bootFailed]);
      // After a restore of another VM's state; after a boot only for a template (which warms the path for its VMs).
      newIdentity = await Promise.race([this.takeNewIdentity(), bootFailed]);
      if (newIdentity) phases.identity = Date.now() - t0;
    } catch (err) {
      this.intent = 'stop';
      this.killQemu();
      await this.exitPromise;
      if (err instanceof SandboxError && err.code === ErrorCode.Timeout) {
        throw new SandboxError(ErrorCode.BootFailed, `${err.message}; see ${this.file('consoleLog')}`);
      }
      throw err;
    }
    if (vsockCid !== undefined) await this.switchToVsock(vsockCid);
    // Restored from a template's RAM: from now on the VM's memory is its own (a save writes all of it).
    if (defer) await fs.rm(this.file('memoryFile'), { force: true });
    this.boot = { kind: restore ? 'restore' : 'boot', readyMs: Date.now() - t0, phases, newIdentity: newIdentity || undefined };
    this.log(`agent ready ${this.boot.readyMs} ms after spawn (${this.boot.kind}${newIdentity ? ', new identity' : ''}; ${Object.entries(phases).map(([k, v]) => `${k} ${v} ms`).join(', ')})`);
    this.setState('running');
  }

  /**
   * Takes over a QEMU whose worker died: connects to its sockets, reads its run state and greets
   * the agent with the dead worker's epoch, so the agent keeps that worker's sessions for their
   * clients to attach again (AgentLink orphans). Rejects when QEMU does not answer; the caller
   * then stops it.
   */
  async adopt(qemuPid: number, timeoutMs: number, epoch?: string, passtPid?: number): Promise<void> {
    const t0 = Date.now();
    this.adoptedPid = qemuPid;
    this.passtPid = passtPid;
    await this.openSerial();
    await this.connect(epoch);
    const qmpClosed = new Promise<void>((resolve) => this.qmp!.onClose(() => resolve()));
    this.exitPromise = qmpClosed.then(() => waitGone(qemuPid)).then(() => this.onQemuExit(null, null));
    await this.qmp!.ready;
    let { status } = await this.qmp!.execute<{ status: string }>('query-status');
    if (status === 'finish-migrate' || (await this.migrationActive())) {
      // A live checkpoint whose worker died: cancelling it lets QEMU run the guest on (the service drops the half-written state).
      this.log(`taking over: a checkpoint's migration was under way (QEMU ${status}); cancelling it`);
      await this.qmp!.execute('migrate_cancel').catch(() => undefined);
      await this.waitMigration('cancelled').catch(() => undefined);
      await this.qmp!.execute('migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: false }] }).catch(() => undefined);
      ({ status } = await this.qmp!.execute<{ status: string }>('query-status'));
    }
    // postmigrate: a checkpoint's memory write finished under a worker that died; held as paused (resume continues it).
    if (status !== 'running' && status !== 'paused' && status !== 'postmigrate') throw new SandboxError(ErrorCode.WorkerLost, `the orphaned QEMU is ${status}; cannot take it over`);
    if (status === 'paused' || status === 'postmigrate') {
      this.agent!.watchPaused = true;
      this.boot = { kind: 'adopt', readyMs: Date.now() - t0 };
      this.setState('paused');
      return;
    }
    await this.agent!.waitConnected(timeoutMs);
    this.boot = { kind: 'adopt', readyMs: Date.now() - t0 };
    this.log(`took over QEMU ${qemuPid}: agent ready ${Date.now() - t0} ms later`);
    this.setState('running');
  }

  /**
   * Where the host has vhost-vsock, moves the agent link from virtio-serial to vsock (same
   * protocol). Any failure keeps virtio-serial, which always works, and is logged.
   */
  private async switchToVsock(cid: number): Promise<void> {
    try {
      const socket = await vsockConnect(cid, AGENT_VSOCK_PORT);
      const link = new AgentLink(socket, this.log);
      link.vmName = this.config.name;
      await link.waitConnected(5000);
      const old = this.agent!;
      link.onDidChange(() => this.emitter.emit('status'));
      this.agent = link;
      this.vsockActive = true;
      old.dispose();
      this.log(`agent channel: vsock (CID ${cid})`);
    } catch (err) {
      this.log(`agent channel: staying on virtio-serial; vsock failed: ${(err as Error).message}`);
    }
  }

  private async bringUp(restore: boolean, timeoutMs: number, phases: Record<string, number> = {}, t0 = Date.now(), deferred?: string): Promise<void> {
    await this.qmp!.ready;
    phases.qmp = Date.now() - t0;
    if (deferred) {
      // The template's saved state holds the devices only; its RAM is the file QEMU mapped.
      await this.qmp!.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await this.qmp!.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(deferred)}` });
    }
    if (restore) await this.waitRestored(timeoutMs);
    else await this.qmp!.execute('cont');
    // The capability would go into this VM's own saves, whose RAM is not shared: off again.
    if (deferred) await this.qmp!.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: false }] });
    if (restore) {
      phases.loaded = Date.now() - t0;
      this.agent!.nudge();
    }
    await this.agent!.waitConnected(timeoutMs);
    phases.agent = Date.now() - t0;
  }

  /**
   * The identity step as an exec of the guest's relay binary (`--identity`, the seed on stdin): the
   * relay, not Node, forks it, which under TCG is much cheaper right after a restore. False when it
   * did not exit 0 (an image without it: the `identity` call does the same through Node).
   */
  private identityByRelay(wanted: { hostname: string; machineId: string }, mac: string | undefined, seed: Buffer): Promise<boolean> {
    return new Promise((resolve) => {
      let session: ReturnType<AgentLink['openSession']> | undefined;
      const timer = setTimeout(() => {
        session?.close();
        resolve(false);
      }, 10_000);
      const done = (ok: boolean) => {
        clearTimeout(timer);
        resolve(ok);
      };
      try {
        session = this.agent!.openSession(
          { kind: 'exec', argv: [GUEST_RELAY, '--identity', wanted.hostname, wanted.machineId, ...(mac ? [mac] : [])] },
          { onStarted: () => undefined, onData: () => undefined, onEof: () => undefined, onExit: (code) => done(code === 0) },
        );
      } catch {
        done(false);
        return;
      }
      session.write(seed).then(
        () => session!.eof(),
        () => done(false),
      );
    });
  }

  /**
   * After restoring a saved state that came from another VM, or booting a disk that did
   * (identity.json: a clone, a VM from a template, a template being built), the guest takes this VM's identity: hostname, machine id, MAC, a reseeded RNG
   * (guest-agent/src/identity.ts); the new channel epoch and the clock came with the hello.
   * Returns whether it did. A guest that fails it runs on with the old identity, logged, and
   * identity.json stays for the next restore to try again.
   */
  private async takeNewIdentity(): Promise<boolean> {
    let wanted: { hostname: string; machineId: string };
    try {
      wanted = JSON.parse(await fs.readFile(this.file('identity'), 'utf8'));
    } catch {
      return false;
    }
    const mac = this.config.network === 'isolated' ? undefined : macForVm(this.config.id);
    const seed = randomBytes(64);
    if (await this.identityByRelay(wanted, mac, seed)) {
      await fs.rm(this.file('identity'), { force: true });
      this.log(`new identity: hostname ${wanted.hostname}, machine id ${wanted.machineId}`);
      return true;
    }
    try {
      const got = (await this.agent!.call('identity', { hostname: wanted.hostname, machineId: wanted.machineId, mac: this.config.network === 'isolated' ? undefined : macForVm(this.config.id), seed: randomBytes(64).toString('hex') }, 10_000)) as { reseeded: boolean };
      await fs.rm(this.file('identity'), { force: true });
      this.log(`new identity: hostname ${wanted.hostname}, machine id ${wanted.machineId}${got.reseeded ? '' : ' (the RNG was mixed, not reseeded)'}`);
      return true;
    } catch (err) {
      this.log(`the guest did not take its new identity (${(err as Error).message}); it keeps the one it was restored with until its next restore`);
      return false;
    }
  }

  /** After -incoming: waits until the migration stream is loaded, then makes sure the vCPUs run. */
  private async waitRestored(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.qmp!.execute<{ status: string }>('query-status');
      if (s.status === 'running') return;
      if (s.status === 'paused' || s.status === 'postmigrate' || s.status === 'prelaunch') {
        await this.qmp!.execute('cont');
        return;
      }
      if (s.status === 'internal-error' || s.status === 'shutdown') throw new SandboxError(ErrorCode.BootFailed, `restore failed: QEMU status ${s.status}`);
      if (Date.now() > deadline) throw new SandboxError(ErrorCode.Timeout, `restore did not finish within ${timeoutMs} ms`);
      // QEMU 7.2 has no event for the end of an incoming migration; poll while it loads (~0.3 s).
      await delay(20);
    }
  }

  async pause(): Promise<void> {
    this.requireState(['running'], 'pause');
    await this.qmp!.execute('stop');
    this.agent!.watchPaused = true;
    this.setState('paused');
  }

  async resume(): Promise<void> {
    this.requireState(['paused'], 'resume');
    await this.qmp!.execute('cont');
    this.agent!.resetHeartbeat();
    this.agent!.watchPaused = false;
    this.agent!.syncTime();
    this.setState('running');
  }

  /**
   * Writes the running state to saved.state and ends QEMU. The file appears only when complete
   * (written as a temporary, fsynced, renamed); on failure the VM is resumed as it was.
   */
  async save(): Promise<void> {
    this.requireState(['running', 'paused'], 'save');
    const wasPaused = this.state === 'paused';
    this.setState('saving');
    const tmp = this.file('savedState') + '.partial';
    // Sessions' clients hold exactly what they acknowledged, so attaching after the restore misses
    // nothing and doubles nothing (a paused guest cannot take acknowledgements: skipped).
    const quiesced = !wasPaused && this.agent?.connected === true;
    try {
      if (quiesced) await this.agent!.quiesce(SAVE_QUIESCE_MS);
      await this.qmp!.execute('stop');
      await this.leavePostmigrate();
      // RAM in a shared file (a template) is the file itself: only the devices are written.
      if (this.memoryFile?.share) await this.qmp!.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
      await this.qmp!.execute('migrate', { uri: `exec:cat > ${shellQuote(tmp)}` });
      for (;;) {
        const m = await this.qmp!.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
        if (m.status === 'completed') break;
        if (m.status === 'failed' || m.status === 'cancelled') throw new SandboxError(ErrorCode.Internal, `saving the state failed: ${m['error-desc'] ?? m.status}`);
        await delay(25);
      }
      const fd = openSync(tmp, 'r+');
      fsyncSync(fd);
      closeSync(fd);
      if (this.agent?.connected) await writeFileAtomic(this.file('savedEpoch'), this.agent.currentEpoch);
      await fs.rename(tmp, this.file('savedState'));
    } catch (err) {
      await fs.rm(tmp, { force: true });
      if (!wasPaused) await this.qmp!.execute('cont').catch(() => undefined);
      if (quiesced) this.agent?.thaw();
      this.setState(wasPaused ? 'paused' : 'running');
      throw err;
    }
    this.intent = 'save';
    await this.qmp!.execute('quit').catch(() => undefined);
    await this.exitPromise;
  }

  /**
   * A running checkpoint (service/checkpointStore.ts has the design): with the vCPUs stopped, QEMU
   * moves onto `top` (an empty overlay on the disk it writes now, made by the service) with
   * blockdev-snapshot-sync, mode existing, and the memory state is migrated to `memory` (written
   * as .partial, fsynced, renamed). Then the VM goes on as it was (running, or paused). A failure
   * before the switch changes nothing; after it, the error is thrown once the VM runs again (the
   * service then keeps the checkpoint with the disk only).
   */
  checkpoint(p: { top: string; memory: string; epochFile: string }): Promise<{ pausedMs: number; epoch?: string }> {
    const op = this.takeCheckpoint(p);
    this.checkpointing = op.catch(() => undefined);
    return op;
  }

  /** Resolves when no checkpoint is being taken (a new service waits for this before it recovers the index). */
  async idle(): Promise<void> {
    await this.checkpointing;
  }

  /** The file QEMU writes the disk to now (query-block). */
  async activeDisk(): Promise<string | undefined> {
    const blocks = await this.qmp!.execute<{ device: string; inserted?: { file: string } }[]>('query-block');
    return blocks.find((b) => b.device === 'root')?.inserted?.file;
  }

  private async takeCheckpoint(p: { top: string; memory: string; epochFile: string }): Promise<{ pausedMs: number; epoch?: string }> {
    this.requireState(['running', 'paused'], 'checkpoint');
    const wasPaused = this.state === 'paused';
    const partial = p.memory + '.partial';
    if (!wasPaused) {
      const live = await this.liveCheckpoint(p.top, partial).catch((err: Error) => {
        this.log(`checkpoint: the live way failed (${err.message}); pausing for the whole write instead`);
        return undefined;
      });
      if (live) return this.finishCheckpoint(p, partial, live.pausedMs, live.failure);
    }
    const t0 = Date.now();
    if (wasPaused) await this.leavePostmigrate();
    else await this.qmp!.execute('stop');
    let failure: unknown;
    try {
      await this.qmp!.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': p.top, format: 'qcow2', mode: 'existing' });
    } catch (err) {
      if (!wasPaused) await this.qmp!.execute('cont').catch(() => undefined);
      throw err;
    }
    try {
      await this.migrateTo(partial);
    } catch (err) {
      failure = err;
      await fs.rm(partial, { force: true });
    }
    // After a migration QEMU has let go of its images; `cont` takes them back (a paused VM's later `resume` does).
    if (!wasPaused) {
      await this.qmp!.execute('cont');
      this.agent?.resetHeartbeat();
      this.agent?.syncTime();
    }
    return this.finishCheckpoint(p, partial, Date.now() - t0, failure);
  }

  /**
   * A running checkpoint with the guest running while its memory is copied: QEMU's pre-copy
   * migration with `pause-before-switchover`, so QEMU stops the vCPUs for the last pass and waits;
   * then the disk moves (blockdev-snapshot-sync) while they are stopped, the rest of the memory
   * and the devices are written, and the guest goes on. Disk and memory are of the same instant
   * (the stop), and the guest is paused only for the last pass. `pausedMs` is from QEMU's STOP and
   * RESUME events. Rejects, with the VM running and nothing moved, when QEMU cannot do it (the
   * caller then pauses for the whole write); a failure after the disk moved is returned as
   * `failure` (the VM runs on).
   */
  private async liveCheckpoint(top: string, partial: string): Promise<{ pausedMs: number; failure?: unknown }> {
    const qmp = this.qmp!;
    const stamp = (e: { timestamp?: { seconds: number; microseconds: number } }) => (e.timestamp ? e.timestamp.seconds * 1000 + e.timestamp.microseconds / 1000 : Date.now());
    let stoppedAt: number | undefined;
    let resumedAt: number | undefined;
    const off = qmp.onEvent((e) => {
      if (e.event === 'STOP') stoppedAt = stamp(e);
      if (e.event === 'RESUME') resumedAt = stamp(e);
    });
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: true }] });
    let moved = false;
    try {
      // The default limit (32 MiB/s) is for a network; this is a local file.
      await qmp.execute('migrate-set-parameters', { 'max-bandwidth': 4 * 2 ** 30, 'downtime-limit': 50 });
      await qmp.execute('migrate', { uri: `exec:umask 077 && cat > ${shellQuote(partial)}` });
      // A guest that dirties memory faster than it is written never lets the copy converge: after
      // LIVE_COPY_MS it is stopped, and the rest is written while it waits (as without the live way).
      const converge = setTimeout(() => void qmp.execute('stop').catch(() => undefined), LIVE_COPY_MS);
      try {
        await this.waitMigration('pre-switchover');
      } finally {
        clearTimeout(converge);
      }
      const t0 = Date.now();
      try {
        await qmp.execute('blockdev-snapshot-sync', { device: 'root', 'snapshot-file': top, format: 'qcow2', mode: 'existing' });
        moved = true;
      } catch (err) {
        await qmp.execute('migrate_cancel').catch(() => undefined);
        await this.waitMigration('cancelled').catch(() => undefined);
        throw err;
      }
      let failure: unknown;
      try {
        await qmp.execute('migrate-continue', { state: 'pre-switchover' });
        await this.waitMigration('completed');
      } catch (err) {
        failure = err;
        await fs.rm(partial, { force: true });
      }
      await qmp.execute('cont');
      this.agent?.resetHeartbeat();
      this.agent?.syncTime();
      const pausedMs = stoppedAt !== undefined && resumedAt !== undefined ? Math.round(resumedAt - stoppedAt) : Date.now() - t0;
      return { pausedMs, failure };
    } catch (err) {
      if (moved) throw err;
      await fs.rm(partial, { force: true });
      const { status } = await qmp.execute<{ status: string }>('query-status');
      if (status !== 'running') await qmp.execute('cont').catch(() => undefined);
      throw err;
    } finally {
      off();
      await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'pause-before-switchover', state: false }] }).catch(() => undefined);
    }
  }

  private async migrationActive(): Promise<boolean> {
    const m = await this.qmp!.execute<{ status?: string }>('query-migrate').catch(() => ({ status: undefined }));
    return m.status === 'active' || m.status === 'pre-switchover' || m.status === 'device' || m.status === 'setup';
  }

  /** Polls query-migrate until `status` (failed or cancelled otherwise reject, unless that is what is awaited). */
  private async waitMigration(status: string): Promise<void> {
    for (;;) {
      const m = await this.qmp!.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === status) return;
      if (m.status === 'failed' || m.status === 'cancelled') throw new SandboxError(ErrorCode.Internal, `writing the memory state failed: ${m['error-desc'] ?? m.status}`);
      await delay(5);
    }
  }

  /** The end of a running checkpoint, once the VM goes on: the memory state made durable and named, the epoch beside it. */
  private async finishCheckpoint(p: { memory: string; epochFile: string }, partial: string, pausedMs: number, failure: unknown): Promise<{ pausedMs: number; epoch?: string }> {
    if (failure) throw failure;
    const fd = openSync(partial, 'r+');
    fsyncSync(fd);
    closeSync(fd);
    const epoch = this.agent?.connected ? this.agent.currentEpoch : undefined;
    if (epoch) await writeFileAtomic(p.epochFile, epoch);
    await fs.rename(partial, p.memory);
    this.log(`checkpoint: guest paused ${pausedMs} ms`);
    return { pausedMs, epoch };
  }

  /**
   * A paused VM checkpointed stays in QEMU's `postmigrate` state, from which QEMU refuses another
   * migration (a save, a checkpoint): `cont` then `stop` first (the guest runs for a moment, and
   * the state written is from after it).
   */
  private async leavePostmigrate(): Promise<void> {
    const { status } = await this.qmp!.execute<{ status: string }>('query-status');
    if (status !== 'postmigrate') return;
    await this.qmp!.execute('cont');
    await this.qmp!.execute('stop');
  }

  /** Writes the (stopped) VM's state to `file` with QEMU's migration stream; ENOSPC and the like throw. */
  private async migrateTo(file: string): Promise<void> {
    await this.leavePostmigrate();
    // Guest memory: readable by the owner only.
    await this.qmp!.execute('migrate', { uri: `exec:umask 077 && cat > ${shellQuote(file)}` });
    for (;;) {
      const m = await this.qmp!.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
      if (m.status === 'completed') return;
      if (m.status === 'failed' || m.status === 'cancelled') {
        const full = await fs.statfs(path.dirname(file)).then((s) => s.bavail === 0, () => false);
        if (full) throw new SandboxError(ErrorCode.DiskFull, `writing the memory state failed: the disk holding ${path.dirname(file)} is full; free some space`);
        throw new SandboxError(ErrorCode.Internal, `writing the memory state failed: ${m['error-desc'] ?? m.status}`);
      }
      await delay(10);
    }
  }

  /**
   * Stops the VM. Graceful: the agent's shutdown, then ACPI powerdown, then kill, each after
   * STOP_STEP_MS and each fallback logged. Forced: kill at once, in any state while QEMU runs (a
   * graceful stop or a save under way included). Resolves when QEMU has exited.
   */
  async stop(force: boolean, stepMs = STOP_STEP_MS): Promise<void> {
    if (force && this.exitPromise && this.state !== 'stopped' && this.state !== 'saved') {
      this.log(`stop --force while ${this.state}: killing QEMU`);
      this.intent = 'stop';
      this.setState('stopping');
      this.killQemu();
      await this.exitPromise;
      return;
    }
    this.requireState(['running', 'paused', 'starting'], 'stop');
    this.intent = 'stop';
    const exited = this.exitPromise!;
    if (this.state === 'paused') await this.qmp!.execute('cont').catch(() => undefined);
    this.setState('stopping');
    if (this.agent?.connected) {
      this.log('stop: asking the guest agent to shut down');
      this.agent.shutdown(false);
      if (await within(exited, stepMs)) return;
      this.log(`stop: the guest did not power off within ${stepMs} ms after the agent's shutdown; trying ACPI powerdown`);
    } else {
      this.log('stop: the guest agent is not connected; trying ACPI powerdown');
    }
    await this.qmp!.execute('system_powerdown').catch((err) => this.log(`stop: system_powerdown failed: ${err.message}`));
    if (await within(exited, stepMs)) return;
    this.log(`stop: the guest ignored ACPI powerdown for ${stepMs} ms; killing QEMU`);
    this.killQemu();
    await exited;
  }

  /** Resolves with how QEMU ended. */
  waitExit(): Promise<ExitReport> {
    return this.exitPromise ?? Promise.resolve({ state: 'stopped' });
  }

  /** The serial console (serial.sock); without it the VM runs on and console.log is still written. */
  private async openSerial(): Promise<void> {
    const serial = new SerialConsole(this.dir, this.log);
    try {
      await serial.open();
      this.serial = serial;
    } catch (err) {
      serial.dispose();
      this.log(`serial console unavailable: ${(err as Error).message}`);
    }
  }

  private async onQemuExit(code: number | null, signal: NodeJS.Signals | null): Promise<ExitReport> {
    this.serial?.dispose();
    // passt ends by itself once QEMU's end closes; one that lingers is ended here, never left behind.
    if (this.passtPid !== undefined) {
      const pid = this.passtPid;
      this.passtPid = undefined;
      if (!(await waitForExit(pid, 2000)) && killPasst(pid, this.dir)) this.log(`passt ${pid} outlived QEMU; killed it`);
    }
    this.agent?.dispose(this.intent === 'save' ? 'the VM was saved; the session is kept in the guest and can be attached again within a minute of the restore' : 'the VM stopped');
    this.removeSockets();
    this.log(`QEMU exited (${signal ?? `code ${code}`}), intent ${this.intent}`);
    if (this.intent === 'save') {
      this.setState('saved');
      return { state: 'saved' };
    }
    this.setState('stopped');
    if (this.intent === 'stop' || code === 0) return { state: 'stopped' };
    return { state: 'stopped', error: `QEMU exited unexpectedly (${signal ?? `code ${code}`}); see ${this.file('workerLog')}` };
  }

  private requireState(allowed: VmState[], action: string): void {
    if (!allowed.includes(this.state)) {
      throw new SandboxError(ErrorCode.WrongState, `cannot ${action} ${this.config.name}: it is ${this.state} (allowed when ${allowed.join(' or ')})`);
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** memory.json ({path, share}), or undefined when there is none; a malformed one is refused. */
async function readMemoryFile(file: string): Promise<{ path: string; share: boolean } | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch {
    return undefined;
  }
  const m = JSON.parse(text) as { path?: unknown; share?: unknown };
  if (typeof m.path !== 'string' || !path.isAbsolute(m.path) || typeof m.share !== 'boolean') throw new SandboxError(ErrorCode.BootFailed, `${file} is malformed; remove it to boot without it`);
  return { path: m.path, share: m.share };
}

/** The epoch recorded beside a saved state, or undefined when there is none (an older save). */
async function readSavedEpoch(file: string): Promise<string | undefined> {
  try {
    const epoch = (await fs.readFile(file, 'utf8')).trim();
    return /^[0-9a-f-]{36}$/.test(epoch) ? epoch : undefined;
  } catch {
    return undefined;
  }
}

/** True when `major.minor` of `version` is below the given one. */
function olderThan(version: string, major: number, minor: number): boolean {
  const [a, b] = version.split('.').map(Number);
  return a < major || (a === major && b < minor);
}

/** Resolves once `pid` is gone (an adopted QEMU is not our child: no exit event). */
async function waitGone(pid: number): Promise<void> {
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch {
      return;
    }
    await delay(50);
  }
}

/** True when `p` settles within `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((r) => (timer = setTimeout(() => r(false), ms)));
  const done = p.then(() => true as const);
  const result = await Promise.race([done, timeout]);
  clearTimeout(timer);
  return result;
}
