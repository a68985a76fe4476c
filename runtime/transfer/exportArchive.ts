/**
 * Writes a stopped or saved VM as one archive (manifest.ts has the layout): the whole backing
 * chain it needs to run (base image, its own layers, every checkpoint's layer), the checkpoint
 * index and memory states, the saved state. Layers are kept as layers, not flattened: an archive
 * of a VM with N checkpoints holds the base image once, and each layer only what it changed. Each
 * layer's backing name is rewritten to its parent's name inside the archive while it streams
 * (qcow2Header.ts), so an unpacked archive is a working chain (`qemu-img info --backing-chain`).
 *
 * A VM whose lowest own layer does not back onto the base image (made from a template: it backs
 * onto the template's disk; a linked clone: onto its source's layer) gets one more entry,
 * `disks/foreign.qcow2`: everything of that foreign chain that differs from the base
 * (foreignLayer.ts), made in `scratchDir` before the hashing pass and removed after; the lowest
 * layers back onto it. A standalone lowest layer (a full clone's disk: no backing file) is the
 * foreign file itself: the archive holds what of it differs from the base as the foreign layer,
 * and in its place an empty overlay on that (a second temporary). The archive never depends on
 * files outside it.
 *
 * A VM made from a template and never started is saved with the template's devices-only state
 * (its RAM is the template's file, named by memory.json): it is exported as stopped, without that
 * state; its import boots (and, as every import, takes a fresh identity at its first start).
 *
 * Two passes over the files: the first hashes every entry (the manifest comes first and lists
 * sizes and sha256), the second streams them. Memory holds one chunk at a time. The caller holds
 * the VM's queue, so the files do not change between the passes.
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fs, statSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { VmConfig } from '../common/config';
import { ErrorCode, SandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { parseIndex } from '../service/checkpointTree';
import { CHECKPOINT_FILES } from '../service/checkpointStore';
import { ARCHIVE_FORMAT, ARCHIVE_VERSION, FOREIGN_ENTRY, MANIFEST_NAME, layerEntryName, type Manifest, type ManifestEntry } from './manifest';
import { HEADER_BYTES, Qcow2Error, parseQcow2Header, withBacking } from './qcow2Header';
import { END_MARKER, fileHeader, padding } from './tarWriter';
import { imageFileSha256 } from './imageHashes';
import { chainAbove, emptyOverlay, makeForeignLayer } from './foreignLayer';
import { locateQemu } from '../qemu/locate';

const CHUNK = 1024 * 1024;

export interface ExportSource {
  vmDir: string;
  config: VmConfig;
  state: 'stopped' | 'saved';
  /** Shown in the manifest. */
  exporter: string;
  /** A running VM, exported through a checkpoint just taken (its disk and memory at that instant). */
  frozen?: FrozenView;
  /** Where the foreign layer's temporary is made (beside the archive, or the service's home); default: the OS temp folder. */
  scratchDir?: string;
}

/**
 * A running VM as the archive shows it: checkpoint `checkpoint` applied and saved. Its layer and
 * memory state are frozen (never written again), so they are read while the guest runs on; the
 * VM's own writable disk is not exported, `topFile` (an empty overlay on the checkpoint's layer,
 * made outside the VM's folder) stands for it.
 */
export interface FrozenView {
  checkpoint: string;
  topFile: string;
}

/** One file of the archive as planned: where it comes from, and for a layer the backing name it gets. */
interface Planned {
  name: string;
  file: string;
  /** The entry's bytes when they are not the file's (a frozen view's index). */
  data?: Buffer;
  /** A base image file: read-only once published, its hash is remembered (imageHashes.ts). */
  image?: boolean;
  backing?: string;
  sameAs?: string;
}

/** The plan, and the foreign file the lowest layers back onto when that is not the base image. */
interface Plan {
  entries: Planned[];
  foreign?: string;
  /** The planned layer that is the foreign file itself (standalone): exported as an empty overlay on the foreign layer. */
  standalone?: Planned;
}

export interface ExportProgress {
  (bytes: number, total: number, message: string): void;
}

export interface ExportResult {
  bytes: number;
  entries: number;
  /** Bytes of the entries (without tar headers). */
  payloadBytes: number;
}

/**
 * The state the archive gives the VM: a never-started VM made from a template (saved, the
 * template's state, identity.json not yet taken) is exported as stopped.
 */
export async function exportedState(src: ExportSource): Promise<'stopped' | 'saved'> {
  if (src.frozen) return 'saved';
  if (src.state === 'saved' && src.config.template && (await exists(path.join(src.vmDir, VM_FILES.identity)))) return 'stopped';
  return src.state;
}

/** The files of the VM's archive, in archive order (parents before children). */
export async function planExport(src: ExportSource): Promise<Plan> {
  const state = await exportedState(src);
  const out: Planned[] = [
    { name: 'image/vmlinuz', file: src.config.image.kernel, image: true },
    { name: 'image/initrd.img', file: src.config.image.initrd, image: true },
    { name: 'disks/base.qcow2', file: src.config.image.disk, image: true },
  ];
  const indexFile = path.join(src.vmDir, VM_FILES.checkpointIndex);
  const indexText = await fs.readFile(indexFile, 'utf8').catch((err) => {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  });
  const sibling = (layer: string | undefined) => (layer === undefined ? 'base.qcow2' : path.posix.basename(layerEntryName(layer)));
  const inodes = new Map<string, string>();
  const memory = (name: string, file: string) => {
    const st = statSync(file);
    const key = `${st.dev}:${st.ino}`;
    out.push({ name, file, sameAs: inodes.get(key) });
    if (!inodes.has(key)) inodes.set(key, name);
  };
  if (indexText === undefined) {
    out.push({ name: 'disks/disk.qcow2', file: path.join(src.vmDir, VM_FILES.disk), backing: 'base.qcow2' });
  } else {
    let index = parseIndex(indexText);
    if (index.pending) throw new SandboxError(ErrorCode.Internal, 'a checkpoint operation is still pending; try the export again');
    const frozen = src.frozen;
    if (frozen) {
      if (!index.nodes.some((n) => n.id === frozen.checkpoint && n.memory)) throw new SandboxError(ErrorCode.Internal, `the checkpoint taken for the export (${frozen.checkpoint}) is gone; try again`);
      let top: string;
      do top = `${VM_FILES.layers}/${randomBytes(8).toString('hex')}.qcow2`;
      while (index.nodes.some((n) => n.layer === top));
      index = { ...index, current: frozen.checkpoint, top };
    }
    const byId = new Map(index.nodes.map((n) => [n.id, n]));
    const done = new Set<string>();
    const addNode = (id: string) => {
      if (done.has(id)) return;
      const n = byId.get(id)!;
      if (n.parent !== undefined) addNode(n.parent);
      done.add(id);
      out.push({ name: layerEntryName(n.layer), file: path.join(src.vmDir, n.layer), backing: sibling(n.parent === undefined ? undefined : byId.get(n.parent)!.layer) });
    };
    for (const n of index.nodes) addNode(n.id);
    const top = index.top ?? VM_FILES.disk;
    out.push({ name: layerEntryName(top), file: frozen ? frozen.topFile : path.join(src.vmDir, top), backing: sibling(index.current === undefined ? undefined : byId.get(index.current)!.layer) });
    out.push(frozen ? { name: VM_FILES.checkpointIndex, file: indexFile, data: Buffer.from(JSON.stringify(index, null, 2) + '\n') } : { name: VM_FILES.checkpointIndex, file: indexFile });
    const savedFrom = frozen ? path.join(src.vmDir, VM_FILES.checkpoints, frozen.checkpoint) : undefined;
    if (savedFrom) {
      memory('saved.state', path.join(savedFrom, CHECKPOINT_FILES.memory));
      if (await exists(path.join(savedFrom, CHECKPOINT_FILES.epoch))) out.push({ name: 'saved.epoch', file: path.join(savedFrom, CHECKPOINT_FILES.epoch) });
    } else if (state === 'saved') memory('saved.state', path.join(src.vmDir, VM_FILES.savedState));
    for (const n of index.nodes) {
      if (!n.memory) continue;
      const folder = path.join(src.vmDir, VM_FILES.checkpoints, n.id);
      memory(`checkpoints/${n.id}/memory.state`, path.join(folder, CHECKPOINT_FILES.memory));
      const epoch = path.join(folder, CHECKPOINT_FILES.epoch);
      if (await exists(epoch)) out.push({ name: `checkpoints/${n.id}/epoch`, file: epoch });
    }
  }
  if (state === 'saved' && !src.frozen) {
    if (!out.some((p) => p.name === 'saved.state')) memory('saved.state', path.join(src.vmDir, VM_FILES.savedState));
    const epoch = path.join(src.vmDir, VM_FILES.savedEpoch);
    if (await exists(epoch)) out.push({ name: 'saved.epoch', file: epoch });
  }
  const lowest = out.filter((p) => !p.image && p.backing === 'base.qcow2');
  const foreign = await foreignBacking(lowest, src.config.image.disk);
  if (foreign === undefined) return { entries: out };
  for (const p of lowest) p.backing = 'foreign.qcow2';
  out.splice(3, 0, { name: FOREIGN_ENTRY, file: '', backing: 'base.qcow2' });
  const standalone = lowest.find((p) => path.resolve(p.file) === foreign);
  return { entries: out, foreign, standalone };
}

/**
 * The file the lowest layers (planned on base.qcow2) really back onto, when it is not the base
 * image (their headers are read); a lone standalone layer is its own foreign file. Throws when
 * they disagree.
 */
async function foreignBacking(lowest: Planned[], baseDisk: string): Promise<string | undefined> {
  const backings = new Set<string>();
  for (const p of lowest) {
    if (p.image || p.backing !== 'base.qcow2') continue;
    const handle = await fs.open(p.file, 'r');
    const buf = Buffer.alloc(HEADER_BYTES);
    const { bytesRead } = await handle.read(buf, 0, HEADER_BYTES, 0).finally(() => handle.close());
    let backing: string | undefined;
    try {
      backing = parseQcow2Header(buf.subarray(0, bytesRead)).backing;
    } catch (err) {
      if (err instanceof Qcow2Error) throw new SandboxError(ErrorCode.Internal, `${p.file} cannot be exported: ${err.message}`);
      throw err;
    }
    backings.add(backing === undefined ? path.resolve(p.file) : path.resolve(path.dirname(p.file), backing));
  }
  if (backings.size > 1) throw new SandboxError(ErrorCode.Internal, `the VM's lowest disk layers back onto different files (${[...backings].join(', ')}); it cannot be exported`);
  const only = [...backings][0];
  return only === undefined || only === path.resolve(baseDisk) ? undefined : only;
}

/** The bytes of a planned entry, in chunks; a layer's first chunk has its backing name rewritten. */
async function* chunks(p: Planned, signal?: AbortSignal): AsyncGenerator<Buffer> {
  if (p.data) {
    yield p.data;
    return;
  }
  const handle = await fs.open(p.file, 'r');
  try {
    let position = 0;
    for (let first = true; ; first = false) {
      if (signal?.aborted) throw cancelled();
      const size = first && p.backing ? HEADER_BYTES : CHUNK;
      const buf = Buffer.allocUnsafe(size);
      const { bytesRead } = await handle.read(buf, 0, size, position);
      if (bytesRead === 0) return;
      position += bytesRead;
      let piece: Buffer = buf.subarray(0, bytesRead);
      if (first && p.backing) {
        try {
          piece = withBacking(piece, p.backing);
        } catch (err) {
          if (err instanceof Qcow2Error) throw new SandboxError(ErrorCode.Internal, `${p.file} cannot be exported: ${err.message}`);
          throw err;
        }
      }
      yield piece;
    }
  } finally {
    await handle.close();
  }
}

function cancelled(): SandboxError {
  return new SandboxError(ErrorCode.Cancelled, 'the export was cancelled');
}

async function exists(file: string): Promise<boolean> {
  return fs.access(file).then(
    () => true,
    () => false,
  );
}

/**
 * Writes the archive of `src` to `sink` (awaited per chunk: backpressure). Returns its size.
 * Progress counts the foreign layer's making (the bytes of the chain it reads), the hashing pass
 * and the writing pass as one total. The foreign layer's temporary is removed on every way out.
 */
export async function writeArchive(
  src: ExportSource,
  sink: (chunk: Buffer) => Promise<void>,
  progress: ExportProgress = () => undefined,
  signal?: AbortSignal,
  /** Called with the payload's size before anything is read or written (a free-space check throws here). */
  beforeWrite: (payloadBytes: number) => void = () => undefined,
): Promise<ExportResult> {
  const { entries: plan, foreign, standalone } = await planExport(src);
  const state = await exportedState(src);
  const sizeOf = (p: Planned) => (p.sameAs ? 0 : p.data ? p.data.length : fs.stat(p.file).then((s) => s.size));
  const scratch: string[] = [];
  try {
    let collected = 0;
    if (foreign) {
      const qemuImg = (await locateQemu()).img;
      const chain = await chainAbove(qemuImg, foreign, path.resolve(src.config.image.disk));
      const others = (await Promise.all(plan.filter((p) => p.name !== FOREIGN_ENTRY).map(sizeOf))).reduce((a, b) => a + b, 0);
      beforeWrite(others + 2 * chain.bytes);
      const estimate = chain.bytes + 2 * (others + chain.bytes);
      const temp = () => path.join(src.scratchDir ?? os.tmpdir(), `.sandboxvm-export-${process.pid}-${randomBytes(6).toString('hex')}.foreign.qcow2`);
      const layer = temp();
      scratch.push(layer);
      progress(0, estimate, "collecting the disk's shared layers");
      await makeForeignLayer(qemuImg, foreign, src.config.image.disk, layer, (pct) => progress(Math.round((chain.bytes * pct) / 100), estimate, `collecting the disk's shared layers: ${pct.toFixed(0)}%`), signal);
      plan.find((p) => p.name === FOREIGN_ENTRY)!.file = layer;
      if (standalone) {
        const overlay = temp();
        scratch.push(overlay);
        await emptyOverlay(qemuImg, foreign, overlay, signal);
        standalone.file = overlay;
      }
      collected = chain.bytes;
    }
    return await writePlanned(src, state, plan, collected, sink, progress, signal, beforeWrite);
  } catch (err) {
    if (signal?.aborted && !(err instanceof SandboxError && err.code === ErrorCode.Cancelled)) throw cancelled();
    throw err;
  } finally {
    for (const f of scratch) await fs.rm(f, { force: true });
  }
}

async function writePlanned(
  src: ExportSource,
  state: 'stopped' | 'saved',
  plan: Planned[],
  collected: number,
  sink: (chunk: Buffer) => Promise<void>,
  progress: ExportProgress,
  signal: AbortSignal | undefined,
  beforeWrite: (payloadBytes: number) => void,
): Promise<ExportResult> {
  const sizes = await Promise.all(plan.map((p) => (p.data ? p.data.length : fs.stat(p.file).then((s) => s.size))));
  const payload = plan.reduce((sum, p, i) => sum + (p.sameAs ? 0 : sizes[i]), 0);
  beforeWrite(payload);
  const total = collected + payload * 2;
  let done = collected;
  let lastReport = 0;
  const report = (message: string, force = false) => {
    if (force || Date.now() - lastReport >= 200) {
      lastReport = Date.now();
      progress(done, total, message);
    }
  };
  const entries: ManifestEntry[] = [];
  for (const p of plan) {
    if (p.sameAs) {
      const twin = entries.find((e) => e.name === p.sameAs)!;
      entries.push({ name: p.name, size: twin.size, sha256: twin.sha256, sameAs: twin.name });
      continue;
    }
    if (p.image) {
      entries.push({ name: p.name, size: sizes[plan.indexOf(p)], sha256: await imageFileSha256(p.file) });
      done += sizes[plan.indexOf(p)];
      continue;
    }
    const hash = createHash('sha256');
    let size = 0;
    for await (const c of chunks(p, signal)) {
      hash.update(c);
      size += c.length;
      done += c.length;
      report(`checking ${p.name}`);
    }
    entries.push({ name: p.name, size, sha256: hash.digest('hex') });
  }
  const c = src.config;
  const manifest: Manifest = {
    format: ARCHIVE_FORMAT,
    version: ARCHIVE_VERSION,
    exportedAt: new Date().toISOString(),
    exporter: src.exporter,
    vm: { name: c.name, cpus: c.cpus, memoryMiB: c.memoryMiB, diskGiB: c.diskGiB, network: c.network, ports: c.ports, createdAt: c.createdAt, state, imageHash: c.image.hash },
    entries,
  };
  const manifestBytes = Buffer.from(JSON.stringify(manifest, null, 2) + '\n');
  let written = 0;
  const put = async (b: Buffer) => {
    await sink(b);
    written += b.length;
  };
  await put(fileHeader(MANIFEST_NAME, manifestBytes.length));
  await put(manifestBytes);
  await put(padding(manifestBytes.length));
  for (const [i, p] of plan.entries()) {
    if (p.sameAs) continue;
    const e = entries[i];
    await put(fileHeader(e.name, e.size));
    const hash = createHash('sha256');
    let size = 0;
    for await (const c of chunks(p, signal)) {
      hash.update(c);
      size += c.length;
      done += c.length;
      await put(c);
      report(`writing ${p.name}`);
    }
    if (size !== e.size || hash.digest('hex') !== e.sha256) throw new SandboxError(ErrorCode.Internal, `${p.file} changed during the export; try again`);
    await put(padding(size));
  }
  await put(END_MARKER);
  report('done', true);
  return { bytes: written, entries: entries.length, payloadBytes: payload };
}
