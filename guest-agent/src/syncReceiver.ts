/**
 * The guest end of a `sync` session (the record format is runtime/sync/wire.ts): reports the
 * synced folder's manifest, then applies the host's records in one pass as they stream in. A file
 * that exists is replaced atomically: written to a temporary beside it and renamed over it when
 * complete (readers never see half of it). A file that does not exist yet is created at its final
 * name with O_EXCL and written in place (a rename costs ~1.3 ms under TCG, half of a small file's
 * cost): its modification time is set last, so a file cut off by a crash keeps a size and mtime
 * that differ from the host's and the next catch-up rewrites it; a session that ends mid-file
 * removes it. Either way the file gets the host's mode and mtime, so the next manifest shows it equal.
 *
 * Everything runs synchronously, in a process of its own (syncMain.ts): under TCG a threadpool round
 * trip costs a wakeup (~2 ms), and a first sync is thousands of small files. Stale temporaries (a
 * session cut off mid-file) are removed by the next manifest walk.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IgnoreRules, type IgnoreGroup } from '../../runtime/sync/ignore';
import { isRelPath, joinRel } from '../../runtime/sync/relPath';
import { MAX_HEADER, MAX_MANIFEST_ENTRIES, encodeEntry, type SyncRecord, type TreeEntry } from '../../runtime/sync/wire';
import { TEMPORARY_NAME, describeFsError } from './fileTarget';

/** Manifest lines are sent in pieces of about this many bytes. */
const EMIT_CHUNK = 60 * 1024;

interface OpenFile {
  fd: number;
  /** Where the bytes go: a temporary to rename over `target`, or `target` itself for a new file. */
  tmp: string;
  target: string;
  rel: string;
  left: number;
  mode: number;
  mtimeMs: number;
  failed: boolean;
}

export class SyncReceiver {
  private buffered: Buffer[] = [];
  private bufferedBytes = 0;
  private file?: OpenFile;
  /** Bytes of a failed file still to skip. */
  private skip = 0;
  private readonly umask = process.umask();
  /** Directories known to exist (made or seen here); forgotten whenever anything is removed. */
  private readonly dirs = new Set<string>();

  /**
   * @param root the synced folder (absolute); made if missing
   * @param emit sends bytes on the session's stdout
   * @param fail ends the session with a sentence
   */
  constructor(private readonly root: string, private readonly tag: string, private readonly emit: (b: Buffer) => void, private readonly fail: (m: string) => void) {
    if (!path.isAbsolute(root)) throw new Error('the guest path must be absolute');
    const st = fs.statSync(root, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) throw new Error(`${root} is not a directory`);
    if (!st) fs.mkdirSync(root, { recursive: true, mode: 0o755 });
  }

  /** Bytes from the host. */
  push(chunk: Buffer): void {
    let data: Buffer | undefined = chunk;
    while (data && data.length > 0) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, data.length);
        this.skip -= n;
        data = data.subarray(n);
      } else if (this.file) {
        const n = Math.min(this.file.left, data.length);
        this.writeBody(data.subarray(0, n));
        data = data.subarray(n);
      } else {
        this.buffered.push(data);
        this.bufferedBytes += data.length;
        // What follows a header that starts a file body (or a skip) comes back to this loop.
        data = this.takeHeaders();
      }
    }
  }

  /** Parses buffered headers; returns the bytes after one that opened a file body (or a skip), if any. */
  private takeHeaders(): Buffer | undefined {
    for (;;) {
      // What stays buffered is copied: the frame decoder may reuse the memory it handed us.
      if (this.bufferedBytes < 4) return this.keep();
      const all = this.buffered.length === 1 ? this.buffered[0] : Buffer.concat(this.buffered, this.bufferedBytes);
      this.buffered = [all];
      const len = all.readUInt32BE(0);
      if (len > MAX_HEADER) {
        this.fail(`a sync record header of ${len} bytes`);
        this.buffered = [];
        this.bufferedBytes = 0;
        return undefined;
      }
      if (all.length < 4 + len) return this.keep();
      let record: SyncRecord;
      try {
        record = JSON.parse(all.toString('utf8', 4, 4 + len));
      } catch {
        this.fail('a sync record header that is not JSON');
        this.buffered = [];
        this.bufferedBytes = 0;
        return undefined;
      }
      const rest = all.subarray(4 + len);
      this.buffered = rest.length ? [rest] : [];
      this.bufferedBytes = rest.length;
      this.apply(record);
      if ((this.file || this.skip > 0) && rest.length > 0) {
        this.buffered = [];
        this.bufferedBytes = 0;
        return rest;
      }
    }
  }

  private keep(): undefined {
    if (this.bufferedBytes > 0) this.buffered = [Buffer.concat(this.buffered, this.bufferedBytes)];
    return undefined;
  }

  private apply(r: SyncRecord): void {
    if (r.op === 'flush') return this.line({ t: 'ack', seq: r.seq });
    if (r.op === 'manifest') return this.manifest(r.ignore);
    const rel = (r as { path?: unknown }).path;
    if (!isRelPath(rel)) return this.fail('a sync record with a path outside the folder');
    const full = path.join(this.root, rel);
    try {
      switch (r.op) {
        case 'file':
          return this.openFile(rel, full, r.size, r.mode, r.mtimeMs);
        case 'dir': {
          if (this.makeDir(full, r.mode & 0o7777)) return;
          const st = fs.lstatSync(full, { throwIfNoEntry: false });
          if (st && !st.isDirectory()) this.clear(full);
          if (!st || !st.isDirectory()) fs.mkdirSync(full, { recursive: true });
          if (!st?.isDirectory() || (st.mode & 0o7777) !== (r.mode & 0o7777)) fs.chmodSync(full, r.mode & 0o7777);
          this.dirs.add(full);
          return;
        }
        case 'link': {
          this.clear(full);
          this.ensureParent(full);
          fs.symlinkSync(String(r.target), full);
          return;
        }
        case 'remove':
          this.clear(full);
          return;
        default:
          return this.failed(rel, `unknown record ${(r as { op?: unknown }).op}`);
      }
    } catch (err) {
      this.failed(rel, describeFsError(err));
    }
  }

  /**
   * A directory made with one mkdir when it is new and its parent is there (the host sends parents
   * first); false when it needs the careful path (it exists, or something is in the way).
   */
  private makeDir(full: string, mode: number): boolean {
    try {
      fs.mkdirSync(full, mode);
    } catch {
      return false;
    }
    if ((mode & ~this.umask) !== mode) fs.chmodSync(full, mode);
    this.dirs.add(full);
    return true;
  }

  private openFile(rel: string, full: string, size: number, mode: number, mtimeMs: number): void {
    if (!Number.isSafeInteger(size) || size < 0) return this.fail(`a file record for ${rel} with a bad size`);
    let tmp = full;
    let fd: number;
    const flags = fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW;
    const open = () => {
      try {
        tmp = full;
        return fs.openSync(full, flags | fs.constants.O_EXCL, mode & 0o777);
      } catch (err) {
        // Something is there (a file to replace atomically, a link, a directory): a temporary.
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      tmp = path.join(path.dirname(full), `.${path.basename(full).slice(0, 200)}.sandboxvm-${this.tag}.partial`);
      return fs.openSync(tmp, flags, mode & 0o777);
    };
    try {
      this.ensureParent(full);
      try {
        fd = open();
      } catch (err) {
        // Its folder went away behind our back (removed in the guest): made again.
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
        this.dirs.clear();
        this.ensureParent(full);
        fd = open();
      }
    } catch (err) {
      this.failed(rel, describeFsError(err));
      this.skip = size;
      return;
    }
    this.file = { fd, tmp, target: full, rel, left: size, mode: mode & 0o7777, mtimeMs, failed: false };
    if (size === 0) this.finishFile();
  }

  private writeBody(data: Buffer): void {
    const f = this.file!;
    f.left -= data.length;
    if (!f.failed) {
      try {
        let at = 0;
        while (at < data.length) at += fs.writeSync(f.fd, data, at, data.length - at);
      } catch (err) {
        f.failed = true;
        this.failed(f.rel, describeFsError(err));
      }
    }
    if (f.left === 0) this.finishFile();
  }

  private finishFile(): void {
    const f = this.file!;
    this.file = undefined;
    try {
      if (f.failed) throw undefined;
      if ((f.mode & ~this.umask) !== f.mode) fs.fchmodSync(f.fd, f.mode);
      // Half a millisecond in: the guest's nanoseconds floor to the host's whole milliseconds.
      const t = (f.mtimeMs + 0.5) / 1000;
      fs.futimesSync(f.fd, t, t);
      fs.closeSync(f.fd);
      if (f.tmp === f.target) return;
      try {
        fs.renameSync(f.tmp, f.target);
      } catch (err) {
        // A directory where the file goes (rename cannot replace it): removed, then once more.
        const code = (err as NodeJS.ErrnoException).code;
        if (code !== 'EISDIR' && code !== 'ENOTEMPTY' && code !== 'EEXIST') throw err;
        this.clear(f.target);
        fs.renameSync(f.tmp, f.target);
      }
    } catch (err) {
      try {
        fs.closeSync(f.fd);
      } catch {
        // closed already
      }
      removeQuietly(f.tmp);
      if (err !== undefined) this.failed(f.rel, describeFsError(err));
    }
  }

  private clear(full: string): void {
    fs.rmSync(full, { recursive: true, force: true });
    this.dirs.clear();
  }

  private ensureParent(full: string): void {
    const dir = path.dirname(full);
    if (this.dirs.has(dir)) return;
    const st = fs.lstatSync(dir, { throwIfNoEntry: false });
    if (st && !st.isDirectory()) fs.rmSync(dir, { force: true });
    if (!st?.isDirectory()) fs.mkdirSync(dir, { recursive: true });
    this.dirs.add(dir);
  }

  /** Walks the folder (never following links, skipping ignored paths) and reports every entry. */
  private manifest(groups: IgnoreGroup[]): void {
    let rules: IgnoreRules;
    try {
      rules = new IgnoreRules(Array.isArray(groups) ? groups.filter((g) => typeof g?.base === 'string' && Array.isArray(g.patterns)) : []);
    } catch (err) {
      return this.fail(`bad ignore rules: ${(err as Error).message}`);
    }
    let out = '';
    let count = 0;
    const flush = () => {
      if (out) this.emit(Buffer.from(out, 'utf8'));
      out = '';
    };
    const walk = (dir: string) => {
      let names: fs.Dirent[];
      try {
        names = fs.readdirSync(dir === '' ? this.root : path.join(this.root, dir), { withFileTypes: true });
      } catch {
        return;
      }
      for (const d of names) {
        if (count >= MAX_MANIFEST_ENTRIES) return;
        const rel = joinRel(dir, d.name);
        const full = path.join(this.root, rel);
        if (TEMPORARY_NAME.test(d.name)) {
          if (d.isFile()) fs.rmSync(full, { force: true });
          continue;
        }
        if (rules.ignores(rel, d.isDirectory())) continue;
        const st = fs.lstatSync(full, { throwIfNoEntry: false });
        if (!st) continue;
        const entry: TreeEntry = st.isDirectory()
          ? { path: rel, type: 'dir', size: 0, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) }
          : st.isSymbolicLink()
            ? { path: rel, type: 'symlink', size: 0, mode: 0o777, mtimeMs: Math.floor(st.mtimeMs), target: readlink(full) }
            : st.isFile()
              ? { path: rel, type: 'file', size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) }
              : { path: rel, type: 'file', size: 0, mode: 0, mtimeMs: 0 }; // a FIFO, socket or device: never equal to a host file
        count++;
        out += `${encodeEntry(entry)}\n`;
        if (out.length >= EMIT_CHUNK) flush();
        if (entry.type === 'dir') walk(rel);
      }
    };
    walk('');
    out += `${JSON.stringify({ t: 'end', count })}\n`;
    flush();
  }

  private failed(rel: string, message: string): void {
    this.line({ t: 'fail', path: rel, message });
  }

  private line(v: object): void {
    this.emit(Buffer.from(`${JSON.stringify(v)}\n`, 'utf8'));
  }

  /** The session ends: a file in progress is dropped. */
  dispose(): void {
    const f = this.file;
    this.file = undefined;
    if (!f) return;
    try {
      fs.closeSync(f.fd);
    } catch {
      // closed already
    }
    removeQuietly(f.tmp);
  }
}

/** Removes what this receiver wrote; something else put there since (a directory) is left alone. */
function removeQuietly(p: string): void {
  try {
    fs.rmSync(p, { force: true });
  } catch {
    // not a file any more
  }
}

function readlink(p: string): string {
  try {
    return fs.readlinkSync(p) || '?';
  } catch {
    return '?';
  }
}
