/**
 * A one-shot pull of a guest folder into a host folder. Everything the guest says (names, types,
 * sizes, link targets, bytes) is untrusted; every write goes through SafeHostWriter.
 *
 * Order: the guest folder is listed whole first (bounded: more than `maxEntries` entries and the
 * pull is refused before anything is written), then paths the guest removed are removed on the
 * host (only if unchanged there since the base; first, so a case-only rename works on a
 * case-insensitive host too), folders are made, files are read (several at once) and written,
 * links are made, and the base is saved.
 *
 * Per file, against the base (what the last pull left, pullState.ts):
 *   guest unchanged since the base                  -> nothing read (unchanged)
 *   host unchanged since the base (size, mtime, inode) or missing -> replaced (written)
 *   host changed, or no base and a host file there  -> read; same bytes: unchanged; else both kept:
 *       the host's stays, the guest's is written beside it as a conflict copy (conflictName)
 *   held back (heldBack.ts) and not allowed         -> written to the quarantine, listed
 *   device, FIFO, socket, a bad name, a link that leads out, over a limit -> refused, listed
 * The host is checked again right before each rename, so an edit made during the download is kept
 * (a conflict); an edit landing in the microseconds between that check and the rename is the one
 * window left.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { PassThrough } from 'node:stream';
import { ErrorCode, SandboxError } from '../../common/errors';
import type { GuestEntry } from '../../client/guestFiles';
import { heldBackReason, isAllowed, type HeldBackRule, HELD_BACK_RULES } from './heldBack';
import { checkRelPath, foldName, printable } from './hostPath';
import { DEFAULT_LIMITS, type PullLimits } from './limits';
import { conflictName, loadBase, pullStateDir, quarantineDir, saveBase, type BaseEntry, type PullBase } from './pullState';
import { TarError, readTar } from './tarFeed';
import { Refused, SafeHostWriter, describeSize, type CommitDecision, type WriterOptions } from './safeHostWriter';

/** What a pull needs of the guest (GuestFiles has it; tests fake it). */
export interface PullSource {
  /** A folder's entries; may throw TooManyEntries as soon as it knows there are more than `budget`. */
  list(guestPath: string, budget: number): Promise<GuestEntry[]>;
  readlink(guestPath: string): Promise<string>;
  read(guestPath: string, onData: (chunk: Buffer) => void | Promise<void>, signal?: AbortSignal): Promise<number>;
  /**
   * Optional, for speed: the files `rels` (relative to `root`, in this order) as one tar stream
   * (tarFeed.ts), ending or failing whenever it likes; files it does not deliver are read one by one.
   */
  readMany?(root: string, rels: string[]): { chunks: AsyncIterable<Buffer>; close(): void };
}

export interface PullOptions {
  vm: string;
  guestPath: string;
  hostRoot: string;
  /** Held-back paths to write anyway (the path or a folder above it). */
  allow?: string[];
  limits?: Partial<PullLimits>;
  /** Where the base and the quarantine live (default: under the VM's directory). */
  stateDir?: string;
  /** Files read at once. */
  concurrency?: number;
  signal?: AbortSignal;
  onProgress?(p: PullProgress): void;
  /** Tests: writer hooks and walk mode, case-insensitivity, the clock, the held-back rules. */
  writer?: WriterOptions;
  caseInsensitive?: boolean;
  now?: () => Date;
  /** A guest that sends nothing for this long on a file or the tar stream is given up on (default 60 s). */
  idleTimeoutMs?: number;
  heldBackRules?: readonly HeldBackRule[];
}

export interface PullProgress {
  files: number;
  totalFiles: number;
  bytes: number;
  totalBytes: number;
  current: string;
}

export interface PullItem {
  path: string;
  reason: string;
}

export interface PullSummary {
  guestPath: string;
  hostRoot: string;
  /** Files and links written, folders made, paths removed (guest removed them, host unchanged). */
  written: number;
  folders: number;
  removed: number;
  unchanged: number;
  bytes: number;
  seconds: number;
  heldBack: (PullItem & { quarantined?: string })[];
  conflicts: (PullItem & { guestCopy?: string })[];
  refused: PullItem[];
  quarantine: string;
}

/** Thrown by PullSource.list: the folder holds more entries than the pull has left. */
export class TooManyEntries extends Error {}

/** Exit code of `sandboxvm pull` when the pull ran but something was held back, refused or in conflict. */
export const EXIT_NEEDS_ATTENTION = 3;

const MAX_DEPTH = 64;
const IDLE_TIMEOUT_MS = 60_000;

interface Listed {
  rel: string;
  entry: GuestEntry;
}

export async function pull(source: PullSource, options: PullOptions): Promise<PullSummary> {
  const t0 = performance.now();
  const limits: PullLimits = { ...DEFAULT_LIMITS, ...options.limits };
  const signal = options.signal ?? new AbortController().signal;
  const rootStat = fs.statSync(options.hostRoot, { throwIfNoEntry: false });
  if (!rootStat?.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${options.hostRoot} is not a folder on the host; make it first or name another`);
  const hostRoot = fs.realpathSync(options.hostRoot);
  const stateDir = options.stateDir ?? pullStateDir(options.vm, hostRoot, options.guestPath);
  const summary: PullSummary = { guestPath: options.guestPath, hostRoot, written: 0, folders: 0, removed: 0, unchanged: 0, bytes: 0, seconds: 0, heldBack: [], conflicts: [], refused: [], quarantine: path.join(stateDir, 'held') };
  const refuse = (rel: string, reason: string) => summary.refused.push({ path: printable(rel), reason });

  const listed = await walkGuest(source, options, limits, refuse);
  const base: PullBase = loadBase(stateDir) ?? { version: 1, guestPath: options.guestPath, hostPath: hostRoot, entries: Object.create(null) };
  const next: Record<string, BaseEntry> = Object.create(null);
  const writer = new SafeHostWriter(hostRoot, { ...options.writer, limits });
  const quarantine = new SafeHostWriter(quarantineDir(stateDir), { limits });
  const caseInsensitive = options.caseInsensitive ?? isCaseInsensitive(hostRoot);
  const rules = options.heldBackRules ?? HELD_BACK_RULES;
  const now = options.now ?? (() => new Date());
  try {
    const guestPaths = new Set(listed.map((l) => l.rel));
    const accepted = caseInsensitive ? dropCaseCollisions(listed, refuse) : listed;

    // 1. What the guest removed: removed on the host too when unchanged there since the base.
    const removedDirs = new Set<string>();
    for (const [rel, b] of Object.entries(base.entries)) {
      if (guestPaths.has(rel)) continue;
      try {
        if (hostMatchesBase(writer, rel, b)) {
          if (writer.remove(rel)) summary.removed++;
          removedDirs.add(rel.split('/').slice(0, -1).join('/'));
        } else if (writer.stat(rel)) summary.conflicts.push({ path: printable(rel), reason: 'removed in the guest, changed on the host: the host version is kept' });
      } catch (err) {
        if (!(err instanceof Refused)) throw err;
        refuse(rel, err.reason);
      }
    }
    for (const dir of [...removedDirs].filter((d) => d && !guestPaths.has(d)).sort((a, b) => b.split('/').length - a.split('/').length)) {
      for (let d = dir; d && !guestPaths.has(d); d = d.split('/').slice(0, -1).join('/')) if (!writer.removeEmptyDir(d)) break;
    }

    // 2. Folders, then files (several at once), then links.
    const files: Listed[] = [];
    const links: Listed[] = [];
    for (const l of accepted) {
      const why = checkRelPath(l.rel);
      if (why) {
        refuse(l.rel, why);
        continue;
      }
      if (l.entry.type === 'other') refuse(l.rel, 'is a device, FIFO or socket in the guest; those are never made on the host');
      else if (l.entry.type === 'file') files.push(l);
      else if (l.entry.type === 'symlink') links.push(l);
      else {
        try {
          if (!writer.stat(l.rel)) summary.folders++;
          writer.mkdir(l.rel);
        } catch (err) {
          if (!(err instanceof Refused)) throw err;
          refuse(l.rel, err.reason);
        }
      }
    }
    const progress: PullProgress = { files: 0, totalFiles: files.length, bytes: 0, totalBytes: files.reduce((n, f) => n + Math.min(f.entry.size, limits.maxFileBytes), 0), current: '' };
    const ctx: FileContext = { source, options, writer, quarantine, base, next, summary, refuse, rules, now, progress, signal };
    const rest = source.readMany ? await pullBatched(ctx, files, limits) : files;
    await pool(rest, options.concurrency ?? 8, signal, (f) => pullFile(ctx, f));
    for (const l of links) await pullLink(ctx, l);
    if (signal.aborted) throw new SandboxError(ErrorCode.Cancelled, 'the pull was cancelled; the files written so far are kept');
    await saveBase(stateDir, { version: 1, guestPath: options.guestPath, hostPath: hostRoot, entries: next });
  } finally {
    writer.close();
    quarantine.close();
    summary.seconds = (performance.now() - t0) / 1000;
  }
  return summary;
}

/** Lists the guest folder, parents before children; more than maxEntries entries refuses the whole pull. */
async function walkGuest(source: PullSource, options: PullOptions, limits: PullLimits, refuse: (rel: string, why: string) => void): Promise<Listed[]> {
  const out: Listed[] = [];
  const visit = async (rel: string, depth: number): Promise<void> => {
    if (depth > MAX_DEPTH) return refuse(rel, `is nested more than ${MAX_DEPTH} folders deep; not pulled`);
    const dir = rel ? path.posix.join(options.guestPath, rel) : options.guestPath;
    let entries: GuestEntry[];
    const tooMany = () => new SandboxError(ErrorCode.BadArgument, `${options.vm}:${options.guestPath} holds more than ${limits.maxEntries} files, folders and links, the most one pull takes; nothing was written (pull a subfolder, or raise the limit with --max-files)`);
    try {
      entries = await source.list(dir, limits.maxEntries - out.length);
    } catch (err) {
      if (err instanceof TooManyEntries) throw tooMany();
      if (!rel) throw new SandboxError(ErrorCode.BadArgument, `cannot list ${options.vm}:${options.guestPath}: ${printable((err as Error).message)}`);
      return refuse(rel, `could not be listed in the guest (${printable((err as Error).message, 160)})`);
    }
    const seen = new Set<string>();
    const subdirs: string[] = [];
    for (const entry of entries) {
      if (seen.has(entry.name)) continue;
      seen.add(entry.name);
      const r = rel ? `${rel}/${entry.name}` : entry.name;
      if (out.length >= limits.maxEntries) throw tooMany();
      out.push({ rel: r, entry });
      if (entry.type === 'dir') subdirs.push(r);
    }
    for (const d of subdirs) await visit(d, depth + 1);
  };
  await visit('', 0);
  return out;
}

/** On a case-insensitive host two guest names that differ only in case would be one file: the second is refused. */
function dropCaseCollisions(listed: Listed[], refuse: (rel: string, why: string) => void): Listed[] {
  const byFold = new Map<string, string>();
  const dropped = new Set<string>();
  const out: Listed[] = [];
  for (const l of listed) {
    const parent = l.rel.split('/').slice(0, -1).join('/');
    if (dropped.has(parent)) {
      dropped.add(l.rel);
      continue;
    }
    const key = l.rel.split('/').map(foldName).join('/');
    const first = byFold.get(key);
    if (first !== undefined) {
      refuse(l.rel, `differs from ${printable(first)} only in case, which this host's filesystem cannot tell apart`);
      dropped.add(l.rel);
      continue;
    }
    byFold.set(key, l.rel);
    out.push(l);
  }
  return out;
}

interface FileContext {
  source: PullSource;
  options: PullOptions;
  writer: SafeHostWriter;
  quarantine: SafeHostWriter;
  base: PullBase;
  next: Record<string, BaseEntry>;
  summary: PullSummary;
  refuse(rel: string, why: string): void;
  rules: readonly HeldBackRule[];
  now: () => Date;
  progress: PullProgress;
  signal: AbortSignal;
}

/**
 * Pulls the files that need reading through one tar stream, in order. The stream is believed only
 * while it delivers what was asked, in order, at the listed sizes: an entry not asked for, twice,
 * or larger than listed ends it (the rest is read file by file); a file of another type or smaller
 * is skipped (then read on its own). Returns the files still to pull.
 */
async function pullBatched(ctx: FileContext, files: Listed[], limits: PullLimits): Promise<Listed[]> {
  const wanted = new Map<string, Listed>();
  for (const l of files) {
    const b = ctx.base.entries[l.rel];
    const guestSame = b?.kind === 'file' && b.guestSize === l.entry.size && b.guestMtimeMs === l.entry.mtimeMs;
    if (!guestSame && l.entry.size <= limits.maxFileBytes) wanted.set(l.rel, l);
  }
  if (wanted.size < 2) return files;
  const done = new Set<string>();
  const feed = ctx.source.readMany!(ctx.options.guestPath, [...wanted.keys()]);
  const inFlight = new Set<Promise<void>>();
  try {
    const idle = ctx.options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    const stalled = () => new TarError(`the guest's tar sent nothing for ${idle / 1000} s`);
    for await (const e of readTar(untilIdle(guarded(feed.chunks), idle, stalled))) {
      if (ctx.signal.aborted) break;
      const l = wanted.get(e.name);
      if (!l || done.has(e.name) || e.size > l.entry.size) break;
      if (e.type !== '0' || e.size !== l.entry.size) continue;
      done.add(e.name);
      // The next entry needs only this one's bytes read: its checks and rename overlap what follows.
      let consumed!: () => void;
      const read = new Promise<void>((resolve) => (consumed = resolve));
      const body = (async function* () {
        try {
          yield* e.body;
        } finally {
          consumed();
        }
      })();
      const p = pullFile(ctx, l, body).catch((err) => {
        done.delete(e.name);
        ctx.progress.files--;
        throw err;
      });
      inFlight.add(p);
      p.then(() => inFlight.delete(p), () => undefined);
      await Promise.race([read, p]);
      if (inFlight.size >= 16) await Promise.race(inFlight);
    }
    await Promise.all(inFlight);
  } catch (err) {
    if (!(err instanceof TarError) && !(err instanceof GuestReadError)) {
      await Promise.allSettled(inFlight);
      throw err;
    }
  } finally {
    feed.close();
  }
  // Files whose bytes were in when the stream failed still finish (or go back to the list).
  await Promise.allSettled(inFlight);
  return files.filter((l) => !done.has(l.rel));
}

/**
 * `chunks`, failing with `stalled()` when the next one takes longer than `ms` (a guest can hold a
 * read open forever: a FIFO swapped in after the listing, a tar that stops).
 */
async function* untilIdle(chunks: AsyncIterable<Buffer>, ms: number, stalled: () => Error): AsyncGenerator<Buffer> {
  const it = chunks[Symbol.asyncIterator]();
  try {
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(stalled()), ms)));
      try {
        const r = await Promise.race([it.next(), timeout]);
        if (r.done) return;
        yield r.value;
      } finally {
        clearTimeout(timer);
      }
    }
  } finally {
    void it.return?.()?.catch?.(() => undefined);
  }
}

/** The feed's own failures (the session, the guest's tar) as TarError: they end the batch, not the pull. */
async function* guarded(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
  try {
    for await (const c of chunks) yield c;
  } catch (err) {
    throw new TarError(`the guest's stream failed: ${(err as Error).message}`);
  }
}

async function pullFile(ctx: FileContext, { rel, entry }: Listed, body?: AsyncIterable<Buffer>): Promise<void> {
  const { writer, summary } = ctx;
  const b = ctx.base.entries[rel];
  const held = heldBackReason(rel, ctx.rules);
  try {
    if (held && !isAllowed(rel, ctx.options.allow ?? [])) {
      await download(ctx, ctx.quarantine, rel, entry, () => ({ as: rel }), body);
      summary.heldBack.push({ path: printable(rel), reason: held, quarantined: ctx.quarantine.display(rel) });
      return;
    }
    if (b !== undefined && b.kind === 'file' && b.guestSize === entry.size && b.guestMtimeMs === entry.mtimeMs) {
      // The guest's file is as last pulled: whatever the host did with it since stands.
      ctx.next[rel] = b;
      summary.unchanged++;
      return;
    }
    let conflictCopy: string | undefined;
    let same = false;
    const written = await download(ctx, writer, rel, entry, async (sha256) => {
      const now = writer.stat(rel);
      if (!now) return { as: rel };
      if (b && hostMatchesBase(writer, rel, b)) return { as: rel };
      if (now.isFile() && (await writer.hashFile(rel)) === sha256) {
        same = true;
        return 'skip';
      }
      const dir = rel.split('/').slice(0, -1);
      conflictCopy = [...dir, conflictName(rel.split('/').pop()!, ctx.now())].join('/');
      return { as: conflictCopy };
    }, body);
    if (same) {
      const st = writer.stat(rel)!;
      ctx.next[rel] = { kind: 'file', size: st.size, mtimeMs: st.mtimeMs, ino: st.ino, sha256: written.sha256, guestSize: entry.size, guestMtimeMs: entry.mtimeMs };
      summary.unchanged++;
    } else if (conflictCopy) {
      // The host's version stays the one to protect: it never counts as unchanged since the base.
      ctx.next[rel] = { kind: 'file', size: -1, mtimeMs: -1, ino: -1, guestSize: entry.size, guestMtimeMs: entry.mtimeMs };
      summary.conflicts.push({ path: printable(rel), reason: b ? 'changed on the host and in the guest since the last pull' : 'the host already had a different file there', guestCopy: writer.display(conflictCopy) });
    } else if (written.stats) {
      ctx.next[rel] = { kind: 'file', size: written.stats.size, mtimeMs: written.stats.mtimeMs, ino: written.stats.ino, sha256: written.sha256, guestSize: entry.size, guestMtimeMs: entry.mtimeMs };
      summary.written++;
      summary.bytes += written.bytes;
    }
  } catch (err) {
    if (err instanceof Refused) ctx.refuse(rel, err.reason);
    else if (ctx.signal.aborted) return;
    else if (body && (err instanceof TarError || err instanceof GuestReadError)) throw err;
    else if (err instanceof GuestReadError) ctx.refuse(rel, err.message);
    else throw err;
    if (b) ctx.next[rel] = b;
  } finally {
    ctx.progress.files++;
    ctx.progress.current = rel;
    ctx.options.onProgress?.({ ...ctx.progress });
  }
}

class GuestReadError extends Error {}

/** Streams the guest file into `writer` at `rel`, never more than the size the guest listed. */
async function download(ctx: FileContext, writer: SafeHostWriter, rel: string, entry: GuestEntry, decide: (sha256: string, bytes: number) => CommitDecision | Promise<CommitDecision>, body?: AsyncIterable<Buffer>) {
  const guestPath = path.posix.join(ctx.options.guestPath, rel);
  // Refused on the listed size before a byte is read (a 1 TB sparse file costs nothing to list).
  writer.precheck(rel, entry.size);
  if (body) {
    const progress = ctx.progress;
    const counted = (async function* () {
      for await (const chunk of body) {
        progress.bytes += chunk.length;
        yield chunk;
      }
    })();
    return writer.writeFile(rel, counted, { announced: entry.size, mode: entry.mode, decide });
  }
  const stop = new AbortController();
  const onAbort = () => stop.abort();
  ctx.signal.addEventListener('abort', onAbort);
  const pipe = new PassThrough({ highWaterMark: 512 * 1024 });
  let readError: Error | undefined;
  const reading = ctx.source
    .read(
      guestPath,
      (chunk) => {
        if (pipe.destroyed) return;
        ctx.progress.bytes += chunk.length;
        if (!pipe.write(chunk)) return new Promise<void>((resolve) => pipe.once('drain', resolve).once('close', resolve));
      },
      stop.signal,
    )
    .then(
      () => pipe.end(),
      (err: Error) => {
        readError = err;
        pipe.destroy(new GuestReadError(`could not be read in the guest (${printable(err.message, 160)})`));
      },
    );
  try {
    const idle = ctx.options.idleTimeoutMs ?? IDLE_TIMEOUT_MS;
    const guardedPipe = untilIdle(pipe, idle, () => new GuestReadError(`was given up on: the guest sent nothing of it for ${idle / 1000} s`));
    return await writer.writeFile(rel, guardedPipe, { announced: entry.size, mode: entry.mode, decide });
  } catch (err) {
    if (readError && !(err instanceof Refused)) throw new GuestReadError(`could not be read in the guest (${printable(readError.message, 160)})`);
    throw err;
  } finally {
    ctx.signal.removeEventListener('abort', onAbort);
    stop.abort();
    pipe.destroy();
    await reading;
  }
}

async function pullLink(ctx: FileContext, { rel, entry }: Listed): Promise<void> {
  const { writer, summary } = ctx;
  const held = heldBackReason(rel, ctx.rules);
  if (held && !isAllowed(rel, ctx.options.allow ?? [])) {
    summary.heldBack.push({ path: printable(rel), reason: `${held} (a link; not kept)` });
    return;
  }
  let target: string;
  try {
    target = await ctx.source.readlink(path.posix.join(ctx.options.guestPath, rel));
  } catch (err) {
    return ctx.refuse(rel, `is a link that could not be read in the guest (${printable((err as Error).message, 160)})`);
  }
  try {
    const there = writer.readlink(rel);
    if (there === target) {
      ctx.next[rel] = { kind: 'symlink', size: 0, mtimeMs: 0, ino: 0, target, guestSize: entry.size, guestMtimeMs: entry.mtimeMs };
      summary.unchanged++;
      return;
    }
    const b = ctx.base.entries[rel];
    if (there !== undefined && b?.kind === 'symlink' && b.target === there) writer.remove(rel);
    else if (writer.stat(rel)) {
      summary.conflicts.push({ path: printable(rel), reason: `the host has something else there; the guest's link (-> ${printable(target, 120)}) was not made` });
      return;
    }
    writer.symlink(rel, target);
    ctx.next[rel] = { kind: 'symlink', size: 0, mtimeMs: 0, ino: 0, target, guestSize: entry.size, guestMtimeMs: entry.mtimeMs };
    summary.written++;
  } catch (err) {
    if (!(err instanceof Refused)) throw err;
    ctx.refuse(rel, err.reason);
  }
}

/** Whether the host's `rel` is still what the last pull left (a file by size, mtime and inode; a link by target). */
function hostMatchesBase(writer: SafeHostWriter, rel: string, b: BaseEntry): boolean {
  const st = writer.stat(rel);
  if (!st) return false;
  if (b.kind === 'symlink') return st.isSymbolicLink() && writer.readlink(rel) === b.target;
  return st.isFile() && st.size === b.size && st.mtimeMs === b.mtimeMs && st.ino === b.ino;
}

/** Whether `dir`'s filesystem treats names differing only in case as one (macOS, Windows by default). */
function isCaseInsensitive(dir: string): boolean {
  const probe = path.join(dir, `.sandboxvm-pull-case-${process.pid}`);
  try {
    fs.writeFileSync(probe, '', { flag: 'wx' });
  } catch {
    return process.platform === 'darwin' || process.platform === 'win32';
  }
  try {
    return fs.existsSync(path.join(dir, `.SANDBOXVM-PULL-CASE-${process.pid}`));
  } finally {
    fs.rmSync(probe, { force: true });
  }
}

async function pool<T>(items: T[], n: number, signal: AbortSignal, run: (item: T) => Promise<void>): Promise<void> {
  let i = 0;
  const workers = Array.from({ length: Math.max(1, Math.min(n, items.length)) }, async () => {
    while (i < items.length && !signal.aborted) await run(items[i++]);
  });
  await Promise.all(workers);
}

export { describeSize };
