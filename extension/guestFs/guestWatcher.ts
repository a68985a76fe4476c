/**
 * One `watch` of the guest file system provider: an agent `watch` session (fs.watch in the guest)
 * whose events become FileChangeEvents. Events are untrusted: each path is checked
 * (checkRelativePath), at most MAX_PENDING wait at once (beyond that a change of the watched
 * folder stands for all of them), and they are delivered in batches every BATCH_MS. A `rename` is
 * told apart into created or deleted with a stat. When the session ends while the VM runs (a worker
 * takeover, a watcher error) it is opened again with backoff; when the VM stops it waits for
 * `restart()` (the VM runs again), which also reports the watched path as changed so open editors
 * and the Explorer read it afresh.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Session, SessionClient } from '../../runtime/client/sessionClient';
import { excludeMatcher } from './globMatcher';
import { checkRelativePath } from './guestNames';
import { guestUri } from './guestUri';

const BATCH_MS = 50;
const MAX_PENDING = 2000;
/** Renames told apart with a stat per batch, STAT_PARALLEL at a time; beyond this they are reported as changes. */
const MAX_STATS = 100;
const STAT_PARALLEL = 4;
const RETRY_MS = [1000, 2000, 5000, 10_000];

export interface WatchTarget {
  vm: string;
  path: string;
  recursive: boolean;
  excludes: readonly string[];
}

export interface WatcherDeps {
  sessions(vm: string): Promise<SessionClient>;
  reachable(vm: string): boolean;
  fire(events: vscode.FileChangeEvent[]): void;
  log(message: string): void;
}

export class GuestWatcher implements vscode.Disposable {
  private session?: Session;
  private disposed = false;
  private pending = new Map<string, 'change' | 'rename'>();
  private overflow = false;
  private timer?: NodeJS.Timeout;
  private retryTimer?: NodeJS.Timeout;
  private attempts = 0;
  /** Set once known: a watched file reports its own name, a folder its entries' paths. */
  private isFile?: boolean;
  private readonly excluded: (relative: string) => boolean;
  private opening?: Promise<void>;
  private reopenAfterFlush = false;
  private flushing: Promise<void> = Promise.resolve();

  constructor(readonly target: WatchTarget, private readonly deps: WatcherDeps) {
    this.excluded = excludeMatcher(target.excludes);
    void this.open();
  }

  /** The VM runs again: a new session, and the watched path reported changed. */
  restart(): void {
    if (this.disposed) return;
    clearTimeout(this.retryTimer);
    this.attempts = 0;
    void this.open().then(() => {
      if (!this.disposed) this.deps.fire([{ type: vscode.FileChangeType.Changed, uri: guestUri(this.target.vm, this.target.path) }]);
    });
  }

  private open(): Promise<void> {
    this.opening ??= this.openOnce().finally(() => (this.opening = undefined));
    return this.opening;
  }

  private async openOnce(): Promise<void> {
    if (this.disposed || this.session) return;
    const { vm, path: dir, recursive } = this.target;
    try {
      const sessions = await this.deps.sessions(vm);
      if (this.isFile === undefined) {
        const entry = await sessions.call<{ type: string }>('stat', { path: dir, follow: true }).catch(() => undefined);
        this.isFile = entry !== undefined && entry.type !== 'dir';
      }
      const session = await sessions.open({ kind: 'watch', path: dir, recursive }, {
        onData: () => undefined,
        onEvent: (kind, relative) => this.heard(kind, relative),
        onExit: (result) => {
          if (this.session !== session) return;
          this.session = undefined;
          if (!this.disposed) this.lost(result.error ?? `the watch ended (code ${result.code})`);
        },
      });
      if (this.disposed) return void session.close().catch(() => undefined);
      this.session = session;
      this.attempts = 0;
    } catch (err) {
      this.lost((err as Error).message);
    }
  }

  /** The session ended or could not open: again soon while the VM runs, else at restart(). */
  private lost(reason: string): void {
    if (this.disposed) return;
    if (!this.deps.reachable(this.target.vm)) return;
    const delay = RETRY_MS[Math.min(this.attempts++, RETRY_MS.length - 1)];
    this.deps.log(`watch of ${this.target.vm}:${this.target.path} ended (${reason.slice(0, 200)}); again in ${delay / 1000} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => void this.open(), delay);
  }

  private heard(kind: 'change' | 'rename', relative: string): void {
    if (this.disposed) return;
    const segments = checkRelativePath(relative);
    if (!segments) return;
    const rel = segments.join('/');
    if (this.excluded(rel)) return;
    // A watched file replaced by a rename (an editor's atomic save, ours too) leaves the watch on
    // the old inode: watch the path afresh once this batch is out.
    if (this.isFile && kind === 'rename') this.reopenAfterFlush = true;
    if (this.pending.size >= MAX_PENDING && !this.pending.has(rel)) this.overflow = true;
    else if (this.pending.get(rel) !== 'rename') this.pending.set(rel, kind);
    // One batch at a time: the next waits for the stats of the one before.
    this.timer ??= setTimeout(() => (this.flushing = this.flushing.then(() => this.flush()).catch((err: Error) => this.deps.log(`a batch of changes was dropped: ${err.message}`))), BATCH_MS);
  }

  private async flush(): Promise<void> {
    this.timer = undefined;
    if (this.disposed) return;
    const batch = this.pending;
    const overflow = this.overflow;
    this.pending = new Map();
    this.overflow = false;
    const { vm, path: dir } = this.target;
    const events: vscode.FileChangeEvent[] = [];
    const sessions = await this.deps.sessions(vm).catch(() => undefined);
    const renames: [string, vscode.Uri][] = [];
    for (const [rel, kind] of batch) {
      // A watched file reports its own name: the event is about the file itself.
      const guestPath = this.isFile ? dir : path.posix.join(dir, rel);
      const uri = guestUri(vm, guestPath);
      if (kind === 'change' || !sessions || renames.length >= MAX_STATS) events.push({ type: vscode.FileChangeType.Changed, uri });
      else renames.push([guestPath, uri]);
    }
    let next = 0;
    const statNext = async () => {
      while (next < renames.length) {
        const [guestPath, uri] = renames[next++];
        const exists = await sessions!.call('stat', { path: guestPath, follow: false }).then(() => true, () => false);
        events.push({ type: exists ? vscode.FileChangeType.Created : vscode.FileChangeType.Deleted, uri });
      }
    };
    await Promise.all(Array.from({ length: STAT_PARALLEL }, statNext));
    if (overflow) events.push({ type: vscode.FileChangeType.Changed, uri: guestUri(vm, dir) });
    if (!this.disposed && events.length > 0) this.deps.fire(events);
    if (this.reopenAfterFlush && !this.disposed) {
      this.reopenAfterFlush = false;
      const old = this.session;
      this.session = undefined;
      void old?.close().catch(() => undefined);
      void this.open();
    }
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    clearTimeout(this.timer);
    clearTimeout(this.retryTimer);
    void this.session?.close().catch(() => undefined);
    this.session = undefined;
  }
}
