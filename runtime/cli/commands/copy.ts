/**
 * `cp`: files and folders between host and guest, like `limactl copy` / `multipass transfer`.
 *   sandboxvm cp ./local dev:/path        host -> guest (atomic in the guest)
 *   sandboxvm cp dev:/path ./local        guest -> host (atomic on the host)
 *   sandboxvm cp -r ./dir dev:/path       folders, both ways
 * cp's rules for where a copy lands (copyPlan.ts); links given on the command line are followed
 * on both sides; a file replaced is replaced atomically, a link to a file is written through.
 * In a folder, links are copied as links; from the guest only those that stay inside the copy
 * (the others are skipped with a warning), and nothing is ever written through a host link inside
 * the copy. Ctrl-C (SIGINT, SIGTERM) cancels: the file in progress is removed on both sides.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import { GuestFiles, describeHostError, type GuestEntry } from '../../client/guestFiles';
import type { CommandContext } from '../context';
import { linkStaysInside, resolveDestination, sourceBase, type DestinationKind } from '../copyPlan';
import { ProgressBar, formatBytes } from '../progress';

interface Location {
  vm?: string;
  path: string;
}

/** `name:/path` is in a VM; anything else (including `./a:b`) is on the host. */
export function parseLocation(arg: string): Location {
  const m = /^([a-z0-9][a-z0-9-]*):(.*)$/.exec(arg);
  if (!m) return { path: arg };
  if (!m[2]) throw new SandboxError(ErrorCode.BadArgument, `${arg}: give a guest path after the colon, e.g. ${m[1]}:/root/file`);
  return { vm: validateVmName(m[1]), path: m[2] };
}

/** How deep a folder copy goes (a guest can claim any nesting). */
const MAX_DEPTH = 64;
/** How long a cancelled copy may take to clean up before the CLI removes what it can and exits. */
const CANCEL_GRACE_MS = 5000;

/** One copy's shared state: progress, counts, cancellation, the host temporaries alive. */
class Transfer {
  readonly cancel = new AbortController();
  readonly temporaries = new Set<string>();
  files = 0;
  bytes = 0;
  skipped = 0;
  total = 0;
  private current = '';

  constructor(readonly vm: string, readonly guest: GuestFiles, private readonly bar: ProgressBar | undefined) {}

  progress(fileBytes: number): void {
    this.bar?.update(this.bytes + fileBytes, this.total, this.current);
  }

  startFile(name: string): void {
    this.current = name;
    this.progress(0);
  }

  endFile(size: number): void {
    this.files++;
    this.bytes += size;
  }

  warn(message: string): void {
    this.skipped++;
    this.bar?.done();
    process.stderr.write(`sandboxvm: warning: ${message}\n`);
  }

  /** Last resort when cleanup hangs: the host temporaries go, synchronously. */
  removeTemporaries(): void {
    for (const t of this.temporaries) fs.rmSync(t, { force: true });
  }
}

export async function copy(ctx: CommandContext): Promise<number> {
  const [srcArg, dstArg] = ctx.positionals;
  if (!srcArg || !dstArg || ctx.positionals.length > 2) throw new SandboxError(ErrorCode.BadArgument, 'usage: sandboxvm cp [-r] <src> <dst>, one of them <vm>:<path>');
  const src = parseLocation(srcArg);
  const dst = parseLocation(dstArg);
  if (!!src.vm === !!dst.vm) throw new SandboxError(ErrorCode.BadArgument, 'exactly one of source and destination must be in a VM (<vm>:<path>)');
  const recursive = ctx.options.recursive === true;
  const vm = (src.vm ?? dst.vm)!;
  const sessions = await (await ctx.client()).attach(vm);
  const bar = ctx.options.quiet ? undefined : new ProgressBar('Copying', process.stderr, { bytes: true });
  const t = new Transfer(vm, new GuestFiles(sessions), bar);
  let signals = 0;
  const onSignal = () => {
    if (++signals === 1) {
      t.cancel.abort();
      setTimeout(() => (t.removeTemporaries(), process.exit(130)), CANCEL_GRACE_MS).unref();
    } else {
      t.removeTemporaries();
      process.exit(130);
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const t0 = Date.now();
  try {
    if (dst.vm) await upload(t, src.path, dst.path, recursive);
    else await download(t, src.path, dst.path, recursive);
  } catch (err) {
    if (!(err instanceof SandboxError && err.code === ErrorCode.Cancelled)) throw err;
    bar?.done();
    const kept = t.files > 0 ? `; the ${t.files} file(s) copied before it are kept` : '';
    process.stderr.write(`sandboxvm: the copy was cancelled; the file in progress was removed${kept}\n`);
    return 130;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    bar?.done();
    sessions.dispose();
  }
  const seconds = Math.max((Date.now() - t0) / 1000, 0.001);
  if (!ctx.options.quiet) {
    const what = recursive ? `${t.files} file(s), ` : '';
    process.stderr.write(`Copied ${what}${formatBytes(t.bytes)} in ${seconds.toFixed(2)} s (${formatBytes(t.bytes / seconds)}/s)\n`);
  }
  if (t.skipped > 0) {
    process.stderr.write(`sandboxvm: ${t.skipped} entr${t.skipped === 1 ? 'y was' : 'ies were'} skipped (see the warnings above)\n`);
    return 1;
  }
  return 0;
}

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
    if (t.cancel.signal.aborted) break;
    const to = path.posix.join(where.path, ...e.rel.split(path.sep));
    if (e.stats.isDirectory()) await ensureGuestDir(t, to);
    else if (e.stats.isFile()) await uploadFile(t, path.join(src, e.rel), to, e.stats);
    else if (e.stats.isSymbolicLink()) {
      const target = fs.readlinkSync(path.join(src, e.rel));
      await t.guest.symlink(target, to).catch((err: Error) => t.warn(`skipped the link ${e.rel}: ${t.vm}:${to}: ${guestError(err)}`));
    } else t.warn(`skipped ${e.rel}: neither a file, a directory nor a link`);
  }
  if (t.cancel.signal.aborted) throw new SandboxError(ErrorCode.Cancelled, 'cancelled');
}

async function uploadFile(t: Transfer, from: string, to: string, st: fs.Stats): Promise<void> {
  t.startFile(path.basename(from));
  const stream = fs.createReadStream(from, { highWaterMark: 256 * 1024 });
  try {
    const n = await t.guest.write(to, stream, { mode: st.mode & 0o777, onProgress: (b) => t.progress(b), signal: t.cancel.signal }).catch((err) => {
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
    await downloadFile(t, src, hostFileTarget(where.path), path.basename(where.path), remote.mode);
    return;
  }
  // The copy's root: made here, or an existing real directory (never a link: see linkStaysInside).
  const root = where.path;
  const rootStat = fs.lstatSync(root, { throwIfNoEntry: false });
  if (!rootStat) mkdirHost(root);
  else if (!rootStat.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${root} exists and is not a directory`);
  const entries = await walkGuest(t, src);
  t.total = entries.reduce((n, e) => n + (e.entry.type === 'file' ? e.entry.size : 0), 0);
  for (const { rel, entry } of entries) {
    if (t.cancel.signal.aborted) break;
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
  if (t.cancel.signal.aborted) throw new SandboxError(ErrorCode.Cancelled, 'cancelled');
}

async function downloadFile(t: Transfer, from: string, to: string, label: string, mode: number): Promise<void> {
  t.startFile(label);
  // The guest's permission bits, never set-id ones (the umask applies as for any new file).
  const n = await t.guest.download(from, to, { mode: mode & 0o777, onProgress: (b) => t.progress(b), signal: t.cancel.signal, temporaries: t.temporaries });
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
