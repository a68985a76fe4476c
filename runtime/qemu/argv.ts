/**
 * QEMU's command line, built by a pure function from what a VM is and how it is being started.
 * Table-driven tests in test/unit/argv.test.ts.
 */

import { createHash } from 'node:crypto';
import type { NetworkPolicy } from '../common/config';

export type Accelerator = 'kvm' | 'hvf' | 'whpx' | 'tcg';

export interface LaunchSpec {
  accel: Accelerator;
  cpus: number;
  memoryMiB: number;
  kernel: string;
  initrd: string;
  disk: string;
  consoleLog: string;
  hostname: string;
  /**
   * `isolated`: no NIC. `host`: QEMU's user networking. `internet`: the NIC's frames go to passt
   * over `passtFd` (required then).
   */
  network: NetworkPolicy;
  /** Inherited fd of the connected socket whose other end passt holds (`internet` only). */
  passtFd?: number;
  /** QEMU older than 7.2 has no `-netdev stream`: use `-netdev socket` (same framing) instead. */
  legacySocketNetdev?: boolean;
  /** Inherited fd of the channel's socket (virtio-serial port). */
  channelFd: number;
  /** Inherited fd of the QMP socket. */
  qmpFd: number;
  /**
   * Inherited listening fd for the serial line. QEMU still appends everything the guest writes to
   * consoleLog (the chardev's logfile, written whether or not a client is connected), and boots
   * with its vCPUs stopped (-S) so the worker connects before the guest's first byte.
   * Without it the serial line goes to consoleLog only.
   */
  serialFd?: number;
  /**
   * What the channel and QMP fds are: listening sockets (the worker's choice: a replacement worker
   * can connect again) or one end of connected socketpairs (benchmarks driving QEMU by hand).
   * Default: listening.
   */
  fdSockets?: 'listening' | 'connected';
  /** Restore from this saved-state file instead of booting. */
  incomingFile?: string;
  /** Give the guest a vhost-vsock device with this CID (only where /dev/vhost-vsock is usable). */
  vsockCid?: number;
  /** The NIC's MAC address (macForVm); QEMU's default, the same for every VM, when missing. */
  mac?: string;
  /**
   * Guest RAM in a file instead of anonymous memory (templates, service/templates.ts): `share`
   * maps it shared (the template: its RAM is the file, and a save with x-ignore-shared writes only
   * the devices); unshared is copy-on-write over the file (a VM restored from the template: nothing
   * is copied, nothing written back). The backend keeps QEMU's own id for machine RAM, so saved
   * states move freely between this layout and the default one.
   */
  memoryFile?: { path: string; share: boolean };
  /** `-incoming defer`: the worker sets migration capabilities, then starts the restore with migrate-incoming. */
  incomingDefer?: boolean;
}

/** The id QEMU gives a microvm's RAM block when it makes the machine's memory itself. */
export const RAM_ID = 'microvm.ram';

/**
 * A VM's MAC address, stable for its id: locally administered unicast (52:54:00 is QEMU's prefix),
 * the other three bytes from a hash of the id, so clones of one VM each get their own.
 */
export function macForVm(id: string): string {
  const h = createHash('sha256').update(id).digest();
  return ['52', '54', '00', ...[h[0], h[1], h[2]].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

/** The virtio-serial port name the guest agent looks for. */
export const AGENT_PORT_NAME = 'org.sandboxvm.agent';

/** Kernel flags measured to boot fastest under TCG (see RECIPES.md); harmless with hardware acceleration. */
export const KERNEL_FLAGS = [
  'console=ttyS0',
  'quiet',
  'tsc_early_khz=2000000',
  'tsc=reliable',
  'no_timer_check',
  'mitigations=off',
  'random.trust_cpu=on',
  'i8042.noaux',
  'i8042.nokbd',
  'i8042.nopnp',
  '8250.nr_uarts=1',
  'cryptomgr.notests',
  // A failed switch_root panics PID 1; with -no-reboot this ends QEMU at once instead of hanging.
  'panic=-1',
];

/**
 * Only under TCG: QEMU caches translated code by virtual address, so with address-space layout
 * randomisation every new process runs ld.so and libc at new addresses and pays for translating
 * them again. Measured in a guest here: fork+exec of /bin/true 32 ms with ASLR, 11 ms without;
 * exec of `true` through the agent 26 -> 16 ms. The guest loses ASLR, a hardening of guest
 * processes against each other; the host's isolation does not depend on it.
 */
export const TCG_KERNEL_FLAGS = ['norandmaps'];

export function buildQemuArgv(spec: LaunchSpec): string[] {
  const argv = [
    ...accelArgs(spec.accel),
    '-m', String(spec.memoryMiB),
    '-smp', String(spec.cpus),
    // microvm needs the legacy timers under TCG, or it hangs calibrating them.
    ...memoryArgs(spec),
    '-M', `microvm,pit=on,pic=on,rtc=on${spec.memoryFile ? `,memory-backend=${RAM_ID}` : ''}`,
    '-nodefaults',
    '-no-user-config',
    '-no-reboot',
    '-nographic',
    ...serialArgs(spec),
    '-serial', 'chardev:console',
    '-kernel', spec.kernel,
    '-initrd', spec.initrd,
    '-append', [...KERNEL_FLAGS, ...(spec.accel === 'tcg' ? TCG_KERNEL_FLAGS : []), `sandboxvm.hostname=${spec.hostname}`].join(' '),
    '-drive', `id=root,file=${escapeOption(spec.disk)},format=qcow2,if=none,discard=unmap,detect-zeroes=unmap`,
    '-device', 'virtio-blk-device,drive=root',
    // Both are listening sockets the worker made (inherited fds): QEMU accepts one client at a
    // time, so a worker that crashed is replaced by one that connects again, the VM running on.
    '-chardev', `socket,id=agent,fd=${spec.channelFd},${serverOption(spec)}`,
    '-device', 'virtio-serial-device,max_ports=2',
    '-device', `virtserialport,chardev=agent,name=${AGENT_PORT_NAME}`,
    '-chardev', `socket,id=qmp,fd=${spec.qmpFd},${serverOption(spec)}`,
    '-mon', 'chardev=qmp,mode=control',
  ];
  argv.push(...networkArgs(spec));
  if (spec.vsockCid !== undefined) argv.push('-device', `vhost-vsock-device,guest-cid=${spec.vsockCid}`);
  if (spec.incomingDefer) argv.push('-incoming', 'defer');
  else if (spec.incomingFile) argv.push('-incoming', `exec:cat ${shellQuote(spec.incomingFile)}`);
  return argv;
}

function memoryArgs(spec: LaunchSpec): string[] {
  if (!spec.memoryFile) return [];
  return ['-object', `memory-backend-file,id=${RAM_ID},size=${spec.memoryMiB}M,mem-path=${escapeOption(spec.memoryFile.path)},share=${spec.memoryFile.share ? 'on' : 'off'}`];
}

function networkArgs(spec: LaunchSpec): string[] {
  const nic = ['-device', `virtio-net-device,netdev=net0${spec.mac ? `,mac=${spec.mac}` : ''}`];
  switch (spec.network) {
    case 'isolated':
      return [];
    case 'host':
      return ['-netdev', 'user,id=net0', ...nic];
    case 'internet':
      if (spec.passtFd === undefined) throw new Error('network policy internet needs passtFd');
      return ['-netdev', spec.legacySocketNetdev ? `socket,id=net0,fd=${spec.passtFd}` : `stream,id=net0,server=off,addr.type=fd,addr.str=${spec.passtFd}`, ...nic];
  }
}

function serialArgs(spec: LaunchSpec): string[] {
  const log = escapeOption(spec.consoleLog);
  if (spec.serialFd === undefined) return ['-chardev', `file,id=console,path=${log},append=on`];
  const paused = spec.incomingFile || spec.incomingDefer ? [] : ['-S'];
  return ['-chardev', `socket,id=console,fd=${spec.serialFd},${serverOption(spec)},logfile=${log},logappend=on`, ...paused];
}

function serverOption(spec: LaunchSpec): string {
  return spec.fdSockets === 'connected' ? 'server=off' : 'server=on,wait=off';
}

function accelArgs(accel: Accelerator): string[] {
  switch (accel) {
    case 'kvm':
      return ['-accel', 'kvm', '-cpu', 'host'];
    case 'hvf':
      return ['-accel', 'hvf', '-cpu', 'host'];
    case 'whpx':
      return ['-accel', 'whpx', '-cpu', 'max'];
    case 'tcg':
      // A 128 MiB translation cache instead of 1 GiB: same speed, ~230 MiB less RSS (RECIPES.md).
      return ['-accel', 'tcg,tb-size=128', '-cpu', 'max'];
  }
}

/** QEMU option values separate on commas; a literal comma is written twice. */
export function escapeOption(value: string): string {
  return value.replace(/,/g, ',,');
}

/** Quotes for /bin/sh, which QEMU's exec: migration URIs go through. */
export function shellQuote(value: string): string {
  return `'${value.replace(/'/g, `'\\''`)}'`;
}
