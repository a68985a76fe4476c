/**
 * Copies files and folders between the host and a guest, for the CLI (`sandboxvm cp`) and the
 * extension (Explorer: copy to the VM, and from it). cp's rules for where a copy lands
 * (copyPlan.ts); links given as the source or destination are followed on both sides; a file
 * replaced is replaced atomically, a link to a file is written through. In a folder, links are
 * copied as links; from the guest only those that stay inside the copy (the others are skipped
 * with a warning), and nothing is ever written through a host link inside the copy. Cancelling
 * (the signal) removes the file in progress on both sides and rejects with ErrorCode.Cancelled;
 * the files copied before it are kept.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../common/errors';
import { GuestFiles, describeHostError, type GuestEntry } from './guestFiles';
import { ensureHostRoom } from './hostRoom';
import { linkStaysInside, resolveDestination, sourceBase, type DestinationKind } from './copyPlan';

/** How deep a folder copy goes (a guest can claim any nesting). */
const MAX_DEPTH = 64;

export interface CopyOptions {
  /** Folders too (cp -r); without it a folder source is refused. */
  recursive?: boolean;
  signal?: AbortSignal;
  /** Bytes copied so far of `total` (the sum of the files' sizes), and the file under way. */
  onProgress?(bytes: number, total: number, current: string): void;
  /** An entry was skipped (the copy goes on): one sentence saying which and why. */
  onWarning?(message: string): void;
}

/**
 * One copy between the host and the guest `vm`: `upload` or `download` once, then read the counts.
 * `temporaries` are the host files being written (a caller that must exit at once removes them
 * with `removeTemporaries`).
 */
export class GuestCopy {
  readonly temporaries = new Set<string>();
  readonly signal: AbortSignal;
  /** Files copied, bytes copied, entries skipped, and the bytes the copy has in all. */
  files = 0;
  bytes = 0;
  skipped = 0;
  total = 0;
  private current = '';

  constructor(readonly vm: string, readonly guest: GuestFiles, private readonly options: CopyOptions = {}) {
    this.signal = options.signal ?? new AbortController().signal;
  }

  /** Copies the host's `src` to the guest's `dst` (where it lands: cp's rules). */
  upload(src: string, dst: string): Promise<void> {
    return upload(this, src, dst, this.options.recursive === true);
  }

  /** Copies the guest's `src` to the host's `dst`. */
  download(src: string, dst: string): Promise<void> {
    return download(this, src, dst, this.options.recursive === true);
  }

  /** @internal */
  progress(fileBytes: number): void {
    this.options.onProgress?.(this.bytes + fileBytes, this.total, this.current);
  }

  /** @internal */
  startFile(name: string): void {
    this.current = name;
    this.progress(0);
  }

  /** @internal */
  endFile(size: number): void {
    this.files++;
    this.bytes += size;
  }

  /** @internal */
  warn(message: string): void {
    this.skipped++;
    this.options.onWarning?.(message);
  }

  /** Last resort when cleanup hangs: the host temporaries go, synchronously. */
  removeTemporaries(): void {
    for (const t of this.temporaries) fs.rmSync(t, { force: true });
  }
}

type Transfer = GuestCopy;

// ---- host -> guest ----------------------------------------------------------------------------

async function upload(t: Transfer, src: string, dst: string, recursive: boolean): Promise<void> {
  const st = fs.statSync(src, { throwIfNoEntry: false });
  if (!st) throw new SandboxError(ErrorCode.BadArgument, `${src}: no such file or directory on the host`);
  if (st.isDirectory() && !recursive) throw new SandboxError(ErrorCode.BadArgument, `${src} is a directory; use cp -r to copy a folder`);
  if (!st.isDirectory() && !st.isFile()) throw new SandboxError(ErrorCode.BadArgument, `${src} is neither a file nor a directory`);
  const kind = await guestKind(t, dst);
  const where = resolveDestination(dst, sourceBase(src, false), kind, st.isDirectory(), true);
  if (!where.ok) throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${dst} ${where.why}`);
  if (st.isFile()) {
    t.total = st.size;
    await uploadFile(t, src, where.path, st);
    return;
  }
  const entries = walkHost(src);
  t.total = entries.reduce((n, e) => n + (e.stats.isFile() ? e.stats.size : 0), 0);
  await ensureGuestDir(t, where.path);
  for (const e of entries) {
    if (t.signal.aborted) break;
    const to = path.posix.join(where.path, ...e.rel.split(path.sep));
    if (e.stats.isDirectory()) await ensureGuestDir(t, to);
    else if (e.stats.isFile()) await uploadFile(t, path.join(src, e.rel), to, e.stats);
    else if (e.stats.isSymbolicLink()) {
      const target = fs.readlinkSync(path.join(src, e.rel));
      await t.guest.symlink(target, to).catch((err: Error) => t.warn(`skipped the link ${e.rel}: ${t.vm}:${to}: ${guestError(err)}`));
    } else t.warn(`skipped ${e.rel}: neither a file, a directory nor a link`);
  }
  if (t.signal.aborted) throw new SandboxError(ErrorCode.Cancelled, 'cancelled');
}

async function uploadFile(t: Transfer, from: string, to: string, st: fs.Stats): Promise<void> {
  t.startFile(path.basename(from));
  const stream = fs.createReadStream(from, { highWaterMark: 256 * 1024 });
  try {
    const n = await t.guest.write(to, stream, { mode: st.mode & 0o777, onProgress: (b) => t.progress(b), signal: t.signal }).catch((err) => {
      if (err instanceof SandboxError) throw err;
      throw new SandboxError(ErrorCode.BadArgument, `cannot read ${from}: ${describeHostError(err, path.dirname(from))}`);
    });
    t.endFile(n);
  } finally {
    stream.destroy();
  }
}

async function ensureGuestDir(t: Transfer, dir: string): Promise<void> {
  const kind = await guestKind(t, dir);
  if (kind === 'dir') return;
  if (kind !== 'missing') throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${dir} exists and is not a directory`);
  await t.guest.mkdir(dir).catch((err: Error) => {
    throw new SandboxError(ErrorCode.BadArgument, `cannot make the directory ${t.vm}:${dir}: ${guestError(err)}`);
  });
}

/** What is at a guest path, links followed. */
async function guestKind(t: Transfer, guestPath: string): Promise<DestinationKind> {
  let entry: GuestEntry;
  try {
    entry = await t.guest.stat(guestPath, true);
  } catch (err) {
    if (!isGuestFailure(err)) throw err;
    if (/in the guest: ENOENT\b/.test((err as Error).message)) return 'missing';
    throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${guestPath}: ${guestError(err as Error)}`);
  }
  return entry.type === 'dir' ? 'dir' : entry.type === 'file' ? 'file' : 'other';
}

/** Every entry under a host folder, parents before children; links are not followed. */
function walkHost(root: string): { rel: string; stats: fs.Stats }[] {
  const out: { rel: string; stats: fs.Stats }[] = [];
  const visit = (rel: string, depth: number) => {
    if (depth > MAX_DEPTH) throw new SandboxError(ErrorCode.BadArgument, `${path.join(root, rel)} is nested more than ${MAX_DEPTH} levels deep`);
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const r = rel ? path.join(rel, name) : name;
      const stats = fs.lstatSync(path.join(root, r));
      out.push({ rel: r, stats });
      if (stats.isDirectory()) visit(r, depth + 1);
    }
  };
  visit('', 0);
  return out;
}

// ---- guest -> host ----------------------------------------------------------------------------

async function download(t: Transfer, src: string, dst: string, recursive: boolean): Promise<void> {
  let remote: GuestEntry;
  try {
    remote = await t.guest.stat(src, true);
  } catch (err) {
    if (!isGuestFailure(err)) throw err;
    throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${src}: ${guestError(err as Error)}`);
  }
  if (remote.type === 'dir' && !recursive) throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${src} is a directory; use cp -r to copy a folder`);
  if (remote.type !== 'dir' && remote.type !== 'file') throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${src} is neither a file nor a directory`);
  const where = resolveDestination(dst, sourceBase(src, true), hostKind(dst), remote.type === 'dir', false);
  if (!where.ok) throw new SandboxError(ErrorCode.BadArgument, `${dst} ${where.why}`);
  if (remote.type === 'file') {
    t.total = remote.size;
    ensureHostRoom(path.dirname(where.path), t.total, `${t.vm}:${src}`);
    await downloadFile(t, src, hostFileTarget(where.path), path.basename(where.path), remote.mode);
    return;
  }
  // The copy's root: made here, or an existing real directory (never a link: see linkStaysInside).
  const root = where.path;
  const rootStat = fs.lstatSync(root, { throwIfNoEntry: false });
  if (rootStat && !rootStat.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${root} exists and is not a directory`);
  const entries = await walkGuest(t, src);
  t.total = entries.reduce((n, e) => n + (e.entry.type === 'file' ? e.entry.size : 0), 0);
  ensureHostRoom(rootStat ? root : path.dirname(root), t.total, `${t.vm}:${src}`);
  if (!rootStat) mkdirHost(root);
  for (const { rel, entry } of entries) {
    if (t.signal.aborted) break;
    const to = path.join(root, ...rel.split('/'));
    const from = path.posix.join(src, rel);
    const there = fs.lstatSync(to, { throwIfNoEntry: false });
    if (entry.type === 'dir') {
      if (!there) mkdirHost(to);
      else if (!there.isDirectory()) t.warn(`skipped the folder ${rel}: ${to} exists and is not a directory`);
    } else if (entry.type === 'file') {
      if (there && !there.isFile()) t.warn(`skipped ${rel}: ${to} exists and is not a file`);
      else if (!isRealDir(path.dirname(to))) t.warn(`skipped ${rel}: its folder was not copied`);
      else await downloadFile(t, from, to, rel, entry.mode);
    } else if (entry.type === 'symlink') {
      const target = await t.guest.readlink(from).catch(() => undefined);
      if (target === undefined) t.warn(`skipped the link ${rel}: it could not be read`);
      else if (!linkStaysInside(rel, target)) t.warn(`skipped the link ${rel} -> ${printable(target)}: it points outside the copy`);
      else if (there) t.warn(`skipped the link ${rel}: ${to} exists`);
      else if (!isRealDir(path.dirname(to))) t.warn(`skipped the link ${rel}: its folder was not copied`);
      else fs.symlinkSync(target, to);
    } else t.warn(`skipped ${rel}: neither a file, a directory nor a link`);
  }
  if (t.signal.aborted) throw new SandboxError(ErrorCode.Cancelled, 'cancelled');
}

async function downloadFile(t: Transfer, from: string, to: string, label: string, mode: number): Promise<void> {
  t.startFile(label);
  // The guest's permission bits, never set-id ones (the umask applies as for any new file).
  const n = await t.guest.download(from, to, { mode: mode & 0o777, onProgress: (b) => t.progress(b), signal: t.signal, temporaries: t.temporaries });
  t.endFile(n);
}

/** A guest folder's entries (names checked by the worker), parents before children, bounded in depth. */
async function walkGuest(t: Transfer, root: string): Promise<{ rel: string; entry: GuestEntry }[]> {
  const out: { rel: string; entry: GuestEntry }[] = [];
  const visit = async (rel: string, depth: number) => {
    if (depth > MAX_DEPTH) throw new SandboxError(ErrorCode.BadArgument, `${t.vm}:${root} is nested more than ${MAX_DEPTH} levels deep`);
    const entries = await t.guest.list(rel ? path.posix.join(root, rel) : root).catch((err: Error) => {
      throw new SandboxError(ErrorCode.BadArgument, `cannot list ${t.vm}:${path.posix.join(root, rel)}: ${guestError(err)}`);
    });
    const seen = new Set<string>();
    for (const entry of entries) {
      if (seen.has(entry.name)) continue; // a name listed twice is copied once
      seen.add(entry.name);
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      out.push({ rel: r, entry });
      if (entry.type === 'dir') await visit(r, depth + 1);
    }
  };
  await visit('', 0);
  return out;
}

/** What is at a host path, links followed. */
function hostKind(p: string): DestinationKind {
  const st = fs.statSync(p, { throwIfNoEntry: false });
  if (!st) return fs.lstatSync(p, { throwIfNoEntry: false }) ? 'other' : 'missing';
  return st.isDirectory() ? 'dir' : st.isFile() ? 'file' : 'other';
}

/** The host file a single-file copy writes: the path itself, or the file a link there points to. */
function hostFileTarget(p: string): string {
  const st = fs.lstatSync(p, { throwIfNoEntry: false });
  if (!st || st.isFile()) return p;
  if (st.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${p} is a directory`);
  if (!st.isSymbolicLink()) throw new SandboxError(ErrorCode.BadArgument, `${p} is not a regular file`);
  const followed = fs.statSync(p, { throwIfNoEntry: false });
  if (!followed) throw new SandboxError(ErrorCode.BadArgument, `${p} is a link to nothing; not writing through it`);
  if (!followed.isFile()) throw new SandboxError(ErrorCode.BadArgument, `${p} is a link to something other than a file`);
  return fs.realpathSync(p);
}

function mkdirHost(dir: string): void {
  try {
    fs.mkdirSync(dir, { mode: 0o755 });
  } catch (err) {
    throw new SandboxError(ErrorCode.BadArgument, `cannot make the directory ${dir}: ${describeHostError(err, path.dirname(dir))}`);
  }
}

function isRealDir(dir: string): boolean {
  return fs.lstatSync(dir, { throwIfNoEntry: false })?.isDirectory() === true;
}

/** A call the guest answered with an error (not a lost connection or a stopped VM). */
function isGuestFailure(err: unknown): boolean {
  return err instanceof SandboxError && err.code === ErrorCode.BadArgument && / failed in the guest: /.test(err.message);
}

/** A guest call's error ("stat failed in the guest: ECODE: text, syscall 'path'") as a short clause. */
function guestError(err: Error): string {
  const m = / in the guest: E[A-Z]+: ([^,]+)/.exec(err.message);
  return printable(m ? m[1] : err.message);
}

function printable(text: string): string {
  return text.replace(/[\x00-\x1f\x7f]/g, '?').slice(0, 300);
}
