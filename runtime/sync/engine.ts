/**
 * One host folder kept equal to one guest folder, host to guest (like a mutagen session in its
 * one-way-replica mode). While the VM runs the engine holds a `sync` session on it:
 *   1. scan the host folder, ask the guest for its manifest, send only what differs (a first copy
 *      into a folder that already holds the files sends nothing);
 *   2. then send each host change as it happens (watcher.ts), in batches.
 * When the session ends (the VM paused long, was saved, its worker or agent restarted, the
 * service restarted) the engine starts again at 1 as soon as the VM runs: the manifests are
 * compared, so it catches up without a full copy. Status goes to `onStatus` as whole snapshots.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SessionClient } from '../client/sessionClient';
import { SyncChannel, type GuestFailure } from './channel';
import { baseRules, type IgnoreRules } from './ignore';
import { planSync, sameEntry, type SyncPlan } from './plan';
import { pushPlan, type PushProgress, type PushResult } from './push';
import { entryOf, linkStaysInside, scanTree, type ScanResult } from './scan';
import type { SyncSpec, SyncStatus } from './types';
import { TreeWatcher } from './watcher';
import type { TreeEntry } from './wire';

/** Between attempts after a failure: doubles from the first to the last. */
const RETRY_MS = [500, 1000, 2000, 5000];
/** States an error stays shown through: only `in-sync` (or `waiting`) clears it. */
const BUSY = new Set(['connecting', 'scanning', 'syncing']);
/**
 * A catch-up with at least this many files goes to the guest's native writer (a session of its own
 * costs ~0.1 s). For benchmarks, the service's environment can choose: SANDBOXVM_SYNC_WRITER=node
 * keeps every file in the receiver, SANDBOXVM_SYNC_WRITERS=N sets the writer's thread count
 * (default: the guest's CPUs, at most 4).
 */
const BULK_FILES = 200;

export interface EngineHost {
  /** A session client on the VM's current worker; rejects when the VM is not running. */
  attach(): Promise<SessionClient>;
  /** Whether the VM runs (or is paused) now. */
  running(): boolean;
  log(message: string): void;
}

export class SyncEngine {
  private status: SyncStatus;
  private readonly watcher: TreeWatcher;
  private rules: IgnoreRules;
  private model = new Map<string, TreeEntry>();
  private pending = new Set<string>();
  private wake?: () => void;
  private disposed = false;
  private loop?: Promise<void>;
  private failures = 0;
  private channel?: SyncChannel;
  private sessions?: SessionClient;

  constructor(readonly spec: SyncSpec, private readonly host: EngineHost, private readonly onStatus: (s: SyncStatus) => void) {
    this.rules = baseRules(spec.ignore, true);
    this.watcher = new TreeWatcher(spec.hostDir, (paths) => this.changed(paths), host.log);
    this.status = { id: spec.id, vm: spec.vm, hostDir: spec.hostDir, guestPath: spec.guestPath, state: 'waiting', message: 'waiting for the VM to run', files: 0, totalFiles: 0, bytes: 0, totalBytes: 0, warnings: [] };
  }

  get current(): SyncStatus {
    return this.status;
  }

  /** Runs (again) now if the VM runs; call it whenever the VM's state changes. Idempotent. */
  kick(): void {
    if (this.disposed) return;
    if (!this.loop) {
      this.loop = this.run().finally(() => (this.loop = undefined));
      return;
    }
    this.wake?.();
  }

  private publish(patch: Partial<SyncStatus>): void {
    if (this.status.state === 'error' && (patch.state === undefined || BUSY.has(patch.state))) {
      const { state: _state, message: _message, ...progress } = patch;
      patch = progress;
    }
    this.status = { ...this.status, ...patch };
    this.onStatus(this.status);
  }

  private async run(): Promise<void> {
    while (!this.disposed) {
      if (!this.host.running()) {
        this.publish({ state: 'waiting', message: 'waiting for the VM to run' });
        this.channel = undefined;
        await this.sleep();
        continue;
      }
      try {
        await this.session();
        this.failures = 0;
      } catch (err) {
        if (this.disposed) return;
        const message = (err as Error).message ?? String(err);
        if (this.host.running()) {
          this.publish({ state: 'error', message: `${message}; retrying` });
          this.host.log(`sync ${this.spec.id} (${this.spec.hostDir} -> ${this.spec.vm}:${this.spec.guestPath}): ${message}`);
        }
      } finally {
        this.sessions?.dispose();
        this.sessions = undefined;
        this.channel = undefined;
      }
      if (this.disposed) return;
      await this.sleep(RETRY_MS[Math.min(this.failures++, RETRY_MS.length - 1)]);
    }
  }

  /** Waits for `kick` or a change (or `ms`). */
  private sleep(ms?: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.wake = () => {
        this.wake = undefined;
        done();
      };
    });
  }

  /** One session: catch up, then follow changes until it ends (throws why). */
  private async session(): Promise<void> {
    const root = this.spec.hostDir;
    const st = await fs.promises.stat(root).catch(() => undefined);
    if (!st?.isDirectory()) throw new Error(`the host folder ${root} is missing or not a directory`);
    this.publish({ state: 'connecting', message: 'connecting to the guest' });
    this.pending.clear();
    const t0 = Date.now();
    // The host scan runs while the guest's receiver starts (each takes a few hundred ms under TCG).
    const scanning = scanTree(root, baseRules(this.spec.ignore, true), { gitignore: this.spec.gitignore }).then((r) => ({ r, ms: Date.now() - t0 }));
    scanning.catch(() => undefined);
    this.sessions = await this.host.attach();
    const channel = await SyncChannel.open(this.sessions, this.spec.guestPath);
    this.channel = channel;
    const connectMs = Date.now() - t0;
    this.publish({ state: 'scanning', message: 'comparing the host and guest folders' });
    const { r: scan, ms: scanMs } = await scanning;
    this.rules = scan.rules;
    this.watcher.setDirs(scan.dirs);
    // A host folder that could need a bulk copy: the native writer starts while the guest walks its folder.
    const writerOpening = scan.entries.size >= BULK_FILES && process.env.SANDBOXVM_SYNC_WRITER !== 'node' ? this.openWriter() : undefined;
    try {
      return await this.catchUp(channel, scan, { t0, connectMs, scanMs }, writerOpening);
    } finally {
      // Closed once the copy is done, used or not, or when the session fails first (closing twice is harmless).
      void writerOpening?.then((w) => w?.close());
    }
  }

  /** Step 1 of a session (the manifest, the plan, the copy), then step 2: follows changes until the session ends. */
  private async catchUp(channel: SyncChannel, scan: ScanResult, times: { t0: number; connectMs: number; scanMs: number }, writerOpening: Promise<SyncChannel | undefined> | undefined): Promise<void> {
    const { t0, connectMs, scanMs } = times;
    const guest = await channel.manifest(scan.rules.sources.map((g) => ({ base: g.base, patterns: [...g.patterns] }))).catch((err: Error) => {
      if (String(err?.message).includes(`${this.spec.guestPath} is not a directory`)) throw new Error(`the guest folder ${this.spec.guestPath} is no longer a folder (something else is in its place); remove that in the guest and the sync starts again by itself`);
      throw err;
    });
    const manifestMs = Date.now() - t0 - Math.max(connectMs, scanMs);
    this.model = guest;
    const plan = planSync(scan.entries, guest);
    const count = plan.files.length + plan.links.length + plan.dirs.length + plan.removes.length;
    this.publish({ state: count ? 'syncing' : 'in-sync', message: count ? `syncing ${plan.files.length} file(s)` : 'in sync', files: 0, totalFiles: plan.files.length, bytes: 0, totalBytes: plan.bytes, equal: plan.equal, warnings: scan.warnings.slice(0, 20) });
    const t1 = Date.now();
    const onProgress = (p: PushProgress) => this.publish({ files: p.files, bytes: p.bytes, message: `syncing ${p.totalFiles - p.files} file(s)` });
    const { pushed, writer } = await this.pushFirst(channel, plan, onProgress, writerOpening);
    void writerOpening?.then((w) => w?.close());
    for (const p of pushed.changed) this.pending.add(p);
    this.throwIfFailed(pushed.failed);
    const phases = { connectMs, scanMs, manifestMs, pushMs: Date.now() - t1, writer };
    this.publish({ state: 'in-sync', message: 'in sync', files: pushed.files, bytes: pushed.bytes, lastSyncAt: Date.now(), firstSyncMs: Date.now() - t1, phases });
    // Follow changes until the session ends.
    for (;;) {
      if (this.pending.size === 0) {
        const ended = await Promise.race([channel.ended, this.sleep().then(() => undefined)]);
        if (ended !== undefined) throw new Error(ended);
        if (this.disposed) return;
        if (!this.host.running()) return;
        continue;
      }
      const batch = this.pending;
      this.pending = new Set();
      await this.apply(channel, batch);
    }
  }

  /**
   * The catch-up copy. With at least BULK_FILES files it goes to the guest's native writer
   * (several writer threads) in a session of its own: removals first and links last through the
   * receiver, directories and files through the writer. Where the writer cannot start (an image
   * made before it existed) everything goes through the receiver, as before.
   */
  private async pushFirst(channel: SyncChannel, plan: SyncPlan, onProgress: (p: PushProgress) => void, writerOpening: Promise<SyncChannel | undefined> | undefined): Promise<{ pushed: PushResult; writer: 'node' | 'native' }> {
    const root = this.spec.hostDir;
    const bulk = plan.files.length >= BULK_FILES && writerOpening ? await writerOpening : undefined;
    if (!bulk) return { pushed: await pushPlan(channel, root, plan, this.model, onProgress), writer: 'node' };
    try {
      const removed = await pushPlan(channel, root, { ...plan, dirs: [], links: [], files: [], bytes: 0 }, this.model);
      const copied = await pushPlan(bulk, root, { ...plan, removes: [], links: [] }, this.model, onProgress);
      const linked = await pushPlan(channel, root, { ...plan, removes: [], dirs: [], files: [], bytes: 0 }, this.model);
      const all = [removed, copied, linked];
      return { pushed: { files: copied.files, bytes: copied.bytes, changed: all.flatMap((r) => r.changed), failed: all.flatMap((r) => r.failed) }, writer: 'native' };
    } finally {
      await bulk.close();
    }
  }

  /** The native writer, answering (a flush acknowledged), or undefined where it cannot run. */
  private async openWriter(): Promise<SyncChannel | undefined> {
    let bulk: SyncChannel | undefined;
    try {
      const threads = Number(process.env.SANDBOXVM_SYNC_WRITERS);
      bulk = await SyncChannel.open(this.sessions!, this.spec.guestPath, 'writer', Number.isInteger(threads) && threads >= 0 && threads <= 16 ? threads : undefined);
      await bulk.flush();
      return bulk;
    } catch (err) {
      this.host.log(`sync ${this.spec.id}: the guest's native writer is not available (${(err as Error).message}); the receiver writes the files`);
      await bulk?.close();
      return undefined;
    }
  }

  private changed(paths: Set<string>): void {
    for (const p of paths) this.pending.add(p);
    this.wake?.();
  }

  /** Sends what the changed `paths` now are. */
  private async apply(channel: SyncChannel, paths: Set<string>): Promise<void> {
    const root = this.spec.hostDir;
    const host = new Map<string, TreeEntry>();
    const removes: string[] = [];
    const subtrees: string[] = [];
    let rescan = false;
    for (const p of [...paths].sort()) {
      if (p === '' || path.posix.basename(p) === '.gitignore') {
        rescan = true;
        continue;
      }
      const st = await fs.promises.lstat(path.join(root, p)).catch(() => undefined);
      let entry: TreeEntry | undefined;
      if (st && !this.rules.ignores(p, st.isDirectory())) {
        let target: string | undefined;
        if (st.isSymbolicLink()) {
          target = await fs.promises.readlink(path.join(root, p)).catch(() => undefined);
          if (target !== undefined && !linkStaysInside(p, target)) target = undefined;
        }
        entry = entryOf(p, st, target);
      }
      if (!entry) {
        if (this.model.has(p) && !(st && this.rules.ignores(p, st.isDirectory()))) removes.push(p);
        this.watcher.removeTree(p);
        continue;
      }
      const known = this.model.get(p);
      if (entry.type === 'dir' && known?.type !== 'dir') subtrees.push(p);
      else if (!sameEntry(entry, known)) host.set(p, entry);
    }
    if (rescan) {
      const scan = await scanTree(root, baseRules(this.spec.ignore, true), { gitignore: this.spec.gitignore });
      this.rules = scan.rules;
      this.watcher.setDirs(scan.dirs);
      return this.send(channel, planSync(scan.entries, this.model));
    }
    const plan: SyncPlan = { removes: removes.filter((r, i) => i === 0 || !removes.slice(0, i).some((o) => r.startsWith(`${o}/`))), dirs: [], links: [], files: [], equal: 0, bytes: 0 };
    for (const e of host.values()) {
      if (e.type === 'dir') plan.dirs.push(e);
      else if (e.type === 'symlink') plan.links.push(e);
      else {
        plan.files.push(e);
        plan.bytes += e.size;
      }
    }
    for (const dir of subtrees) {
      // A new directory (made, or renamed in): watch it first, then scan it, so nothing made inside meanwhile is missed.
      this.watcher.add(dir);
      const scan = await scanTree(root, this.rules, { gitignore: this.spec.gitignore, under: dir });
      for (const d of scan.dirs) this.watcher.add(d);
      const dirEntry = await fs.promises.lstat(path.join(root, dir)).then((s) => entryOf(dir, s)).catch(() => undefined);
      if (dirEntry) scan.entries.set(dir, dirEntry);
      const sub = planSync(scan.entries, new Map([...this.model].filter(([k]) => k === dir || k.startsWith(`${dir}/`))), dir);
      if (this.model.has(dir)) sub.removes.unshift(dir);
      plan.removes.push(...sub.removes);
      plan.dirs.push(...sub.dirs);
      plan.links.push(...sub.links);
      plan.files.push(...sub.files);
      plan.bytes += sub.bytes;
    }
    plan.dirs.sort((a, b) => (a.path < b.path ? -1 : 1));
    await this.send(channel, plan);
  }

  private async send(channel: SyncChannel, plan: SyncPlan): Promise<void> {
    const n = plan.files.length + plan.links.length + plan.dirs.length + plan.removes.length;
    if (n === 0) return;
    this.publish({ state: 'syncing', message: `syncing ${plan.files.length || n} ${plan.files.length ? 'file(s)' : 'change(s)'}`, files: 0, totalFiles: plan.files.length, bytes: 0, totalBytes: plan.bytes });
    const pushed = await pushPlan(channel, this.spec.hostDir, plan, this.model);
    for (const p of pushed.changed) this.pending.add(p);
    this.throwIfFailed(pushed.failed);
    if (this.status.state === 'syncing') this.publish({ state: 'in-sync', message: 'in sync', files: pushed.files, bytes: pushed.bytes, lastSyncAt: Date.now() });
  }

  /**
   * Ends the session when the guest could not apply something: the run loop shows why as an
   * error and tries again (a full comparison) after a pause or at the next change, until it works.
   */
  private throwIfFailed(failed: GuestFailure[]): void {
    if (failed.length === 0) return;
    const first = failed[0];
    throw new Error(`cannot write ${this.spec.guestPath}/${first.path} in the guest: ${first.message}${failed.length > 1 ? ` (and ${failed.length - 1} more)` : ''}; fix that in the guest and the sync tries again by itself`);
  }

  /** Stops syncing; what the guest has stays. */
  async dispose(): Promise<void> {
    this.disposed = true;
    this.watcher.dispose();
    this.wake?.();
    await this.channel?.close().catch(() => undefined);
    this.sessions?.dispose();
    await this.loop?.catch(() => undefined);
  }
}
