/**
 * Watches a guest path for a `watch` session: a file, a folder, or (recursive) a folder and every
 * folder under it, with one inotify watch per folder (fs.watch without `recursive`).
 *
 * Not Node 20's own `fs.watch(dir, { recursive: true })` on Linux: that keeps a watch and a stat per
 * *file* and reads a whole folder again, synchronously, on every event in it, so creating 1,000
 * files in one folder cost ~500,000 stats on the agent's one thread and stopped its heartbeat for
 * over a minute under TCG. Here folders are read asynchronously, once when found; at most
 * MAX_FOLDERS are watched per session (the rest are reported once through `onLimit`).
 *
 * Events: `(kind, relative path)` as fs.watch gives them; for a folder created under a recursive
 * watch, its entries at the time it is first read are reported as `rename` too (they may have been
 * made before its watch was set up).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const MAX_FOLDERS = 4096;

export class TreeWatcher {
  private readonly watchers = new Map<string, fs.FSWatcher>();
  private closed = false;
  private limited = false;
  private readonly rootIsFile: boolean;

  constructor(
    private readonly root: string,
    private readonly recursive: boolean,
    private readonly onEvent: (kind: 'change' | 'rename', relative: string) => void,
    private readonly onError: (message: string) => void,
    private readonly onLimit: (message: string) => void = () => undefined,
  ) {
    this.rootIsFile = !fs.statSync(root).isDirectory();
    this.add(root, false);
    if (!this.rootIsFile && recursive) void this.scan(root, false);
  }

  /** Watches `dir` (or the root file); false when the limit is reached or it cannot be watched. */
  private add(dir: string, quiet = true): boolean {
    if (this.closed || this.watchers.has(dir)) return false;
    if (this.watchers.size >= MAX_FOLDERS) {
      if (!this.limited) this.onLimit(`more than ${MAX_FOLDERS} folders under ${this.root}; changes in the others are not reported`);
      this.limited = true;
      return false;
    }
    let watcher: fs.FSWatcher;
    try {
      watcher = fs.watch(dir, { persistent: false });
    } catch (err) {
      if (!quiet) throw err;
      return false;
    }
    this.watchers.set(dir, watcher);
    watcher.on('change', (kind, name) => this.heard(dir, kind === 'rename' ? 'rename' : 'change', name == null ? '' : String(name)));
    watcher.on('error', (err) => {
      if (dir === this.root) return this.onError(`watching ${this.root} failed: ${err.message}`);
      this.drop(dir);
    });
    return true;
  }

  private heard(dir: string, kind: 'change' | 'rename', name: string): void {
    if (this.closed) return;
    // A watched file reports its own name, as fs.watch does.
    if (this.rootIsFile) return this.onEvent(kind, path.basename(this.root));
    if (!name) return;
    const full = path.join(dir, name);
    this.onEvent(kind, path.relative(this.root, full));
    if (!this.recursive || kind !== 'rename') return;
    fs.promises.lstat(full).then(
      (st) => {
        if (st.isDirectory() && this.add(full)) void this.scan(full, true);
      },
      () => this.dropUnder(full),
    );
  }

  /** Reads `dir` and watches the folders in it, breadth first; `report`: its entries are new. */
  private async scan(start: string, report: boolean): Promise<void> {
    const queue = [start];
    while (queue.length > 0 && !this.closed) {
      const dir = queue.shift()!;
      let entries: fs.Dirent[];
      try {
        entries = await fs.promises.readdir(dir, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        const full = path.join(dir, e.name);
        if (report) this.onEvent('rename', path.relative(this.root, full));
        if (e.isDirectory() && this.add(full)) queue.push(full);
      }
    }
  }

  private drop(dir: string): void {
    this.watchers.get(dir)?.close();
    this.watchers.delete(dir);
  }

  /** A folder went away (or was renamed): its watches and those under it end. */
  private dropUnder(gone: string): void {
    if (gone === this.root) return;
    for (const dir of [...this.watchers.keys()]) if (dir === gone || dir.startsWith(gone + path.sep)) this.drop(dir);
  }

  close(): void {
    this.closed = true;
    for (const w of this.watchers.values()) w.close();
    this.watchers.clear();
  }
}
