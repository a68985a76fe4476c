/**
 * Every write of a pull into a host folder goes through here. Contract:
 *
 * - Nothing is written outside the folder (`root`). Paths are relative, checked name by name
 *   (hostPath.ts), and walked one directory at a time without following links: each directory is
 *   opened with O_DIRECTORY|O_NOFOLLOW, so a link (or anything not a directory) on the way is
 *   refused, never followed.
 * - On Linux the walk is anchored: every directory is held open and every later step (open,
 *   mkdir, symlink, rename, unlink) names its entry through `/proc/self/fd/<dirfd>/<name>`, which
 *   the kernel resolves to the directory held open, not to whatever its path names now (openat and
 *   renameat semantics without native code). A directory swapped for a link after it was checked
 *   cannot redirect a write.
 * - Where /proc is missing (macOS, Windows), the walk is checked instead: path strings, each
 *   component lstat'ed; after the data is written, the parent is walked again and must still be
 *   the directory (dev+ino) that was checked and hold our temporary (dev+ino of the open file),
 *   else the file is refused. Residual race, stated honestly: between that last check and the
 *   rename(2) (microseconds), a process on the host that can write in the folder could swap a
 *   directory for a link and have the rename land through it. The guest alone cannot do this: it
 *   has no way to write in the host folder except through this writer, which never makes a link
 *   that leads out. Either mode: a directory of the folder moved elsewhere by a host process
 *   while the pull runs is followed there (as any program's open directory would be).
 * - Files are written to a temporary beside the destination (`.sandboxvm-pull-<pid>-<n>.partial`,
 *   O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600 while written) and renamed over it when complete: a
 *   reader sees the old file or the new one, never half of one. A failure removes the temporary.
 * - Never a device file, FIFO or socket (nothing here can make one). Modes keep only the owner's
 *   bits and read/execute for group and others (mode & 0o755): no setuid, setgid, sticky bit,
 *   nor group/other write. The umask applies on top.
 * - A link is made only when its text stays inside the folder (`linkTextStaysInside`: never
 *   absolute, `..`s only first) and, followed through what the folder holds now (links made by
 *   others included), it still resolves inside.
 * - Bounded (limits.ts): a file larger than maxFileBytes, a pull past maxTotalBytes or maxEntries,
 *   or a write that would take the host filesystem below its free-space floor is refused; a file
 *   that sends more bytes than announced is cut off and refused.
 *
 * Refusals are `Refused` errors with one clause saying why; the caller reports them per path and
 * goes on. Anything else thrown is a host failure (a full disk, permissions).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { checkName, checkRelPath, linkTextStaysInside, printable } from './hostPath';
import { DEFAULT_LIMITS, freeFloor, freeSpace, type PullLimits } from './limits';

/** An entry the writer will not write, with why (completes "<path> was refused: ..."). */
export class Refused extends Error {
  constructor(readonly reason: string) {
    super(reason);
    this.name = 'Refused';
  }
}

/** Points where tests act as an adversary on the host (swap a directory for a link, fill the disk). */
export interface WriterHooks {
  /** The temporary is open, nothing written yet. */
  afterOpen?(rel: string): void | Promise<void>;
  /** The data is written; the last check and the rename come next. */
  beforeRename?(rel: string): void | Promise<void>;
  /** After the last check, just before the rename: the residual window of the checked walk. */
  afterCheck?(rel: string): void;
}

export interface WriterOptions {
  limits?: Partial<PullLimits>;
  /** Force the checked (path) walk even where /proc anchors directories (tests of both modes). */
  anchored?: boolean;
  hooks?: WriterHooks;
}

/** What the caller decides once a file's bytes are in: keep it under its name or another, or drop it. */
export type CommitDecision = { as: string } | 'skip';

export interface WrittenFile {
  /** The path it was committed as (relative), or undefined when skipped. */
  rel?: string;
  bytes: number;
  sha256: string;
  /** The host file's identity after the rename (for the base). */
  stats?: fs.Stats;
}

interface Dir {
  fd: number;
  dev: number;
  ino: number;
  rel: string;
  stale?: boolean;
  /** Writes in flight through it: its fd is closed only once none is (a reused fd number would name another folder). */
  refs: number;
  evicted?: boolean;
}

const DIR_FLAGS = fs.constants.O_RDONLY | fs.constants.O_DIRECTORY | fs.constants.O_NOFOLLOW;
const TEMP_FLAGS = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_NOFOLLOW;
/** Directories held open at once; beyond it the cache is emptied (the root stays). */
const MAX_OPEN_DIRS = 128;
/** Free space is checked again after this many bytes of one file. */
const FREE_CHECK_EVERY = 64 * 2 ** 20;
/** Links followed while checking where a new link leads. */
const MAX_LINK_HOPS = 40;

let temporaryCount = 0;

export const TEMPORARY_PATTERN = /^\.sandboxvm-pull-[0-9]+-[0-9]+\.partial$/;

export class SafeHostWriter {
  readonly limits: PullLimits;
  readonly anchored: boolean;
  /** Bytes committed and entries made (files, folders, links) by this writer. */
  bytes = 0;
  entries = 0;
  /** Bytes announced by writes in flight (so parallel writes can't overshoot maxTotalBytes together). */
  private reserved = 0;
  private readonly dirs = new Map<string, Dir>();
  private readonly rootDir: Dir;
  private closed = false;

  /**
   * Opens the folder `root` (an existing directory; the user's own path, links in it followed
   * once here and never again).
   */
  constructor(readonly root: string, private readonly options: WriterOptions = {}) {
    this.limits = { ...DEFAULT_LIMITS, ...options.limits };
    const real = fs.realpathSync(root);
    const fd = fs.openSync(real, DIR_FLAGS);
    const st = fs.fstatSync(fd);
    this.rootDir = { fd, dev: st.dev, ino: st.ino, rel: '', refs: 1 };
    this.root = real;
    const probe = process.platform === 'linux' ? fs.statSync(`/proc/self/fd/${fd}`, { throwIfNoEntry: false }) : undefined;
    const canAnchor = probe !== undefined && probe.ino === st.ino && probe.dev === st.dev;
    this.anchored = canAnchor && options.anchored !== false;
  }

  /** Closes every directory held open. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dropDirCache();
    fs.closeSync(this.rootDir.fd);
  }

  /** What is at `rel` now (lstat), undefined when nothing is; Refused when the way there is not plain directories. */
  stat(rel: string): fs.Stats | undefined {
    this.checkRel(rel);
    const { dir, name } = this.parent(rel, false);
    if (!dir) return undefined;
    return fs.lstatSync(this.at(dir, name), { throwIfNoEntry: false });
  }

  /** The sha256 of the regular file at `rel` (never through a link), or undefined when none is there. */
  async hashFile(rel: string): Promise<string | undefined> {
    this.checkRel(rel);
    const { dir, name } = this.parent(rel, false);
    if (!dir) return undefined;
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(this.at(dir, name), fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
    } catch (err) {
      if (['ENOENT', 'ELOOP', 'EISDIR'].includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    }
    try {
      if (!(await handle.stat()).isFile()) return undefined;
      const hash = crypto.createHash('sha256');
      for await (const chunk of handle.createReadStream({ autoClose: false })) hash.update(chunk as Buffer);
      return hash.digest('hex');
    } finally {
      await handle.close();
    }
  }

  /** The target of the link at `rel` (never through a link on the way), or undefined when no link is there. */
  readlink(rel: string): string | undefined {
    const st = this.stat(rel);
    if (!st?.isSymbolicLink()) return undefined;
    const { dir, name } = this.parent(rel, false);
    return fs.readlinkSync(this.at(dir!, name));
  }

  /** Makes the folder `rel` and any missing folder above it (0755). Refused if something not a folder is there. */
  mkdir(rel: string): void {
    this.checkRel(rel);
    this.openDir(rel.split('/'), true);
  }

  /** Refused when a file `rel` of `announced` bytes would be refused on its size or path alone (before anything is read). */
  precheck(rel: string, announced: number): void {
    this.checkRel(rel);
    if (!Number.isSafeInteger(announced) || announced < 0) throw new Refused('has no valid size');
    if (announced > this.limits.maxFileBytes) throw new Refused(`is ${describeSize(announced)}, over the ${describeSize(this.limits.maxFileBytes)} limit for one file`);
    if (this.bytes + this.reserved + announced > this.limits.maxTotalBytes) throw new Refused(`would take the pull past its ${describeSize(this.limits.maxTotalBytes)} limit`);
  }

  /**
   * Writes `source` as the file `rel`: at most `announced` bytes (what the guest said the file
   * holds), within the limits. `decide` is asked once the bytes are in (with their sha256) where
   * they go: `{as: rel}` (the same path or another in the same folder, e.g. a conflict copy) or
   * 'skip'. An existing file or link at the destination is replaced; a folder or anything else is
   * Refused. Resolves with what was written.
   */
  async writeFile(rel: string, source: AsyncIterable<Buffer>, options: { announced: number; mode: number; decide?: (sha256: string, bytes: number) => CommitDecision | Promise<CommitDecision> }): Promise<WrittenFile> {
    const { announced } = options;
    this.precheck(rel, announced);
    this.countEntry();
    this.reserved += announced;
    let dir: Dir | undefined;
    let written: WrittenFile | undefined;
    try {
      this.checkFree(announced);
      const parent = this.parent(rel, true);
      dir = parent.dir!;
      this.checkReplaceable(dir, parent.name, rel);
      dir.refs++;
      written = await this.writeInto(dir, parent.name, rel, source, options);
      return written;
    } finally {
      this.reserved -= announced;
      if (written?.rel) this.bytes += written.bytes;
      else this.entries--;
      if (dir) this.release(dir);
    }
  }

  private async writeInto(dir: Dir, name: string, rel: string, source: AsyncIterable<Buffer>, options: { announced: number; mode: number; decide?: (sha256: string, bytes: number) => CommitDecision | Promise<CommitDecision> }): Promise<WrittenFile> {
    const { announced } = options;
    const tmpName = `.sandboxvm-pull-${process.pid}-${++temporaryCount}.partial`;
    const tmpPath = this.at(dir!, tmpName);
    const handle = await fs.promises.open(tmpPath, TEMP_FLAGS, 0o600);
    let committed = false;
    try {
      const mine = await handle.stat();
      await this.options.hooks?.afterOpen?.(rel);
      const hash = crypto.createHash('sha256');
      let bytes = 0;
      let sinceCheck = 0;
      for await (const chunk of source) {
        bytes += chunk.length;
        if (bytes > announced) throw new Refused(`sent more than the ${announced} bytes it announced`);
        hash.update(chunk);
        await handle.write(chunk, 0, chunk.length, bytes - chunk.length);
        sinceCheck += chunk.length;
        if (sinceCheck >= FREE_CHECK_EVERY) {
          sinceCheck = 0;
          this.checkFree(announced - bytes);
        }
      }
      if (bytes !== announced) throw new Refused(`sent ${bytes} bytes, not the ${announced} it announced (it changed during the pull)`);
      const sha256 = hash.digest('hex');
      this.checkStillThere(dir!, tmpName, mine);
      const decision = options.decide ? await options.decide(sha256, bytes) : { as: rel };
      if (decision === 'skip') return { bytes, sha256 };
      const finalName = this.sameFolderName(rel, decision.as);
      if (finalName !== name) this.checkReplaceable(dir!, finalName, decision.as);
      await handle.chmod(options.mode & 0o755);
      await this.options.hooks?.beforeRename?.(rel);
      this.checkStillThere(dir!, tmpName, mine);
      this.options.hooks?.afterCheck?.(rel);
      fs.renameSync(tmpPath, this.at(dir!, finalName));
      committed = true;
      const stats = fs.lstatSync(this.at(dir!, finalName));
      if (stats.ino !== mine.ino || stats.dev !== mine.dev) throw new Refused('was replaced by something else as it was written');
      return { rel: decision.as, bytes, sha256, stats };
    } finally {
      await handle.close().catch(() => undefined);
      // By path only while the path still leads to the folder we made it in (checked mode).
      if (!committed && (this.anchored || this.walkByPath(dir!.rel)?.ino === dir!.ino)) fs.rmSync(tmpPath, { force: true });
      // A folder found replaced is opened afresh next time (and then meets what replaced it).
      if (dir!.stale && dir!.rel !== '') this.forgetDirsUnder(dir!.rel);
    }
  }

  /** Makes the link `rel -> target` when it stays inside the folder (see the contract); never replaces anything. */
  symlink(rel: string, target: string): void {
    this.checkRel(rel);
    if (target.startsWith('/')) throw new Refused(`is a link to an absolute path (${printable(target, 120)})`);
    if (!linkTextStaysInside(rel, target)) throw new Refused(`is a link that leads out of the folder (${printable(target, 120)})`);
    if (!this.resolve(rel.split('/').slice(0, -1), target, 0)) throw new Refused(`is a link that leads out of the folder through a link already there (${printable(target, 120)})`);
    this.countEntry();
    const { dir, name } = this.parent(rel, true);
    if (fs.lstatSync(this.at(dir!, name), { throwIfNoEntry: false })) throw new Refused('is a link where the host folder already has something');
    fs.symlinkSync(target, this.at(dir!, name));
  }

  /** Removes the file or link `rel` (never a folder). False when nothing was there. */
  remove(rel: string): boolean {
    this.checkRel(rel);
    const { dir, name } = this.parent(rel, false);
    if (!dir) return false;
    const st = fs.lstatSync(this.at(dir, name), { throwIfNoEntry: false });
    if (!st) return false;
    if (!st.isFile() && !st.isSymbolicLink()) throw new Refused('is not a file or a link on the host; not removed');
    fs.unlinkSync(this.at(dir, name));
    return true;
  }

  /** Removes the folder `rel` if it is empty. True when removed. */
  removeEmptyDir(rel: string): boolean {
    this.checkRel(rel);
    const { dir, name } = this.parent(rel, false);
    if (!dir) return false;
    const full = this.at(dir, name);
    const st = fs.lstatSync(full, { throwIfNoEntry: false });
    if (!st?.isDirectory()) return false;
    this.forgetDirsUnder(rel);
    try {
      fs.rmdirSync(full);
      return true;
    } catch {
      return false;
    }
  }

  /** The host path of `rel` for messages (never used to write). */
  display(rel: string): string {
    return path.join(this.root, ...rel.split('/'));
  }

  // ---- internals ------------------------------------------------------------------------------

  private checkRel(rel: string): void {
    if (this.closed) throw new Error('the writer is closed');
    const why = checkRelPath(rel);
    if (why) throw new Refused(why);
  }

  private countEntry(): void {
    if (this.entries + 1 > this.limits.maxEntries) throw new Refused(`would take the pull past its limit of ${this.limits.maxEntries} entries`);
    this.entries++;
  }

  private checkFree(bytes: number): void {
    const { free, size } = freeSpace(this.root);
    const floor = freeFloor(this.limits, size);
    if (free - bytes < floor) throw new Refused(`would leave less than ${describeSize(floor)} free on the host's disk (${describeSize(free)} free)`);
  }

  /** The name of `as` if it is in the same folder as `rel` (conflict copies are). */
  private sameFolderName(rel: string, as: string): string {
    const a = rel.split('/');
    const b = as.split('/');
    const why = checkRelPath(as);
    if (why || a.length !== b.length || a.slice(0, -1).join('/') !== b.slice(0, -1).join('/')) throw new Error(`internal: ${as} is not beside ${rel}`);
    return b[b.length - 1];
  }

  private checkReplaceable(dir: Dir, name: string, rel: string): void {
    const there = fs.lstatSync(this.at(dir, name), { throwIfNoEntry: false });
    if (!there || there.isFile() || there.isSymbolicLink()) return;
    throw new Refused(there.isDirectory() ? `is a file where the host folder has a folder (${printable(rel)})` : 'is a file where the host folder has a device, FIFO or socket');
  }

  /** Our temporary is still in the directory we checked, and that directory is still at its path. */
  private checkStillThere(dir: Dir, tmpName: string, mine: fs.Stats): void {
    const again = this.walkByPath(dir.rel);
    if (!again || again.dev !== dir.dev || again.ino !== dir.ino) {
      dir.stale = true;
      throw new Refused('had its host folder replaced during the pull (a link swapped in?); not written');
    }
    const tmp = fs.lstatSync(this.at(dir, tmpName), { throwIfNoEntry: false });
    if (!tmp || tmp.ino !== mine.ino || tmp.dev !== mine.dev) throw new Refused('had its temporary replaced during the pull; not written');
  }

  /** lstat of each component from the root by path: the directory's identity, or undefined if it is not a plain directory chain. */
  private walkByPath(rel: string): fs.Stats | undefined {
    let p = this.root;
    let st = fs.lstatSync(p);
    if (st.dev !== this.rootDir.dev || st.ino !== this.rootDir.ino) return undefined;
    if (rel === '') return st;
    for (const name of rel.split('/')) {
      p = path.join(p, name);
      const next = fs.lstatSync(p, { throwIfNoEntry: false });
      if (!next?.isDirectory()) return undefined;
      st = next;
    }
    return st;
  }

  /** The parent directory of `rel` (made when `create`), or dir undefined when it does not exist. */
  private parent(rel: string, create: boolean): { dir?: Dir; name: string } {
    const parts = rel.split('/');
    const name = parts.pop()!;
    return { dir: this.openDir(parts, create), name };
  }

  /** Opens (and caches) the directory `parts`, component by component, never through a link. */
  private openDir(parts: string[], create: boolean): Dir | undefined {
    let dir = this.rootDir;
    for (let i = 0; i < parts.length; i++) {
      const rel = parts.slice(0, i + 1).join('/');
      const cached = this.dirs.get(rel);
      if (cached) {
        dir = cached;
        continue;
      }
      const next = this.openChild(dir, parts[i], rel, create);
      if (!next) return undefined;
      dir = next;
    }
    return dir;
  }

  private openChild(parent: Dir, name: string, rel: string, create: boolean): Dir | undefined {
    const why = checkName(name);
    if (why) throw new Refused(why);
    const p = this.at(parent, name);
    let fd: number;
    try {
      fd = fs.openSync(p, DIR_FLAGS);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') {
        if (!create) return undefined;
        this.countEntry();
        try {
          fs.mkdirSync(p, 0o755);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
        }
        return this.openChild(parent, name, rel, false);
      }
      if (code === 'ELOOP' || code === 'ENOTDIR') throw new Refused(`is under ${printable(rel)}, which is a link or not a folder on the host; nothing is written through it`);
      throw err;
    }
    const st = fs.fstatSync(fd);
    if (!st.isDirectory()) {
      fs.closeSync(fd);
      throw new Refused(`is under ${printable(rel)}, which is not a folder on the host`);
    }
    if (!this.anchored) {
      // Checked mode: the path may have gone through a link swapped in on the way; the fd says where we are.
      const byPath = this.walkByPath(rel);
      if (!byPath || byPath.ino !== st.ino || byPath.dev !== st.dev) {
        fs.closeSync(fd);
        throw new Refused(`is under ${printable(rel)}, which changed while it was opened (a link swapped in?)`);
      }
    }
    if (this.dirs.size >= MAX_OPEN_DIRS) this.dropDirCache();
    const dir: Dir = { fd, dev: st.dev, ino: st.ino, rel, refs: 0 };
    this.dirs.set(rel, dir);
    return dir;
  }

  private dropDirCache(): void {
    for (const d of this.dirs.values()) this.evict(d);
    this.dirs.clear();
  }

  private forgetDirsUnder(rel: string): void {
    for (const [key, d] of this.dirs) {
      if (key === rel || key.startsWith(`${rel}/`)) {
        this.evict(d);
        this.dirs.delete(key);
      }
    }
  }

  private evict(d: Dir): void {
    d.evicted = true;
    if (d.refs === 0) fs.closeSync(d.fd);
  }

  private release(d: Dir): void {
    d.refs--;
    if (d.evicted && d.refs === 0) fs.closeSync(d.fd);
  }

  /** The path naming `name` in `dir`: through the open directory when anchored, else by path. */
  private at(dir: Dir, name: string): string {
    if (this.anchored) return `/proc/self/fd/${dir.fd}/${name}`;
    return dir.rel === '' ? path.join(this.root, name) : path.join(this.root, ...dir.rel.split('/'), name);
  }

  /**
   * Where `target`, followed from the folder `from` (names relative to the root) through what the
   * host folder holds now, leads: the names from the root, or undefined when it leaves the folder
   * (a `..` above the root, an absolute target, a `..` after a name not there yet, more than
   * MAX_LINK_HOPS links). Names not there yet count as inside: whatever is made there later goes
   * through this writer.
   */
  private resolve(from: string[], target: string, hops: number): string[] | undefined {
    if (target.startsWith('/') || hops > MAX_LINK_HOPS) return undefined;
    let at = [...from];
    let missing = false;
    for (const part of target.split('/')) {
      if (part === '' || part === '.') continue;
      if (part === '..') {
        if (missing || at.length === 0) return undefined;
        at.pop();
        continue;
      }
      if (checkName(part)) return undefined;
      if (missing) {
        at.push(part);
        continue;
      }
      const rel = [...at, part].join('/');
      let st: fs.Stats | undefined;
      try {
        st = this.stat(rel);
      } catch (err) {
        if (err instanceof Refused) return undefined;
        throw err;
      }
      if (!st) {
        missing = true;
        at.push(part);
      } else if (st.isSymbolicLink()) {
        const { dir } = this.parent(rel, false);
        const resolved = this.resolve(at, fs.readlinkSync(this.at(dir!, part)), hops + 1);
        if (!resolved) return undefined;
        at = resolved;
      } else at.push(part);
    }
    return at;
  }
}

export function describeSize(bytes: number): string {
  if (bytes >= 2 ** 40) return `${(bytes / 2 ** 40).toFixed(bytes % 2 ** 40 ? 1 : 0)} TiB`;
  if (bytes >= 2 ** 30) return `${(bytes / 2 ** 30).toFixed(bytes % 2 ** 30 ? 1 : 0)} GiB`;
  if (bytes >= 2 ** 20) return `${(bytes / 2 ** 20).toFixed(bytes % 2 ** 20 ? 1 : 0)} MiB`;
  if (bytes >= 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${bytes} bytes`;
}
