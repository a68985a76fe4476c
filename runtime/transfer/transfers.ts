/**
 * Export and import in the service (`vm.export`, `vm.import`, `vm.transfer.cancel`). The archive
 * goes to or comes from a file the service opens (`path`, absolute), or a stream socket the
 * client listens on in the service's home (`socket`: the CLI's `-`, piped to its stdout or from
 * its stdin; streamSocket.ts).
 *
 * Allowed states: export in any of running, paused, saved, stopped, in the VM's queue for the whole
 * export (nothing changes its files meanwhile); a running or paused VM is exported through a
 * checkpoint (see `export`). A file export is written to `.<file>.partial-<pid>-<time>` beside the target, fsynced and
 * renamed, so an interrupted export leaves nothing under the target's name. Import makes a new
 * VM (importArchive.ts); a name in use is refused.
 */
import { execFile } from 'node:child_process';
import { createReadStream, promises as fs } from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { VmConfig } from '../common/config';
import { ErrorCode, SandboxError } from '../common/errors';
import { wrongStateMessage } from '../common/stateMessages';
import type { VmInfo, VmState } from '../common/status';
import type { HandlerTable, RpcPeer } from '../common/rpc';
import { RUNTIME_VERSION } from '../common/version';
import { locateQemu } from '../qemu/locate';
import { VM_FILES } from '../common/paths';
import { parseIndex } from '../service/checkpointTree';
import { writeArchive, type ExportSource, type FrozenView } from './exportArchive';
import { importArchive } from './importArchive';
import { TRANSFER_SOCKET } from './streamSocket';
import { ensureHostRoom } from '../client/hostRoom';

/** What the VM manager lends export and import. */
export interface TransferHost {
  home(): string;
  vmsDir(): string;
  imageCacheDir(): string;
  queue<T>(name: string, fn: () => Promise<T>): Promise<T>;
  dir(name: string): string;
  config(name: string): VmConfig;
  state(name: string): VmState;
  exists(name: string): boolean;
  /** Settles a checkpoint operation a crash cut short (no QEMU runs). */
  recoverCheckpoints(name: string): Promise<void>;
  /** Takes a checkpoint (queued); returns its id. */
  checkpoint(name: string, label: string): Promise<{ id: string }>;
  /** Deletes a checkpoint (queued). */
  deleteCheckpoint(name: string, id: string): Promise<void>;

  /** Makes an imported VM known (its folder is in place). */
  register(name: string, config: VmConfig): void;
  snapshot(name: string): VmInfo;
  log(message: string): void;
}

export interface ExportParams {
  name: string;
  path?: string;
  socket?: string;
  progressToken?: string;
}

export interface ExportedVm {
  name: string;
  /** The archive written (absent for a stream). */
  path?: string;
  bytes: number;
  entries: number;
  elapsedMs: number;
}

export interface ImportParams {
  path?: string;
  socket?: string;
  name?: string;
  progressToken?: string;
}

export interface ImportedVm {
  info: VmInfo;
  /** The name the archive had (the VM may have another). */
  archiveName: string;
  reusedImage: boolean;
  bytesWritten: number;
  elapsedMs: number;
}

type Progress = (step: number, total: number, message: string) => void;

export class Transfers {
  private readonly running = new Map<string, AbortController>();

  constructor(private readonly host: TransferHost) {}

  handlers(progressTo: (peer: RpcPeer, token: unknown) => Progress): HandlerTable {
    return {
      'vm.export': (p, peer) => this.withCancel(peer, p.progressToken, (signal) => this.export(p, progressTo(peer, p.progressToken), signal)),
      'vm.import': (p, peer) => this.withCancel(peer, p.progressToken, (signal) => this.import(p, progressTo(peer, p.progressToken), signal)),
      'vm.transfer.cancel': (p) => {
        this.running.get(String(p.progressToken))?.abort();
      },
    };
  }

  /** Runs `fn` with a signal that `vm.transfer.cancel` of `token`, or the client going away, aborts. */
  private async withCancel<T>(peer: RpcPeer, token: unknown, fn: (signal: AbortSignal) => Promise<T>): Promise<T> {
    const controller = new AbortController();
    peer.onClose(() => controller.abort());
    const key = typeof token === 'string' ? token : undefined;
    if (key) this.running.set(key, controller);
    try {
      return await fn(controller.signal);
    } finally {
      if (key) this.running.delete(key);
    }
  }

  /**
   * Writes the archive of a VM to `path` or `socket`. A stopped or saved VM is exported as it is; a
   * running or paused one through a checkpoint taken first (the guest paused ~30 ms, as for an
   * undo point): the archive holds that instant as a saved VM, the guest runs on meanwhile, and
   * the checkpoint is deleted afterwards (its layer merges when the VM next stops).
   */
  async export(p: ExportParams, progress: Progress, signal: AbortSignal): Promise<ExportedVm> {
    const name = p.name;
    const target = this.destination(p);
    await this.sweepStaleScratch();
    const before = this.host.state(name);
    let frozen: FrozenView | undefined;
    let frozenDir: string | undefined;
    if (before === 'running' || before === 'paused') {
      progress(0, 0, 'taking a checkpoint of the running VM');
      const c = await this.host.checkpoint(name, `export ${new Date().toISOString().slice(0, 19).replace('T', ' ')}`);
      frozenDir = await fs.mkdtemp(path.join(os.tmpdir(), 'sandboxvm-export-'));
      frozen = { checkpoint: c.id, topFile: path.join(frozenDir, 'top.qcow2') };
    }
    try {
      return await this.host.queue(name, async () => {
        const t0 = Date.now();
        const state = this.host.state(name);
        if (frozen) {
          await this.emptyOverlay(name, frozen);
        } else if (state === 'running' || state === 'paused') {
          throw new SandboxError(ErrorCode.WrongState, `${name} started while its export waited; export it again`);
        } else if (state !== 'stopped' && state !== 'saved') {
          throw new SandboxError(ErrorCode.WrongState, wrongStateMessage(name, state, 'export', ['running', 'paused', 'stopped', 'saved']));
        } else {
          await this.host.recoverCheckpoints(name);
        }
        const src: ExportSource = { vmDir: this.host.dir(name), config: this.host.config(name), state: frozen || state === 'saved' ? 'saved' : 'stopped', exporter: `sandboxvm ${RUNTIME_VERSION}`, frozen, scratchDir: target.kind === 'file' ? path.dirname(target.path) : this.host.home() };
        const room = (bytes: number) => target.kind === 'file' && ensureHostRoom(path.dirname(target.path), bytes, `exporting ${name}`);
        const write = (sink: (b: Buffer) => Promise<void>) => writeArchive(src, sink, progress, signal, room);
        const result = target.kind === 'file' ? await this.toFile(target.path, write) : await this.toSocket(target.path, write);
        this.host.log(`${name}: exported (${frozen ? `${before}, through checkpoint ${frozen.checkpoint}` : state}) to ${target.kind === 'file' ? target.path : 'a stream'}: ${result.bytes} bytes in ${Date.now() - t0} ms`);
        return { name, path: target.kind === 'file' ? target.path : undefined, bytes: result.bytes, entries: result.entries, elapsedMs: Date.now() - t0 };
      });
    } finally {
      if (frozenDir) await fs.rm(frozenDir, { recursive: true, force: true });
      if (frozen) await this.host.deleteCheckpoint(name, frozen.checkpoint).catch((err) => this.host.log(`${name}: deleting the export's checkpoint ${frozen!.checkpoint} failed: ${(err as Error).message}`));
    }
  }

  /** Reads an archive from `path` or `socket` into a new VM. */
  async import(p: ImportParams, progress: Progress, signal: AbortSignal): Promise<ImportedVm> {
    const t0 = Date.now();
    const source = this.destination(p);
    const qemu = await locateQemu();
    await this.sweepStaleImports();
    let stream: NodeJS.ReadableStream & { destroy(): void };
    if (source.kind === 'file') {
      const st = await fs.stat(source.path).catch(() => undefined);
      if (!st?.isFile()) throw new SandboxError(ErrorCode.BadArgument, `cannot read ${source.path}: ${st ? 'it is not a file' : 'no such file'}`);
      stream = createReadStream(source.path, { highWaterMark: 1024 * 1024 });
    } else {
      stream = await connect(source.path);
    }
    try {
      const r = await importArchive(stream as AsyncIterable<Buffer>, {
        vmsDir: this.host.vmsDir(),
        imageCacheDir: this.host.imageCacheDir(),
        qemuImg: qemu.img,
        name: p.name,
        exists: (n) => this.host.exists(n),
        progress,
        signal,
      });
      const name = r.config.name;
      await this.host.queue(name, async () => this.host.register(name, r.config));
      this.host.log(`imported ${name} (archive of ${r.manifest.vm.name}, ${r.manifest.vm.state}), ${r.bytesWritten} bytes written${r.reusedImage ? ', the local base image reused' : ''}, ${Date.now() - t0} ms`);
      return { info: this.host.snapshot(name), archiveName: r.manifest.vm.name, reusedImage: r.reusedImage, bytesWritten: r.bytesWritten, elapsedMs: Date.now() - t0 };
    } finally {
      stream.destroy();
    }
  }

  /** Makes the frozen view's top (outside the VM's folder) an empty overlay on its checkpoint's layer. In the VM's queue. */
  private async emptyOverlay(name: string, frozen: FrozenView): Promise<void> {
    const index = parseIndex(await fs.readFile(path.join(this.host.dir(name), VM_FILES.checkpointIndex), 'utf8'));
    const layer = index.nodes.find((n) => n.id === frozen.checkpoint)?.layer;
    if (!layer) throw new SandboxError(ErrorCode.Internal, `the checkpoint taken for the export (${frozen.checkpoint}) is gone; try again`);
    const img = (await locateQemu()).img;
    await new Promise<void>((resolve, reject) =>
      execFile(img, ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(this.host.dir(name), layer), '-u', frozen.topFile, `${this.host.config(name).diskGiB}G`], { timeout: 60_000 }, (err, _o, stderr) =>
        err ? reject(new SandboxError(ErrorCode.Internal, `qemu-img create failed: ${stderr.trim() || err.message}`)) : resolve(),
      ),
    );
  }

  /** Removes foreign-layer temporaries (exportArchive.ts) in the home whose service died mid-export. */
  private async sweepStaleScratch(): Promise<void> {
    const names = await fs.readdir(this.host.home()).catch(() => [] as string[]);
    for (const n of names) {
      const m = /^\.sandboxvm-export-(\d+)-[0-9a-f]+\.foreign\.qcow2$/.exec(n);
      if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
      this.host.log(`removing ${n}: an export its service did not finish`);
      await fs.rm(path.join(this.host.home(), n), { force: true });
    }
  }

  /** Removes staging folders of imports whose service died mid-way (their pid is gone). */
  private async sweepStaleImports(): Promise<void> {
    const names = await fs.readdir(this.host.vmsDir()).catch(() => [] as string[]);
    for (const n of names) {
      const m = /^\.[a-z0-9-]+\.importing-(\d+)-\d+$/.exec(n);
      if (!m || Number(m[1]) === process.pid || alive(Number(m[1]))) continue;
      this.host.log(`removing ${n}: an import its service did not finish`);
      await fs.rm(path.join(this.host.vmsDir(), n), { recursive: true, force: true });
    }
  }

  private destination(p: { path?: unknown; socket?: unknown }): { kind: 'file' | 'socket'; path: string } {
    if (typeof p.socket === 'string') {
      if (path.dirname(p.socket) !== this.host.home() || !TRANSFER_SOCKET.test(path.basename(p.socket))) throw new SandboxError(ErrorCode.BadArgument, 'the transfer socket must be one the client made in the service\'s home');
      return { kind: 'socket', path: p.socket };
    }
    if (typeof p.path !== 'string' || !path.isAbsolute(p.path)) throw new SandboxError(ErrorCode.BadArgument, 'name the archive with an absolute path');
    return { kind: 'file', path: p.path };
  }

  private async toFile<T>(file: string, write: (sink: (b: Buffer) => Promise<void>) => Promise<T>): Promise<T> {
    const dir = path.dirname(file);
    const st = await fs.stat(dir).catch(() => undefined);
    if (!st?.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `cannot write ${file}: ${dir} is not a folder`);
    if ((await fs.stat(file).catch(() => undefined))?.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `cannot write ${file}: it is a folder; name a file`);
    const tmp = path.join(dir, `.${path.basename(file)}.partial-${process.pid}-${Date.now()}`);
    const handle = await fs.open(tmp, 'wx', 0o600);
    try {
      const result = await write(async (b) => {
        await handle.write(b);
      });
      await handle.sync();
      await handle.close();
      await fs.rename(tmp, file);
      return result;
    } catch (err) {
      await handle.close().catch(() => undefined);
      await fs.rm(tmp, { force: true });
      if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new SandboxError(ErrorCode.DiskFull, `the disk holding ${dir} is full; the export was not written: free some space or export elsewhere`);
      throw err;
    }
  }

  private async toSocket<T>(socketPath: string, write: (sink: (b: Buffer) => Promise<void>) => Promise<T>): Promise<T> {
    const socket = await connect(socketPath);
    let gone: Error | undefined;
    socket.on('error', (err) => (gone = err));
    socket.on('close', () => (gone ??= new Error('closed')));
    try {
      const result = await write(async (b) => {
        if (gone) throw new SandboxError(ErrorCode.Cancelled, 'the export was cancelled: its reader went away');
        if (!socket.write(b)) {
          await new Promise<void>((resolve) => {
            const done = () => (socket.off('drain', done), socket.off('close', done), resolve());
            socket.on('drain', done);
            socket.on('close', done);
          });
        }
      });
      await new Promise<void>((resolve) => socket.end(resolve));
      return result;
    } finally {
      socket.destroy();
    }
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function connect(socketPath: string): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect(socketPath);
    s.once('connect', () => {
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', (err) => reject(new SandboxError(ErrorCode.BadArgument, `cannot reach the client's transfer socket: ${err.message}`)));
  });
}
