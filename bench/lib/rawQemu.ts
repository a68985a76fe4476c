/**
 * The peer of the runtime: QEMU started directly, with the same argv builder, kernel, initrd, base
 * image and flags as the worker uses, and the channel and QMP passed as inherited fds exactly like
 * the worker does (fd 3 and fd 4). Saves with stop + migrate to `exec:cat > FILE` and restores with
 * `-incoming "exec:cat FILE"`, as RECIPES.md measured.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import type { Socket } from 'node:net';
import { VM_FILES } from '../../runtime/common/paths';
import { buildQemuArgv, shellQuote, type Accelerator } from '../../runtime/qemu/argv';
import { QmpClient } from '../../runtime/qemu/qmp';
import type { AgentHello } from '../../runtime/protocol/messages';
import { RawChannel } from './channel';
import { isAlive, onCleanup, watchPid } from './cleanup';
import { delay } from './proc';
import type { VmConfig } from '../../runtime/common/config';
import type { QemuInstall } from '../../runtime/qemu/locate';

export interface RawQemuSpec {
  qemu: string;
  qemuImg: string;
  accel: Accelerator;
  cpus: number;
  memoryMiB: number;
  network: boolean;
  kernel: string;
  initrd: string;
  /** The base image; the VM runs on a qcow2 overlay of it. */
  baseDisk: string;
  diskGiB: number;
  /** Where the overlay, console log and saved state go (must exist). */
  dir: string;
  hostname: string;
}

/** The raw twin of a runtime VM: same QEMU, accelerator and shape (from its vm.json), own directory. */
export function specFromConfig(qemu: QemuInstall, accel: Accelerator, config: VmConfig, baseDisk: string, dir: string, hostname: string): RawQemuSpec {
  return {
    qemu: qemu.system,
    qemuImg: qemu.img,
    accel,
    cpus: config.cpus,
    memoryMiB: config.memoryMiB,
    network: config.network !== 'isolated',
    kernel: config.image.kernel,
    initrd: config.image.initrd,
    baseDisk,
    diskGiB: config.diskGiB,
    dir,
    hostname,
  };
}

/** SIGKILLs a QEMU this process spawned (if it still runs) and waits until it is gone. */
export async function killQemu(proc: ChildProcess | undefined, exited: Promise<unknown> | undefined): Promise<void> {
  if (!proc || !exited) return;
  if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
  await exited;
  for (let i = 0; i < 100 && proc.pid && isAlive(proc.pid, 'qemu-system'); i++) await delay(20);
}

/**
 * The peer's QEMU argv. Its files carry the names a VM directory uses (VM_FILES), so for the same
 * directory and hostname it is the worker's argv, character for character, except that the channel
 * and QMP are connected socketpairs here (`fdSockets`), listening sockets in the worker.
 */
export function rawArgv(spec: RawQemuSpec, restore: boolean, fdSockets: 'listening' | 'connected' = 'connected'): string[] {
  return buildQemuArgv({
    accel: spec.accel,
    cpus: spec.cpus,
    memoryMiB: spec.memoryMiB,
    kernel: spec.kernel,
    initrd: spec.initrd,
    disk: path.join(spec.dir, VM_FILES.disk),
    consoleLog: path.join(spec.dir, VM_FILES.consoleLog),
    hostname: spec.hostname,
    // User networking whatever the VM's policy: the peers forward ssh through it (hostfwd).
    network: spec.network ? 'host' : 'isolated',
    channelFd: 3,
    qmpFd: 4,
    fdSockets,
    incomingFile: restore ? path.join(spec.dir, VM_FILES.savedState) : undefined,
  });
}

interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export class RawQemu {
  readonly disk: string;
  readonly consoleLog: string;
  readonly stateFile: string;
  private proc?: ChildProcess;
  private exited?: Promise<Exit>;
  private stderrTail = '';
  qmp?: QmpClient;
  channel?: RawChannel;
  private readonly unregister: () => void;

  constructor(private readonly spec: RawQemuSpec) {
    this.disk = path.join(spec.dir, VM_FILES.disk);
    this.consoleLog = path.join(spec.dir, VM_FILES.consoleLog);
    this.stateFile = path.join(spec.dir, VM_FILES.savedState);
    this.unregister = onCleanup(`killing raw QEMU in ${spec.dir}`, () => this.kill());
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** The linked clone: `qemu-img create -f qcow2 -F qcow2 -b base overlay <size>`, as the runtime makes it. */
  createOverlay(): Promise<void> {
    const args = ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', this.spec.baseDisk, this.disk, `${this.spec.diskGiB}G`];
    return new Promise((resolve, reject) =>
      execFile(this.spec.qemuImg, args, (err, _out, stderr) => (err ? reject(new Error(`qemu-img ${args.join(' ')}: ${stderr || err.message}`)) : resolve())),
    );
  }

  argv(restore: boolean): string[] {
    return rawArgv(this.spec, restore);
  }

  /** Spawns QEMU (booting, or restoring from stateFile) with the channel on fd 3 and QMP on fd 4. */
  spawn(restore: boolean): void {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) throw new Error('raw QEMU is already running');
    const proc = spawn(this.spec.qemu, this.argv(restore), { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
    this.proc = proc;
    watchPid(proc.pid, 'qemu-system');
    this.stderrTail = '';
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => (this.stderrTail = (this.stderrTail + d).slice(-4000)));
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    proc.once('error', () => undefined);
    this.channel = new RawChannel(proc.stdio[3] as Socket);
    this.qmp = new QmpClient(proc.stdio[4] as Socket);
    this.qmp.ready.catch(() => undefined);
  }

  /** Rejects when QEMU exits, with its stderr. */
  private died(what: string): Promise<never> {
    return this.exited!.then(({ code, signal }) => {
      throw new Error(`raw QEMU exited during ${what} (${signal ?? `code ${code}`}): ${this.stderrTail.trim() || 'no stderr'}`);
    });
  }

  private deadline(ms: number, what: string): { promise: Promise<never>; cancel: () => void } {
    let timer: NodeJS.Timeout | undefined;
    const promise = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`raw QEMU: ${what} did not finish within ${ms} ms`)), ms)));
    promise.catch(() => undefined);
    return { promise, cancel: () => clearTimeout(timer) };
  }

  /** Greets the agent (from now on, every 250 ms) until it answers; for a boot. */
  async waitAgent(timeoutMs: number): Promise<AgentHello> {
    const d = this.deadline(timeoutMs, 'waiting for the agent');
    try {
      return await this.channel!.greet(Promise.race([this.died('boot'), d.promise]));
    } finally {
      d.cancel();
    }
  }

  /**
   * For a restore: greets the agent from now on, and meanwhile polls query-status until the
   * incoming state is loaded, sending `cont` when QEMU holds it paused (as the worker does).
   */
  async waitRestoredAgent(timeoutMs: number): Promise<AgentHello> {
    const d = this.deadline(timeoutMs, 'restore');
    const abort = Promise.race([this.died('restore'), d.promise]);
    try {
      const hello = this.channel!.greet(abort);
      hello.catch(() => undefined); // awaited below; this only keeps an early failure of the loop from leaving it unhandled
      await Promise.race([this.resumeAfterIncoming(), abort]);
      return await hello;
    } finally {
      d.cancel();
    }
  }

  private async resumeAfterIncoming(): Promise<void> {
    const qmp = this.qmp!;
    await qmp.ready;
    for (;;) {
      const s = await qmp.execute<{ status: string }>('query-status');
      if (s.status === 'running') return;
      if (s.status === 'paused' || s.status === 'postmigrate' || s.status === 'prelaunch') {
        await qmp.execute('cont');
        return;
      }
      if (s.status === 'internal-error' || s.status === 'shutdown') throw new Error(`raw QEMU restore failed: status ${s.status}`);
      await delay(20);
    }
  }

  /** stop, migrate to `exec:cat > stateFile`, poll query-migrate until completed, quit; resolves when QEMU has exited. */
  async save(timeoutMs = 60_000): Promise<void> {
    const qmp = this.qmp!;
    const d = this.deadline(timeoutMs, 'save');
    const work = async () => {
      await qmp.execute('stop');
      await qmp.execute('migrate', { uri: `exec:cat > ${shellQuote(this.stateFile)}` });
      for (;;) {
        const m = await qmp.execute<{ status?: string; 'error-desc'?: string }>('query-migrate');
        if (m.status === 'completed') break;
        if (m.status === 'failed' || m.status === 'cancelled') throw new Error(`raw QEMU save failed: ${m['error-desc'] ?? m.status}`);
        await delay(25);
      }
      await qmp.execute('quit').catch(() => undefined);
      const exit = await this.exited!;
      if (exit.code !== 0) throw new Error(`raw QEMU ended with ${exit.signal ?? `code ${exit.code}`} after quit: ${this.stderrTail.trim()}`);
    };
    try {
      await Promise.race([work(), d.promise]);
    } finally {
      d.cancel();
    }
  }

  /** Kills QEMU (SIGKILL) if it runs and waits for it to be gone. */
  kill(): Promise<void> {
    return killQemu(this.proc, this.exited);
  }

  /** Kills QEMU and forgets the cleanup step (the caller removes the directory). */
  async dispose(): Promise<void> {
    await this.kill();
    this.unregister();
  }
}

