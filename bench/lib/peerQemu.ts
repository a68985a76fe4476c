/**
 * The VM the ssh and qemu-guest-agent peers talk to: QEMU started by hand with the worker's own
 * command line (rawArgv: same kernel, initrd, flags, memory and cpus) plus what those peers need
 * and the runtime does not give a VM:
 *   - a user-net port forward 127.0.0.1:<sshPort> -> guest :22 on the existing -netdev;
 *   - a second virtio-serial device with the port org.qemu.guest_agent.0, its host end an
 *     inherited socketpair on fd 5 (as the agent's channel is on fd 3 and QMP on fd 4; RECIPES.md:
 *     pass fds, not socket paths);
 *   - on the same device, the port org.sandboxvm.raw on fd 6, for the raw-channel probe (rawPort.ts).
 * The disk is a qcow2 overlay on the runtime VM's own disk, so the peer boots exactly what the
 * runtime VM has (packages, keys), and the runtime VM's disk is never written by the peer.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import * as net from 'node:net';
import * as path from 'node:path';
import { VM_FILES } from '../../runtime/common/paths';
import { QmpClient } from '../../runtime/qemu/qmp';
import type { AgentHello } from '../../runtime/protocol/messages';
import { RawChannel } from './channel';
import { onCleanup, watchPid } from './cleanup';
import { QgaClient } from './qga';
import { RAW_PORT_NAME, RawPort } from './rawPort';
import { killQemu, rawArgv, type RawQemuSpec } from './rawQemu';

export const QGA_PORT_NAME = 'org.qemu.guest_agent.0';

export interface PeerQemuSpec extends RawQemuSpec {
  /** Host port forwarded to the guest's sshd. */
  sshPort: number;
  /** More QEMU arguments, appended (bench/lib/virtiofs.ts). */
  extraArgs?: string[];
}

/** rawArgv (the worker's argv for this directory) with the port forward and the QGA port added. */
export function peerArgv(spec: PeerQemuSpec): string[] {
  const argv = rawArgv(spec, false);
  const i = argv.indexOf('user,id=net0');
  if (i < 0 || argv[i - 1] !== '-netdev') throw new Error(`the VM has no user networking to forward ssh through: ${argv.join(' ')}`);
  argv[i] = `user,id=net0,hostfwd=tcp:127.0.0.1:${spec.sshPort}-:22`;
  argv.push(
    '-chardev', 'socket,id=qga,fd=5,server=off',
    '-device', 'virtio-serial-device,id=qgaserial',
    '-device', `virtserialport,bus=qgaserial.0,chardev=qga,name=${QGA_PORT_NAME}`,
    '-chardev', 'socket,id=raw,fd=6,server=off',
    '-device', `virtserialport,bus=qgaserial.0,chardev=raw,name=${RAW_PORT_NAME}`,
    ...(spec.extraArgs ?? []),
  );
  return argv;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export class PeerQemu {
  readonly disk: string;
  private proc?: ChildProcess;
  private exited?: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private stderrTail = '';
  channel?: RawChannel;
  qmp?: QmpClient;
  qga?: QgaClient;
  raw?: RawPort;
  private readonly unregister: () => void;

  constructor(private readonly spec: PeerQemuSpec) {
    this.disk = path.join(spec.dir, VM_FILES.disk);
    this.unregister = onCleanup(`killing the peer QEMU in ${spec.dir}`, () => this.kill());
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  argv(): string[] {
    return peerArgv(this.spec);
  }

  /** `qemu-img create -f qcow2 -F qcow2 -b <baseDisk> <dir>/disk.qcow2`, as the runtime makes a VM's disk. */
  createOverlay(): Promise<void> {
    const args = ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', this.spec.baseDisk, this.disk, `${this.spec.diskGiB}G`];
    return new Promise((resolve, reject) =>
      execFile(this.spec.qemuImg, args, (err, _out, stderr) => (err ? reject(new Error(`qemu-img ${args.join(' ')}: ${stderr || err.message}`)) : resolve())),
    );
  }

  /** Boots: the agent channel on fd 3, QMP on fd 4, the QGA port on fd 5, the raw port on fd 6. */
  spawn(): void {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) throw new Error('the peer QEMU is already running');
    const proc = spawn(this.spec.qemu, this.argv(), { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe', 'pipe', 'pipe'] });
    this.proc = proc;
    watchPid(proc.pid, 'qemu-system');
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => (this.stderrTail = (this.stderrTail + d).slice(-4000)));
    this.exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
    proc.once('error', () => undefined);
    this.channel = new RawChannel(proc.stdio[3] as Socket);
    this.qmp = new QmpClient(proc.stdio[4] as Socket);
    this.qmp.ready.catch(() => undefined);
    this.qga = new QgaClient((proc.stdio as unknown as Socket[])[5]);
    this.raw = new RawPort((proc.stdio as unknown as Socket[])[6]);
  }

  /** Rejects when QEMU exits, with its stderr. */
  died(what: string): Promise<never> {
    return this.exited!.then(({ code, signal }) => {
      throw new Error(`the peer QEMU exited during ${what} (${signal ?? `code ${code}`}): ${this.stderrTail.trim() || 'no stderr'}`);
    });
  }

  /** Until the Sandbox VMs agent answers its hello: the guest has booted (a common mark for both sides). */
  async waitAgent(timeoutMs: number): Promise<AgentHello> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the peer's guest did not boot within ${timeoutMs} ms`)), timeoutMs)));
    timeout.catch(() => undefined);
    try {
      return await this.channel!.greet(Promise.race([this.died('boot'), timeout]));
    } finally {
      clearTimeout(timer);
    }
  }

  /** Until qemu-guest-agent answers a guest-sync. */
  async waitQga(timeoutMs: number): Promise<void> {
    const died = this.died('waiting for qemu-guest-agent');
    died.catch(() => undefined);
    await Promise.race([this.qga!.sync(timeoutMs), died]);
  }

  /** Kills QEMU (SIGKILL) if it runs and waits for it to be gone. Its overlay is thrown away. */
  kill(): Promise<void> {
    return killQemu(this.proc, this.exited);
  }

  async dispose(): Promise<void> {
    await this.kill();
    this.unregister();
  }
}
