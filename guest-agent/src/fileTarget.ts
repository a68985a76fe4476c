/**
 * Where a host `write` lands in the guest, and the temporary it is filled through.
 *
 * Target (cp semantics): a missing path or a regular file is written at that path; a symbolic link
 * to a regular file is written through (the link stays, its final target gets the bytes); a
 * directory, a link to one, a dangling link or anything else is refused. The host resolves
 * `<dir>/<basename>` before it opens the write.
 *
 * Temporaries are named `.<name>.sandboxvm-<pid>-<session>.partial` beside the target (same
 * directory, so the final rename is atomic). Each directory that holds one is recorded in a small
 * journal (fsynced before the temporary is created); at start the agent removes temporaries
 * matching the pattern in the recorded directories only, so a copy cut off by a power-off or a
 * crash leaves nothing once the agent is back. The journal holds only directories with a live
 * temporary plus the newest one, so it stays as small as the number of concurrent writes.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

/** The names of temporaries, on both sides (the host's use its pid as the tag). */
export const TEMPORARY_NAME = /^\..+\.sandboxvm-[0-9]+(-[0-9]+)?\.partial$/;

const JOURNAL = process.env.SANDBOXVM_TEMP_JOURNAL ?? '/var/lib/sandboxvm/temporary-dirs';
/** The journal is read up to this size at start; anything beyond is ignored. */
const MAX_JOURNAL_BYTES = 1024 * 1024;

export function temporaryName(file: string, tag: string): string {
  // Long names keep their start: the temporary must fit in NAME_MAX (255) too.
  return path.join(path.dirname(file), `.${path.basename(file).slice(0, 200)}.sandboxvm-${tag}.partial`);
}

/** Why a write to `file` is refused, or the path that receives its bytes. */
export function resolveWriteTarget(file: string): { target: string; existing?: fs.Stats } {
  const link = fs.lstatSync(file, { throwIfNoEntry: false });
  if (!link) return { target: file };
  if (link.isFile()) return { target: file, existing: link };
  if (link.isDirectory()) throw new Error('is a directory');
  if (!link.isSymbolicLink()) throw new Error('is not a regular file');
  const followed = fs.statSync(file, { throwIfNoEntry: false });
  if (!followed) throw new Error(`is a symbolic link to nothing (${fs.readlinkSync(file)}); not writing through it`);
  if (followed.isDirectory()) throw new Error('is a symbolic link to a directory');
  if (!followed.isFile()) throw new Error('is a symbolic link to something other than a regular file');
  return { target: fs.realpathSync(file), existing: followed };
}

/** A temporary being filled for one write. */
export interface Temporary {
  fd: number;
  path: string;
  /** The file it replaces at commit. */
  target: string;
  /** Set once committed or discarded. */
  settled?: boolean;
}

/**
 * Opens the temporary for a write to `file` (resolved as above), recorded in the journal first.
 * It takes the replaced file's owner. Throws with a message without the temporary's name.
 */
export function openTemporary(file: string, mode: number, tag: string): Temporary {
  const { target, existing } = resolveWriteTarget(file);
  const dir = path.dirname(target);
  const st = fs.statSync(dir, { throwIfNoEntry: false });
  if (!st) throw new Error(`no such directory ${dir}`);
  if (!st.isDirectory()) throw new Error(`${dir} is not a directory`);
  const tmp = temporaryName(target, tag);
  journal.track(dir);
  let fd: number;
  try {
    fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode & 0o7777);
  } catch (err) {
    journal.untrack(dir);
    throw new Error(describeFsError(err));
  }
  if (existing) {
    try {
      fs.fchownSync(fd, existing.uid, existing.gid);
    } catch {
      // kept as root's
    }
  }
  return { fd, path: tmp, target };
}

/** Renames a complete temporary over its target (its fd already closed). */
export function commitTemporary(t: Temporary): void {
  if (t.settled) return;
  t.settled = true;
  try {
    fs.renameSync(t.path, t.target);
  } catch (err) {
    fs.rmSync(t.path, { force: true });
    throw new Error(describeFsError(err));
  } finally {
    journal.untrack(path.dirname(t.target));
  }
}

/** Removes an abandoned temporary. Idempotent. */
export function discardTemporary(t: Temporary): void {
  if (t.settled) return;
  t.settled = true;
  fs.rmSync(t.path, { force: true });
  journal.untrack(path.dirname(t.target));
}

/** An fs error as a clause without any path in it (so no temporary's name reaches a user). */
export function describeFsError(err: unknown): string {
  const e = err as NodeJS.ErrnoException;
  const known: Record<string, string> = {
    ENOENT: 'no such file or directory',
    EACCES: 'permission denied',
    EPERM: 'operation not permitted',
    ENOSPC: 'no space left on the guest disk',
    EDQUOT: 'disk quota exceeded',
    EROFS: 'read-only file system',
    EISDIR: 'is a directory',
    ENOTDIR: 'a component of the path is not a directory',
    ENAMETOOLONG: 'the name is too long',
    EEXIST: 'already exists',
    EXDEV: 'crosses file systems',
    EIO: 'input/output error',
    ELOOP: 'too many levels of symbolic links',
  };
  if (e?.code && known[e.code]) return known[e.code];
  if (e?.code) return e.code;
  return String(e?.message ?? err);
}

class Journal {
  /** Directories with live temporaries, and how many. */
  private readonly live = new Map<string, number>();
  /** The directories the journal file names now. */
  private recorded = new Set<string>();

  constructor(private readonly file: string) {}

  track(dir: string): void {
    this.live.set(dir, (this.live.get(dir) ?? 0) + 1);
    if (this.recorded.has(dir)) return;
    this.recorded = new Set([...this.live.keys()]);
    this.write();
  }

  untrack(dir: string): void {
    const n = (this.live.get(dir) ?? 0) - 1;
    if (n > 0) this.live.set(dir, n);
    else this.live.delete(dir);
  }

  /** Removes temporaries left in the recorded directories by an earlier agent. Returns how many. */
  cleanStale(log: (m: string) => void): number {
    let text = '';
    try {
      const fd = fs.openSync(this.file, 'r');
      try {
        const buf = Buffer.alloc(MAX_JOURNAL_BYTES);
        text = buf.subarray(0, fs.readSync(fd, buf, 0, buf.length, 0)).toString('utf8');
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return 0;
    }
    let removed = 0;
    for (const dir of new Set(text.split('\n'))) {
      if (!path.isAbsolute(dir) || dir.includes('\0') || dir.length > 4096) continue;
      let names: string[];
      try {
        names = fs.readdirSync(dir);
      } catch {
        continue;
      }
      for (const name of names) {
        if (!TEMPORARY_NAME.test(name)) continue;
        const p = path.join(dir, name);
        if (!fs.lstatSync(p, { throwIfNoEntry: false })?.isFile()) continue;
        try {
          fs.unlinkSync(p);
          removed++;
        } catch (err) {
          log(`cannot remove the stale temporary ${p}: ${describeFsError(err)}`);
        }
      }
    }
    this.recorded = new Set();
    this.write();
    if (removed > 0) log(`removed ${removed} temporary file(s) left by an interrupted copy`);
    return removed;
  }

  /** Replaces the journal durably (the directories are on disk before any temporary in them). */
  private write(): void {
    const next = `${this.file}.new`;
    try {
      fs.mkdirSync(path.dirname(this.file), { recursive: true, mode: 0o700 });
      const fd = fs.openSync(next, 'w', 0o600);
      try {
        fs.writeSync(fd, [...this.recorded].map((d) => `${d}\n`).join(''));
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
      fs.renameSync(next, this.file);
      const dirFd = fs.openSync(path.dirname(this.file), 'r');
      try {
        fs.fsyncSync(dirFd);
      } finally {
        fs.closeSync(dirFd);
      }
    } catch {
      // Without the journal a cut-off copy may leave its temporary; the copy itself goes on.
    }
  }
}

const journal = new Journal(JOURNAL);

/** Called once at agent start: removes what interrupted writes of an earlier agent left. */
export function cleanStaleTemporaries(log: (m: string) => void): number {
  return journal.cleanStale(log);
}
