/**
 * Reads a VM archive (manifest.ts) into a new VM folder. The archive is untrusted input:
 *
 *  - the manifest comes first and passes parseManifest (format, version, settings through
 *    create's ranges, entry names from a fixed set, sizes bounded per kind);
 *  - the free space is checked for the whole import before anything is written;
 *  - every tar entry must be the next one the manifest lists, a regular file of exactly its size,
 *    its bytes hashed as they are written and compared with the manifest; then the end marker;
 *  - the checkpoint index passes its own parser and must name exactly the layers the archive has;
 *    epochs have the epoch's shape;
 *  - every qcow2 is read by qcow2Header.ts before QEMU sees it (no external data file, no
 *    encryption, backing name only the sibling the index says), then `qemu-img info` (which opens
 *    no backing file) confirms format, no data file and a bounded virtual size, and the backing
 *    reference is set with `qemu-img rebase -u` to the file chosen here: no archive's qcow2 is
 *    ever opened with a backing file of its own choosing;
 *  - the optional foreign layer (manifest.ts) must back onto `base.qcow2`, and then the lowest
 *    layers onto `foreign.qcow2` (else onto `base.qcow2`); it is kept as `image/foreign.qcow2`.
 *
 * The imported VM is a copy (Hyper-V's "import as a copy"): a new id, no link to a template or
 * another VM (the archive holds all of its disk), and identity.json, so its guest takes a fresh
 * identity at its first start, booted or restored (hostname its name, a new machine id, the MAC
 * of its new id): two imports of one archive never share them.
 *
 * Everything is written into a hidden folder beside the VMs (`.<name>.importing-<pid>-<time>`)
 * and renamed into place only when every check passed; any failure removes it. When the local
 * image cache holds the archive's base image (the same bytes), the VM uses it and the archive's
 * copy is hashed but not kept; otherwise the copy lives in the VM's `image/` folder.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';
import type { VmConfig } from '../common/config';
import { ErrorCode, SandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { validateVmName } from '../common/names';
import { ensureHostRoom } from '../client/hostRoom';
import { parseIndex, type CheckpointIndex } from '../service/checkpointTree';
import { readTar, TarError, type TarEntry } from '../sync/pull/tarFeed';
import { FOREIGN_ENTRY, entryKind, layerEntryName, MANIFEST_NAME, MAX_MANIFEST_BYTES, parseManifest, type Manifest, type ManifestEntry } from './manifest';
import { HEADER_BYTES, parseQcow2Header, Qcow2Error } from './qcow2Header';
import { imageFileSha256 } from './imageHashes';
import { writeJsonAtomic } from '../common/atomicWrite';
import type { NewIdentity } from '../service/clones';

export interface ImportOptions {
  vmsDir: string;
  /** The image cache (a base image with the archive's hash and bytes is reused from it). */
  imageCacheDir: string;
  qemuImg: string;
  /** The new VM's name; default: the archive's. */
  name?: string;
  /** True when a VM of that name exists (the service's view). */
  exists(name: string): boolean;
  progress?: (bytes: number, total: number, message: string) => void;
  signal?: AbortSignal;
}

export interface ImportResult {
  config: VmConfig;
  manifest: Manifest;
  /** The local base image was reused (the archive's copy not kept). */
  reusedImage: boolean;
  bytesWritten: number;
}

const GIB = 2 ** 30;

function refuse(message: string): SandboxError {
  return new SandboxError(ErrorCode.BadArgument, `${message}; nothing was imported`);
}

/** Reads the archive from `source` into a new VM folder; returns its configuration (not yet known to the service). */
export async function importArchive(source: AsyncIterable<Buffer>, opts: ImportOptions): Promise<ImportResult> {
  const tar = readTar(source)[Symbol.asyncIterator]();
  const next = async (): Promise<TarEntry | undefined> => {
    try {
      const r = await tar.next();
      return r.done ? undefined : r.value;
    } catch (err) {
      throw asArchiveError(err);
    }
  };
  const first = await next().catch((err) => {
    throw err instanceof SandboxError && /damaged/.test(err.message) ? refuse('not a sandboxvm VM archive: it is not a tar stream') : err;
  });
  if (!first || first.name !== MANIFEST_NAME || first.type !== '0') throw refuse('not a sandboxvm VM archive: it does not start with manifest.json');
  if (first.size > MAX_MANIFEST_BYTES) throw refuse(`not a usable VM archive: its manifest claims ${first.size} bytes (at most ${MAX_MANIFEST_BYTES})`);
  const manifest = parseManifest((await readAll(first.body)).toString('utf8'));
  const name = validateVmName(opts.name ?? manifest.vm.name);
  const finalDir = path.join(opts.vmsDir, name);
  if (opts.exists(name) || existsSync(finalDir)) {
    throw new SandboxError(ErrorCode.DuplicateName, `a VM named ${name} already exists; import under another name with \`sandboxvm import <file> --name <new name>\``);
  }
  const local = await localImage(opts.imageCacheDir, manifest);
  const kept = manifest.entries.filter((e) => !e.sameAs && !(local && isImage(e)));
  const toWrite = kept.reduce((s, e) => s + e.size, 0);
  await fs.mkdir(opts.vmsDir, { recursive: true, mode: 0o700 });
  ensureHostRoom(opts.vmsDir, toWrite, `importing ${name}`);

  const staging = path.join(opts.vmsDir, `.${name}.importing-${process.pid}-${Date.now()}`);
  await fs.mkdir(staging, { mode: 0o700 });
  try {
    const total = manifest.entries.reduce((s, e) => s + (e.sameAs ? 0 : e.size), 0);
    let done = 0;
    let lastReport = 0;
    for (const e of manifest.entries) {
      if (e.sameAs) continue;
      const entry = await next();
      if (!entry) throw refuse(`the archive ends before ${e.name} (truncated?)`);
      if (entry.name !== e.name) throw refuse(`the archive holds ${JSON.stringify(entry.name.slice(0, 100))} where its manifest lists ${e.name}`);
      if (entry.type !== '0') throw refuse(`${e.name} in the archive is not a regular file (a link or device)`);
      if (entry.size !== e.size) throw refuse(`${e.name} in the archive has ${entry.size} bytes, its manifest says ${e.size}`);
      const target = local && isImage(e) ? undefined : path.join(staging, entryKind(e.name)!.target);
      if (target) await fs.mkdir(path.dirname(target), { recursive: true, mode: 0o700 });
      const sha = await receive(entry.body, target, e, opts.signal, (n) => {
        done += n;
        if (Date.now() - lastReport >= 200) {
          lastReport = Date.now();
          opts.progress?.(done, total, `reading ${e.name}`);
        }
      });
      if (sha !== e.sha256) throw refuse(`${e.name} in the archive is damaged (its sha256 does not match the manifest)`);
    }
    const after = await next();
    if (after) throw refuse(`the archive holds ${JSON.stringify(after.name.slice(0, 100))}, which its manifest does not list`);
    for (const e of manifest.entries) {
      if (e.sameAs) await fs.link(path.join(staging, entryKind(e.sameAs)!.target), path.join(staging, entryKind(e.name)!.target));
    }
    opts.progress?.(total, total, 'checking the disks');
    await checkEpochs(staging, manifest);
    const index = await checkIndex(staging, manifest);
    const image = local ?? {
      kernel: path.join(finalDir, entryKind('image/vmlinuz')!.target),
      initrd: path.join(finalDir, entryKind('image/initrd.img')!.target),
      disk: path.join(finalDir, entryKind('disks/base.qcow2')!.target),
    };
    if (!local) await checkQcow2(opts.qemuImg, path.join(staging, entryKind('disks/base.qcow2')!.target), 'disks/base.qcow2', undefined, manifest.vm.diskGiB);
    const foreign = manifest.entries.some((e) => e.name === FOREIGN_ENTRY) ? entryKind(FOREIGN_ENTRY)!.target : undefined;
    if (foreign) {
      const file = path.join(staging, foreign);
      await checkQcow2(opts.qemuImg, file, FOREIGN_ENTRY, 'base.qcow2', manifest.vm.diskGiB);
      await qemuImg(opts.qemuImg, ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', image.disk, file]);
    }
    for (const [layer, parent] of backings(index)) {
      const file = path.join(staging, layer);
      const lowest = foreign ? 'foreign.qcow2' : 'base.qcow2';
      await checkQcow2(opts.qemuImg, file, layerEntryName(layer), parent === undefined ? lowest : path.posix.basename(layerEntryName(parent)), manifest.vm.diskGiB);
      await qemuImg(opts.qemuImg, ['rebase', '-u', '-f', 'qcow2', '-F', 'qcow2', '-b', parent !== undefined ? path.join(finalDir, parent) : foreign ? path.join(finalDir, foreign) : image.disk, file]);
    }
    if (!local) for (const f of ['vmlinuz', 'initrd.img', 'base.qcow2']) await fs.chmod(path.join(staging, 'image', f), 0o444);
    if (foreign) await fs.chmod(path.join(staging, foreign), 0o444);
    const identity: NewIdentity = { hostname: name, machineId: randomBytes(16).toString('hex') };
    await writeJsonAtomic(path.join(staging, VM_FILES.identity), identity);
    const v = manifest.vm;
    const config: VmConfig = {
      id: randomUUID(),
      name,
      cpus: v.cpus,
      memoryMiB: v.memoryMiB,
      diskGiB: v.diskGiB,
      image: { hash: v.imageHash, ...image },
      network: v.network,
      createdAt: v.createdAt,
      ...(v.ports ? { ports: v.ports } : {}),
    };
    await fs.writeFile(path.join(staging, VM_FILES.config), JSON.stringify(config, null, 2) + '\n', { mode: 0o600 });
    if (opts.exists(name) || existsSync(finalDir)) throw new SandboxError(ErrorCode.DuplicateName, `a VM named ${name} was created meanwhile; import under another name with --name`);
    await fs.rename(staging, finalDir);
    return { config, manifest, reusedImage: !!local, bytesWritten: toWrite };
  } catch (err) {
    await fs.rm(staging, { recursive: true, force: true });
    if ((err as NodeJS.ErrnoException).code === 'ENOSPC') throw new SandboxError(ErrorCode.DiskFull, `importing ${name} failed: the disk holding ${opts.vmsDir} is full; nothing was imported`);
    throw err;
  }
}

function isImage(e: ManifestEntry): boolean {
  const k = entryKind(e.name)!.kind;
  return k === 'kernel' || k === 'initrd' || k === 'base';
}

function asArchiveError(err: unknown): unknown {
  if (err instanceof TarError) return refuse(/ended/.test(err.message) ? `the archive is truncated (${err.message})` : `the archive is damaged (${err.message})`);
  return err;
}

async function readAll(body: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  try {
    for await (const p of body) parts.push(p);
  } catch (err) {
    throw asArchiveError(err);
  }
  return Buffer.concat(parts);
}

/** Streams an entry's body into `target` (or nowhere), returning its sha256. */
async function receive(body: AsyncIterable<Buffer>, target: string | undefined, e: ManifestEntry, signal: AbortSignal | undefined, onBytes: (n: number) => void): Promise<string> {
  const hash = createHash('sha256');
  const handle = target ? await fs.open(target, 'wx', 0o600) : undefined;
  try {
    for await (const piece of body) {
      if (signal?.aborted) throw new SandboxError(ErrorCode.Cancelled, 'the import was cancelled; nothing was imported');
      hash.update(piece);
      if (handle) await handle.write(piece);
      onBytes(piece.length);
    }
    if (handle) await handle.sync();
  } catch (err) {
    throw asArchiveError(err);
  } finally {
    await handle?.close();
  }
  void e;
  return hash.digest('hex');
}

/** The cached base image with the archive's recipe hash, when its three files have the archive's bytes. */
async function localImage(cacheDir: string, manifest: Manifest): Promise<{ kernel: string; initrd: string; disk: string } | undefined> {
  const dir = path.join(cacheDir, `base-${manifest.vm.imageHash.slice(0, 16)}`);
  const files = { kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), disk: path.join(dir, 'base.qcow2') };
  const want: [string, string][] = [
    [files.kernel, 'image/vmlinuz'],
    [files.initrd, 'image/initrd.img'],
    [files.disk, 'disks/base.qcow2'],
  ];
  for (const [file, name] of want) {
    const e = manifest.entries.find((x) => x.name === name)!;
    const size = await fs.stat(file).then((s) => s.size, () => -1);
    if (size !== e.size) return undefined;
  }
  for (const [file, name] of want) {
    if ((await imageFileSha256(file)) !== manifest.entries.find((x) => x.name === name)!.sha256) return undefined;
  }
  return files;
}

async function checkEpochs(dir: string, manifest: Manifest): Promise<void> {
  for (const e of manifest.entries) {
    if (entryKind(e.name)!.kind !== 'epoch') continue;
    const text = await fs.readFile(path.join(dir, entryKind(e.name)!.target), 'utf8');
    if (!/^[0-9a-f-]{36}\n?$/.test(text)) throw refuse(`${e.name} in the archive is not an epoch`);
  }
}

/**
 * The index (or the one-disk VM without one) checked against the archive: the layers it names are
 * exactly the archive's, its memory states exactly those of checkpoints with memory.
 */
async function checkIndex(dir: string, manifest: Manifest): Promise<CheckpointIndex | undefined> {
  const names = new Set(manifest.entries.map((e) => e.name));
  const layers = [...names].filter((n) => entryKind(n)!.kind === 'layer');
  if (!names.has('checkpoints.json')) {
    if (layers.length !== 1 || layers[0] !== 'disks/disk.qcow2') throw refuse('the archive has disk layers but no checkpoint index');
    return undefined;
  }
  let index: CheckpointIndex;
  try {
    index = parseIndex(await fs.readFile(path.join(dir, VM_FILES.checkpointIndex), 'utf8'));
  } catch (err) {
    throw refuse(`the archive's checkpoint index is invalid (${(err as Error).message})`);
  }
  if (index.pending) throw refuse('the archive\'s checkpoint index has an operation under way');
  const named = new Set([index.top ?? VM_FILES.disk, ...index.nodes.map((n) => n.layer)].map(layerEntryName));
  if (named.size !== index.nodes.length + 1) throw refuse('the archive\'s checkpoint index names one layer twice');
  for (const l of layers) if (!named.has(l)) throw refuse(`the archive holds ${l}, which its checkpoint index does not name`);
  for (const l of named) if (!names.has(l)) throw refuse(`the archive lacks ${l}, which its checkpoint index names`);
  const withMemory = new Set(index.nodes.filter((n) => n.memory).map((n) => n.id));
  for (const n of names) {
    const m = /^checkpoints\/([0-9a-f]{8})\//.exec(n);
    if (m && !withMemory.has(m[1])) throw refuse(`the archive holds ${n}, but that checkpoint has no memory state`);
  }
  for (const id of withMemory) if (!names.has(`checkpoints/${id}/memory.state`)) throw refuse(`the archive lacks the memory state of checkpoint ${id}`);
  return index;
}

/** Each layer of the VM's folder and the layer it sits on (undefined: the base image). */
function backings(index: CheckpointIndex | undefined): [string, string | undefined][] {
  if (!index) return [[VM_FILES.disk, undefined]];
  const byId = new Map(index.nodes.map((n) => [n.id, n]));
  const out: [string, string | undefined][] = index.nodes.map((n) => [n.layer, n.parent === undefined ? undefined : byId.get(n.parent)!.layer]);
  out.push([index.top ?? VM_FILES.disk, index.current === undefined ? undefined : byId.get(index.current)!.layer]);
  return out;
}

/** The qcow2 `file` is plain (header read here first), backs onto `expectedBacking` only (a sibling name) and is at most `diskGiB`. */
async function checkQcow2(qemuImgPath: string, file: string, name: string, expectedBacking: string | undefined, diskGiB: number): Promise<void> {
  const handle = await fs.open(file, 'r');
  const buf = Buffer.alloc(HEADER_BYTES);
  const { bytesRead } = await handle.read(buf, 0, HEADER_BYTES, 0).finally(() => handle.close());
  let header;
  try {
    header = parseQcow2Header(buf.subarray(0, bytesRead));
  } catch (err) {
    if (err instanceof Qcow2Error) throw refuse(`${name} in the archive is refused: ${err.message}`);
    throw err;
  }
  if (header.backing !== expectedBacking) {
    throw refuse(
      header.backing === undefined
        ? `${name} in the archive has no backing file, but its checkpoint index puts it on ${expectedBacking}`
        : `${name} in the archive names ${JSON.stringify(header.backing.slice(0, 200))} as its backing file; only ${expectedBacking ?? 'none'} (its parent inside the archive) is allowed`,
    );
  }
  const info = await qemuImgJson(qemuImgPath, ['info', '--output=json', '-f', 'qcow2', file]);
  const dataFile = (info['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data?.['data-file'];
  if (info.format !== 'qcow2' || dataFile !== undefined) throw refuse(`${name} in the archive is refused: QEMU reads it as ${String(info.format)}${dataFile !== undefined ? ' with an external data file' : ''}`);
  if ((info['backing-filename'] ?? undefined) !== expectedBacking) throw refuse(`${name} in the archive names another backing file than its checkpoint index says`);
  const size = info['virtual-size'];
  if (typeof size !== 'number' || size > diskGiB * GIB) throw refuse(`${name} in the archive is ${String(size)} bytes virtual, more than the VM's ${diskGiB} GiB disk`);
}

function qemuImg(file: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { timeout: 120_000, maxBuffer: 4 * 2 ** 20 }, (err, out, stderr) => {
      if (!err) return resolve(out);
      if (/No space left/i.test(stderr)) return reject(Object.assign(new Error(stderr.trim()), { code: 'ENOSPC' }));
      reject(new SandboxError(ErrorCode.Internal, `qemu-img ${args[0]} failed: ${stderr.trim() || err.message}`));
    }),
  );
}

async function qemuImgJson(file: string, args: string[]): Promise<Record<string, unknown>> {
  const out = await qemuImg(file, args).catch((err) => {
    throw refuse(`an archive disk is refused by qemu-img (${(err as Error).message.slice(0, 200)})`);
  });
  try {
    return JSON.parse(out) as Record<string, unknown>;
  } catch {
    throw refuse('qemu-img gave no readable answer about an archive disk');
  }
}
