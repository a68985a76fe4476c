/**
 * Garbage collection of the image cache: base images (and templates) nothing uses any more.
 *
 * The cache is shared by several data homes (tests use their own SANDBOXVM_HOME with the same
 * cache; other checkouts build other recipes into it), so "in use" is decided from the disks
 * themselves, never from one home's list of VMs. An image is kept when any of these holds:
 *  - it is the current recipe's image (the caller names it);
 *  - a VM disk in a known home has it in its backing chain (qcow2 headers read here, no qemu-img):
 *    every home that ever ran a service on this cache is recorded in `homes/` (registerHome);
 *    or a running QEMU has it open (Linux: /proc/<pid>/fd; a running VM holds its chain open);
 *  - a reference to it is live: each VM created registers one naming its folder
 *    (registerImageUse: `refs/<hash16>/<key>.json`, beside the image, whose folder is never
 *    modified once published), and a reference is live while that folder has a disk whose chain
 *    holds the image, or while it is younger than REF_GRACE_MS (a VM being created has no disk yet);
 *  - a template kept (below) is built on it;
 *  - it was made before references existed (no `refs/<hash16>` folder) and the GC was not asked for
 *    explicitly (`sandboxvm image prune`): then only the disk scan of known homes protects it.
 * Templates (`templates/<id>/template.json`: `{"baseImage": {"hash": "<hash>", ...}}`) are removed when they are
 * not for the current image and no VM disk has one of their disks in its chain.
 * `sandboxvm image prune` also removes stage-1 folders no kept image was built from.
 *
 * The GC holds the build lock (build.lock) throughout, so it never races a build; a build under
 * way makes an automatic GC skip and an explicit one wait. An image goes by a rename out of its
 * name first; a reference registered meanwhile (found in the renamed folder) puts it back.
 */
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync, readdirSync, readFileSync, statSync, type Stats } from 'node:fs';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic, writeJsonAtomic } from '../common/atomicWrite';
import { ErrorCode, SandboxError } from '../common/errors';
import { tryBuildLock } from './baseImage';

/** A reference younger than this is live even without a disk (the VM is being created). */
export const REF_GRACE_MS = 10 * 60_000;

export interface GcItem {
  path: string;
  /** Allocated bytes on the host. */
  bytes: number;
  reason: string;
}

export interface GcResult {
  removed: GcItem[];
  kept: GcItem[];
  freedBytes: number;
  dryRun: boolean;
  /** Set when a build held the lock and the GC did not run (automatic GC only). */
  skipped?: string;
}

export interface GcOptions {
  cacheDir: string;
  /** The current recipe's stage-2 hash (full or its first 16 hex): never removed. */
  currentHash?: string;
  /** The current recipe's stage-1 hash, kept by prune. */
  currentStage1?: string;
  /** Homes to scan besides those recorded in homes/ (the caller's own). */
  homes?: string[];
  /** `sandboxvm image prune`: also images from before references, and unused stage-1 folders. */
  explicit: boolean;
  dryRun?: boolean;
  refGraceMs?: number;
  now?: number;
  log?: (message: string) => void;
}

// ---------------------------------------------------------------------------------------------
// qcow2 backing chains

const QCOW2_MAGIC = 0x514649fb;
const MAX_BACKING_NAME = 1023;
const MAX_CHAIN = 64;

/** The backing file a qcow2 image names, resolved against its folder; undefined when none or not a qcow2. */
export function readBackingFile(file: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch {
    return undefined;
  }
  try {
    const head = Buffer.alloc(20);
    if (readSync(fd, head, 0, 20, 0) < 20 || head.readUInt32BE(0) !== QCOW2_MAGIC) return undefined;
    const offset = Number(head.readBigUInt64BE(8));
    const size = head.readUInt32BE(16);
    if (offset === 0 || size === 0 || size > MAX_BACKING_NAME || !Number.isSafeInteger(offset)) return undefined;
    const name = Buffer.alloc(size);
    if (readSync(fd, name, 0, size, offset) < size) return undefined;
    const text = name.toString('utf8');
    if (text.includes('\0') || /^[a-z][a-z0-9+.-]*:/i.test(text)) return undefined; // protocols (nbd:, json:) are not files here
    return path.resolve(path.dirname(file), text);
  } finally {
    closeSync(fd);
  }
}

function statOf(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

function fileKey(st: Stats): string {
  return `${st.dev}:${st.ino}`;
}

/** The files below `file` in its backing chain (not `file` itself), as dev:ino keys. */
export function chainKeys(file: string): string[] {
  const keys: string[] = [];
  let at = readBackingFile(file);
  for (let depth = 0; at !== undefined && depth < MAX_CHAIN; depth++) {
    const st = statOf(at);
    if (!st) break;
    keys.push(fileKey(st));
    at = readBackingFile(at);
  }
  return keys;
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** The qcow2 files of a VM (or template) folder: at its top and under layers/. */
function diskFiles(dir: string): string[] {
  const files: string[] = [];
  for (const sub of ['', 'layers']) {
    const d = path.join(dir, sub);
    for (const f of list(d)) if (/\.qcow2(\.|$)/.test(f)) files.push(path.join(d, f));
  }
  return files;
}

/** Everything the disks in `dir` stand on (dev:ino of each backing file). */
function usedBy(dir: string): Set<string> {
  const used = new Set<string>();
  for (const f of diskFiles(dir)) for (const k of chainKeys(f)) used.add(k);
  return used;
}

// ---------------------------------------------------------------------------------------------
// Registration

function key16(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16);
}

/** The folder of the references to base image `hash16` (kept beside the image: its folder is never modified). */
export function refsDir(cacheDir: string, hash16: string): string {
  return path.join(cacheDir, 'refs', hash16);
}

/** Records that `home` uses this cache (the service does at start), so GC scans its VMs. Never throws. */
export async function registerHome(cacheDir: string, home: string): Promise<void> {
  try {
    await fs.mkdir(path.join(cacheDir, 'homes'), { recursive: true });
    const file = path.join(cacheDir, 'homes', key16(path.resolve(home)));
    if (statOf(file)) return;
    await writeFileAtomic(file, `${path.resolve(home)}\n`);
  } catch {
    // best effort: refs and the current home still protect its images
  }
}

/**
 * Records that the VM folder `vmDir` (its final path) is about to use the base image whose disk
 * is `imageDisk`. Call it before making the VM's disk. Throws when the image is gone (a GC took
 * it meanwhile): the caller asks for the image again.
 */
export async function registerImageUse(imageDisk: string, vmDir: string): Promise<void> {
  const image = path.dirname(imageDisk);
  const refs = refsDir(path.dirname(image), path.basename(image).replace(/^base-/, ''));
  try {
    await fs.mkdir(refs, { recursive: true, mode: 0o755 });
    await writeJsonAtomic(path.join(refs, `${key16(path.resolve(vmDir))}.json`), { vmDir: path.resolve(vmDir), at: new Date().toISOString() });
  } catch (err) {
    throw new SandboxError(ErrorCode.Internal, `cannot record the use of the base image ${path.dirname(imageDisk)} (${(err as Error).message}); it may have just been removed: try again`, { cause: err });
  }
  if (!statOf(imageDisk)) throw new SandboxError(ErrorCode.Internal, `the base image ${imageDisk} was removed meanwhile; try again`);
}

/** Drops the references `vmDir` has in any image of the cache (its VM is removed). Never throws. */
export async function dropImageUses(cacheDir: string, vmDir: string): Promise<void> {
  const name = `${key16(path.resolve(vmDir))}.json`;
  for (const image of list(path.join(cacheDir, 'refs'))) {
    await fs.rm(path.join(cacheDir, 'refs', image, name), { force: true }).catch(() => undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// The collection

/** Bytes removing `p` frees: files linked elsewhere too (nlink > 1) free nothing. */
function bytesOf(p: string): number {
  const st = statOf(p);
  if (!st) return 0;
  if (!st.isDirectory()) return st.nlink > 1 ? 0 : st.blocks * 512;
  return list(p).reduce((sum, f) => sum + bytesOf(path.join(p, f)), 0);
}

/**
 * Files QEMU processes of this user have open (Linux: /proc/<pid>/fd), as dev:ino keys: a running
 * VM holds its whole backing chain open, so a VM in a home this cache has never heard of is seen.
 */
function openByQemu(): Set<string> {
  const keys = new Set<string>();
  for (const pid of list('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    let comm = '';
    try {
      comm = readFileSync(`/proc/${pid}/comm`, 'utf8');
    } catch {
      continue;
    }
    if (!comm.startsWith('qemu')) continue;
    for (const fd of list(`/proc/${pid}/fd`)) {
      const st = statOf(`/proc/${pid}/fd/${fd}`);
      if (st?.isFile()) keys.add(fileKey(st));
    }
  }
  return keys;
}

function knownHomes(cacheDir: string, extra: readonly string[]): string[] {
  const homes = new Set(extra.map((h) => path.resolve(h)));
  for (const f of list(path.join(cacheDir, 'homes'))) {
    try {
      const home = readFileSync(path.join(cacheDir, 'homes', f), 'utf8').trim();
      if (path.isAbsolute(home)) homes.add(home);
    } catch {
      // unreadable: skipped
    }
  }
  return [...homes];
}

interface RefRecord {
  file: string;
  vmDir?: string;
  mtimeMs: number;
}

function readRefs(dir: string): RefRecord[] | undefined {
  if (!statOf(dir)?.isDirectory()) return undefined;
  return list(dir)
    .filter((f) => f.endsWith('.json'))
    .map((f) => {
      const file = path.join(dir, f);
      let vmDir: string | undefined;
      try {
        const v = JSON.parse(readFileSync(file, 'utf8')).vmDir;
        if (typeof v === 'string' && path.isAbsolute(v)) vmDir = v;
      } catch {
        // malformed: judged by its age alone
      }
      return { file, vmDir, mtimeMs: statOf(file)?.mtimeMs ?? 0 };
    });
}

/**
 * Removes what nothing uses (see the top of this file); with `dryRun` only says what it would.
 * An automatic run (`explicit: false`) skips when a build holds the lock; an explicit one waits
 * up to 10 minutes for it.
 */
export async function collectImages(opts: GcOptions): Promise<GcResult> {
  const cacheDir = path.resolve(opts.cacheDir);
  const result: GcResult = { removed: [], kept: [], freedBytes: 0, dryRun: !!opts.dryRun };
  if (!statOf(cacheDir)?.isDirectory()) return result;
  const release = await tryBuildLock(cacheDir, opts.explicit ? 10 * 60_000 : 0);
  if (!release) return { ...result, skipped: 'a base image build is under way' };
  try {
    await collect(cacheDir, opts, result);
  } finally {
    await release();
  }
  return result;
}

async function collect(cacheDir: string, opts: GcOptions, result: GcResult): Promise<void> {
  const log = opts.log ?? (() => undefined);
  const now = opts.now ?? Date.now();
  const grace = opts.refGraceMs ?? REF_GRACE_MS;
  const current16 = opts.currentHash?.slice(0, 16);
  const keep = (p: string, reason: string) => result.kept.push({ path: p, bytes: bytesOf(p), reason });
  const remove = async (p: string, reason: string, after?: () => Promise<boolean>) => {
    const bytes = bytesOf(p);
    if (!opts.dryRun) {
      if (after && !(await after())) return;
      log(`image GC: removed ${p} (${reason})`);
    }
    result.removed.push({ path: p, bytes, reason });
    result.freedBytes += bytes;
  };

  // Leftovers of a GC killed mid-removal.
  for (const f of list(cacheDir)) if (f.startsWith('.trash-') && !opts.dryRun) await fs.rm(path.join(cacheDir, f), { recursive: true, force: true });

  // Every VM disk in every known home, with what its chain stands on.
  const homes = knownHomes(cacheDir, opts.homes ?? []);
  const vmUse = new Map<string, string>(); // dev:ino -> a VM folder using it
  for (const home of homes) {
    const vms = path.join(home, 'vms');
    if (!statOf(home)) {
      if (!opts.dryRun) await fs.rm(path.join(cacheDir, 'homes', key16(home)), { force: true });
      continue;
    }
    for (const vm of list(vms)) for (const k of usedBy(path.join(vms, vm))) if (!vmUse.has(k)) vmUse.set(k, path.join(vms, vm));
  }

  for (const k of openByQemu()) if (!vmUse.has(k)) vmUse.set(k, 'a running QEMU');

  // Templates: kept when for the current image or used by a VM; their base images with them.
  const templateUse = new Map<string, string>(); // base hash16 -> template folder
  const used = new Map(vmUse);
  const templatesDir = path.join(cacheDir, 'templates');
  for (const id of list(templatesDir)) {
    const dir = path.join(templatesDir, id);
    if (!statOf(dir)?.isDirectory() || id.startsWith('.')) continue;
    let baseImage: string | undefined;
    try {
      // `{hash, disk, kernel, initrd}` (service/templates.ts), or the hash alone.
      const raw = JSON.parse(readFileSync(path.join(dir, 'template.json'), 'utf8')).baseImage;
      const b = typeof raw === 'object' && raw !== null ? raw.hash : raw;
      if (typeof b === 'string' && /^[0-9a-f]{16,64}$/.test(b)) baseImage = b.slice(0, 16);
    } catch {
      // no or malformed template.json: a template being made, or not ours to judge
    }
    if (!baseImage) {
      keep(dir, 'its template.json is missing or unreadable (left alone)');
      continue;
    }
    const own = diskFiles(dir).map(statOf).filter((s): s is Stats => !!s).map(fileKey);
    const user = own.map((k) => vmUse.get(k)).find((v) => v !== undefined);
    if (baseImage === current16 || user) {
      keep(dir, baseImage === current16 ? 'the template of the current image' : `used by ${user}`);
      templateUse.set(baseImage, dir);
      for (const k of usedBy(dir)) if (!used.has(k)) used.set(k, dir);
      continue;
    }
    await remove(dir, 'a template of an older image that no VM uses', async () => {
      await fs.rm(dir, { recursive: true, force: true });
      return true;
    });
  }

  // Base images.
  const keptStage1 = new Set<string>(opts.currentStage1 ? [opts.currentStage1.slice(0, 16)] : []);
  for (const name of list(cacheDir).sort()) {
    const m = /^base-([0-9a-f]{16})$/.exec(name);
    if (!m) continue;
    const dir = path.join(cacheDir, name);
    const keepIt = (reason: string) => {
      keep(dir, reason);
      try {
        const s1 = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')).stage1Hash;
        if (typeof s1 === 'string') keptStage1.add(s1.slice(0, 16));
      } catch {
        // no manifest: its stage 1 is not known
      }
    };
    if (m[1] === current16) {
      keepIt('the current image');
      continue;
    }
    const diskSt = statOf(path.join(dir, 'base.qcow2'));
    const user = diskSt ? used.get(fileKey(diskSt)) : undefined;
    if (user) {
      keepIt(`used by ${user}`);
      continue;
    }
    if (templateUse.has(m[1])) {
      keepIt(`template ${templateUse.get(m[1])} is built on it`);
      continue;
    }
    const refs = readRefs(refsDir(cacheDir, m[1]));
    if (refs === undefined && !opts.explicit) {
      keepIt('made before images recorded their VMs and no VM in a known home uses it; `sandboxvm image prune` removes it');
      continue;
    }
    const live: string[] = [];
    for (const ref of refs ?? []) {
      const inUse = ref.vmDir !== undefined && diskSt !== undefined && usedBy(ref.vmDir).has(fileKey(diskSt));
      if (inUse) live.push(`used by ${ref.vmDir}`);
      else if (now - ref.mtimeMs < grace) live.push(`${ref.vmDir ?? 'a VM'} is being created`);
      else if (!opts.dryRun) await fs.rm(ref.file, { force: true });
    }
    if (live.length > 0) {
      keepIt(live[0]);
      continue;
    }
    const trash = path.join(cacheDir, `.trash-${name}-${process.pid}`);
    await remove(dir, refs === undefined ? 'no VM in a known home uses it' : 'no VM uses it any more', async () => {
      await fs.rename(dir, trash);
      // A VM registered meanwhile (a create writes its reference, then checks the image is there):
      // put it back. A create that checked after the rename failed and made nothing.
      const late = (readRefs(refsDir(cacheDir, m[1])) ?? []).filter((r) => now - r.mtimeMs < grace || r.mtimeMs >= now);
      if (late.length > 0) {
        await fs.rename(trash, dir);
        keepIt(`${late[0].vmDir ?? 'a VM'} registered while it was being removed`);
        return false;
      }
      await fs.rm(trash, { recursive: true, force: true });
      await fs.rm(refsDir(cacheDir, m[1]), { recursive: true, force: true });
      await fs.rm(path.join(cacheDir, `build-${m[1]}.log`), { force: true });
      return true;
    });
  }

  // References to images that are gone (a create that found its image removed wrote one).
  if (!opts.dryRun) {
    for (const h of list(path.join(cacheDir, 'refs'))) if (!statOf(path.join(cacheDir, `base-${h}`))) await fs.rm(refsDir(cacheDir, h), { recursive: true, force: true });
  }

  if (!opts.explicit) return;
  for (const name of list(cacheDir).sort()) {
    const m = /^stage1-([0-9a-f]{16})$/.exec(name);
    if (!m) continue;
    const dir = path.join(cacheDir, name);
    if (keptStage1.has(m[1])) keep(dir, 'a kept image was built from it');
    else
      await remove(dir, 'no kept image was built from it (a rebuild of that recipe makes it again)', async () => {
        await fs.rm(dir, { recursive: true, force: true });
        return true;
      });
  }
}
