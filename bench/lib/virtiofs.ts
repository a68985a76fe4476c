/**
 * A host folder shared into a benchmark peer VM with virtiofs (bench/workspace.ts): QEMU 7.2's C
 * virtiofsd on a socket, the peer's memory as a shared memfd (vhost-user needs it), and the guest's
 * fuse + virtiofs modules, which the image leaves out: they are taken from the Debian package of the
 * guest's own kernel (`apt-get download`) and loaded over ssh.
 *
 * virtiofsd runs as the user running the benchmark (root on the bench machine: it needs root for
 * its namespace sandbox). This is a peer for comparison only; the runtime never shares a folder.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { onCleanup, watchPid } from './cleanup';
import { log } from './output';
import { delay, mustRun } from './proc';

export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';
export const VIRTIOFS_TAG = 'hostfs';

/**
 * QEMU arguments for a peer with `memoryMiB` of memory that mounts the folder served on `socket`.
 * libvhost-user refuses legacy virtio devices, and microvm's virtio-mmio transports are legacy by
 * default: `force-legacy=false` makes all of the peer's virtio-mmio devices modern (disk, console
 * and network too, where the runtime's VM has them legacy).
 */
export function virtiofsArgs(socket: string, memoryMiB: number): string[] {
  return [
    '-global', 'virtio-mmio.force-legacy=false',
    '-object', `memory-backend-memfd,id=vfsmem,size=${memoryMiB}M,share=on`,
    '-machine', 'memory-backend=vfsmem',
    '-chardev', `socket,id=vfs,path=${socket}`,
    '-device', `vhost-user-fs-device,chardev=vfs,tag=${VIRTIOFS_TAG}`,
  ];
}

export class Virtiofsd {
  private proc?: ChildProcess;
  private stderr = '';
  private readonly unregister: () => void;

  constructor(readonly socket: string, private readonly source: string) {
    this.unregister = onCleanup(`stopping virtiofsd for ${source}`, () => this.stop());
  }

  /** Starts it and waits for its socket. */
  async start(): Promise<void> {
    if (!fs.existsSync(VIRTIOFSD)) throw new Error(`${VIRTIOFSD} is missing (Debian's qemu-system-common ships it)`);
    const proc = spawn(VIRTIOFSD, [`--socket-path=${this.socket}`, '-o', `source=${this.source}`, '-o', 'cache=auto'], { stdio: ['ignore', 'ignore', 'pipe'] });
    this.proc = proc;
    watchPid(proc.pid, 'virtiofsd');
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (d: string) => (this.stderr = (this.stderr + d).slice(-2000)));
    for (let i = 0; i < 100 && !fs.existsSync(this.socket); i++) {
      if (proc.exitCode !== null) throw new Error(`virtiofsd exited (${proc.exitCode}): ${this.stderr.trim()}`);
      await delay(50);
    }
    if (!fs.existsSync(this.socket)) throw new Error(`virtiofsd made no socket at ${this.socket}: ${this.stderr.trim()}`);
  }

  async stop(): Promise<void> {
    const proc = this.proc;
    this.proc = undefined;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await Promise.race([gone, delay(5000)]);
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
    }
    this.unregister();
  }
}

/**
 * fuse.ko and virtiofs.ko for kernel release `release` (`uname -r` in the guest), from the Debian
 * package linux-image-<release>, extracted under `dir`. Returns their paths, fuse first.
 */
export async function kernelModules(dir: string, release: string): Promise<string[]> {
  if (!/^[0-9][A-Za-z0-9.+-]*$/.test(release)) throw new Error(`an odd kernel release from the guest: ${JSON.stringify(release)}`);
  const deb = path.join(dir, 'kernel-deb');
  fs.mkdirSync(deb, { recursive: true });
  log(`virtiofs: fetching linux-image-${release} for its fuse and virtiofs modules`);
  await mustRun('sh', ['-c', `cd '${deb}' && apt-get download -q 'linux-image-${release}' 2>&1 && dpkg-deb -x linux-image-*.deb x`], { timeoutMs: 300_000 });
  const base = path.join(deb, 'x', 'lib', 'modules', release, 'kernel', 'fs', 'fuse');
  const mods = ['fuse.ko', 'virtiofs.ko'].map((m) => path.join(base, m));
  for (const m of mods) if (!fs.existsSync(m)) throw new Error(`${m} is not in linux-image-${release}`);
  return mods;
}
