/**
 * Host change notifications for a synced folder: one fs.watch (inotify on Linux) per directory
 * that is synced, so ignored directories (node_modules) cost nothing. Events are coalesced: the
 * first change of a burst starts a short timer, and everything that changed until it fires is
 * handed over at once as a set of relative paths (a directory's own path when the platform does
 * not name the entry). Renames arrive as their two names; the engine looks at each.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { joinRel } from './relPath';

/** How long a burst may gather before it is handed over. */
export const COALESCE_MS = 8;

export class TreeWatcher {
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private dirty = new Set<string>();
  private timer?: NodeJS.Timeout;
  private disposed = false;

  constructor(private readonly root: string, private readonly onChanges: (paths: Set<string>) => void, private readonly log: (m: string) => void) {}

  /** Watches exactly `dirs` ('' is the root): new ones are added, others closed. */
  setDirs(dirs: Iterable<string>): void {
    const wanted = new Set(dirs);
    for (const [d, w] of this.watchers) {
      if (!wanted.has(d)) {
        w.close();
        this.watchers.delete(d);
      }
    }
    for (const d of wanted) this.add(d);
  }

  /** Starts watching `dir` (no-op when watched). */
  add(dir: string): void {
    if (this.disposed || this.watchers.has(dir)) return;
    let w: fs.FSWatcher;
    try {
      w = fs.watch(dir === '' ? this.root : path.join(this.root, dir), { persistent: false });
    } catch (err) {
      // Gone already (the change that removed it is reported by its parent), or no watches left.
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'ENOTDIR') this.log(`cannot watch ${path.join(this.root, dir)}: ${code ?? (err as Error).message}`);
      return;
    }
    w.on('change', (_kind, name) => this.mark(name ? joinRel(dir, String(name)) : dir));
    w.on('error', () => {
      w.close();
      if (this.watchers.get(dir) === w) this.watchers.delete(dir);
      this.mark(dir);
    });
    this.watchers.set(dir, w);
  }

  /** Stops watching `dir` and everything below it. */
  removeTree(dir: string): void {
    for (const [d, w] of this.watchers) {
      if (d === dir || d.startsWith(`${dir}/`)) {
        w.close();
        this.watchers.delete(d);
      }
    }
  }

  get count(): number {
    return this.watchers.size;
  }

  private mark(rel: string): void {
    if (this.disposed) return;
    this.dirty.add(rel);
    this.timer ??= setTimeout(() => {
      this.timer = undefined;
      const batch = this.dirty;
      this.dirty = new Set();
      this.onChanges(batch);
    }, COALESCE_MS);
  }

  dispose(): void {
    this.disposed = true;
    clearTimeout(this.timer);
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}
