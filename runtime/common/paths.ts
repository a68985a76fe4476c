/**
 * Where things live on disk. The data directory is per user (XDG on Linux, the platform's convention
 * elsewhere) and can be overridden with SANDBOXVM_HOME (tests use a temporary one).
 *
 *   <home>/service.sock      the service's JSON-RPC socket (directory is 0700)
 *   <home>/service.pid       the running service's pid
 *   <home>/service.log       the service's log
 *   <home>/images/<hash>/    built base images (read-only once published)
 *   <home>/vms/<name>/       one directory per VM, files named by VM_FILES
 */
import * as os from 'node:os';
import * as path from 'node:path';

export function dataHome(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SANDBOXVM_HOME) return path.resolve(env.SANDBOXVM_HOME);
  if (process.platform === 'darwin') return path.join(os.homedir(), 'Library', 'Application Support', 'sandboxvm');
  if (process.platform === 'win32') return path.join(env.LOCALAPPDATA ?? path.join(os.homedir(), 'AppData', 'Local'), 'sandboxvm');
  return path.join(env.XDG_DATA_HOME ?? path.join(os.homedir(), '.local', 'share'), 'sandboxvm');
}

/** The image cache. Separate from the data home so several homes (tests) share one built image. */
export function imageCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SANDBOXVM_IMAGE_CACHE) return path.resolve(env.SANDBOXVM_IMAGE_CACHE);
  if (process.platform === 'linux') return path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'sandboxvm', 'images');
  return path.join(dataHome(env), 'images');
}

export const SERVICE_FILES = {
  socket: 'service.sock',
  pid: 'service.pid',
  log: 'service.log',
} as const;

/** Every file in a VM's directory. Nothing else is written there. */
export const VM_FILES = {
  /** The VM's configuration (VmConfig), written atomically. */
  config: 'vm.json',
  /** The qcow2 overlay on the base image: the VM's own disk (once checkpointed, the first checkpoint's frozen layer; common/activeDisk.ts). */
  disk: 'disk.qcow2',
  /** The saved running state (QEMU migration stream) while the VM is `saved`. */
  savedState: 'saved.state',
  /** Beside saved.state: the channel epoch it was saved in, so its guest sessions can be attached after a restore. */
  savedEpoch: 'saved.epoch',
  /** The guest's serial console, appended across boots. */
  consoleLog: 'console.log',
  /** The VM's workspace syncs (runtime/sync/types.ts SyncSpec[]), written atomically by the service. */
  syncs: 'syncs.json',
  /** The worker's own log: QEMU's stderr, lifecycle steps, fallbacks. */
  workerLog: 'worker.log',
  /** The worker's runtime record (WorkerRecord): pids, socket, start time. */
  worker: 'worker.json',
  /** The worker's JSON-RPC socket. */
  workerSocket: 'worker.sock',
  /** QEMU's listening socket for the agent channel (virtio-serial): a new worker reconnects here. */
  agentSocket: 'agent.sock',
  /** QEMU's listening QMP socket: a new worker reconnects here. */
  qmpSocket: 'qmp.sock',
  /** QEMU's listening socket for the serial line (ttyS0): only the worker connects here. */
  qemuSerialSocket: 'serial-qemu.sock',
  /** The worker's serial console for clients (runtime/worker/serialConsole.ts), owner-only. */
  serialSocket: 'serial.sock',
  /** passt's log (the `internet` network policy's back end; passt keeps it under 1 MiB). */
  passtLog: 'passt.log',
  /** A folder: what `sandboxvm pull` remembers per host folder, and its quarantine (runtime/sync/pull/pullState.ts). */
  pull: 'pull',
  /** The checkpoint index (service/checkpointTree.ts), written atomically. */
  checkpointIndex: 'checkpoints.json',
  /** One folder per checkpoint: the memory state of running, paused and saved ones (service/checkpointStore.ts). */
  checkpoints: 'checkpoints',
  /** Disk layers made by checkpoints: the overlays on top of frozen layers (common/activeDisk.ts). */
  layers: 'layers',
  /** An imported VM's own copy of its base image (base.qcow2, vmlinuz, initrd.img), when no local image had its bytes (runtime/transfer). */
  image: 'image',
  /**
   * In a VM whose disk or saved state came from another VM (a clone, a VM from a template): the
   * identity its guest takes at its next start (service/clones.ts NewIdentity); removed once it has.
   */
  identity: 'identity.json',
  /**
   * Guest RAM in a file ({path, share}; qemu/argv.ts memoryFile): a template being built (shared),
   * or a VM made from one until its first start (the template's RAM, mapped copy-on-write, with a
   * saved state of the devices only). Removed once that start has restored it.
   */
  memoryFile: 'memory.json',
} as const;

/** The files of a VM that runs (its worker's record and the sockets): none may outlive its QEMU. */
export const RUNNING_VM_FILES = ['worker', 'workerSocket', 'agentSocket', 'qmpSocket', 'qemuSerialSocket', 'serialSocket'] as const;

export function vmsDir(home = dataHome()): string {
  return path.join(home, 'vms');
}

export function vmDir(name: string, home = dataHome()): string {
  return path.join(vmsDir(home), name);
}

export function vmFile(name: string, file: keyof typeof VM_FILES, home = dataHome()): string {
  return path.join(vmDir(name, home), VM_FILES[file]);
}
