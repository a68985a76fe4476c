/**
 * Guest files as a VS Code file system: `sandboxvm://<vm>/<guest path>` (guestUri.ts) over the
 * agent's file calls (runtime/client/guestFiles.ts) and its `watch` sessions (guestWatcher.ts).
 *
 * Contracts, as VS Code's FileSystemProvider documents them: stat reports a symbolic link as
 * `SymbolicLink | <type of its target>` (`SymbolicLink | Unknown` when it leads nowhere);
 * readFile streams the file (a read session) into one buffer and refuses files over MAX_READ_BYTES
 * (the guest's claimed size is not trusted: the bytes received are counted); writeFile honours
 * `create` / `overwrite` and replaces the file atomically in the guest (the agent's temporary and
 * rename, as `sandboxvm cp`), keeping an existing file's mode; rename honours `overwrite`; delete
 * honours `recursive`. Failures are FileSystemErrors (guestFsErrors.ts); a VM that is not running
 * gives Unavailable with one sentence saying so, and everything works again once it runs.
 * Everything the guest answers is bounded: names are checked, a listing stops at MAX_ENTRIES.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { GuestFiles, type GuestEntry } from '../../runtime/client/guestFiles';
import type { SessionClient } from '../../runtime/client/sessionClient';
import { isReachable, type GuestConnections } from './guestConnections';
import { isUnreachable, toFileSystemError } from './guestFsErrors';
import { checkGuestName } from './guestNames';
import { parseGuestUri, type GuestLocation } from './guestUri';
import { GuestWatcher } from './guestWatcher';
import type { VmModel } from '../model/vmModel';

/** The largest file readFile hands VS Code; above it, Copy from VM is the way. */
export const MAX_READ_BYTES = 512 * 1024 * 1024;
/** The most entries one folder lists (the rest are left out and logged). */
export const MAX_ENTRIES = 100_000;
/** Symbolic links in one listing whose target type is asked (the rest read as links to Unknown). */
const MAX_LINK_STATS = 500;
const LINK_STAT_PARALLEL = 8;
/** How often a repeatable call is tried again, each time after its agent answers again. */
const RETRIES = 2;
/** How long a repeatable call waits for an agent that stopped answering before it fails. */
const RETRY_WAIT_MS = 30_000;

function typeOf(type: GuestEntry['type'] | undefined): vscode.FileType {
  switch (type) {
    case 'file':
      return vscode.FileType.File;
    case 'dir':
      return vscode.FileType.Directory;
    case 'symlink':
      return vscode.FileType.SymbolicLink;
    default:
      return vscode.FileType.Unknown;
  }
}

export class GuestFileSystemProvider implements vscode.FileSystemProvider, vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<vscode.FileChangeEvent[]>();
  readonly onDidChangeFile = this.changed.event;
  private readonly watchers = new Set<GuestWatcher>();
  private readonly subscription: vscode.Disposable;

  constructor(private readonly connections: GuestConnections, private readonly model: VmModel, private readonly log: (message: string) => void) {
    this.subscription = connections.onDidRun((vm) => {
      for (const w of this.watchers) if (w.target.vm === vm) w.restart();
    });
  }

  /**
   * Runs `work` with the VM's file calls; failures become FileSystemErrors about `uri`. `retry`
   * (operations that are safe to repeat: reads, and writes, which replace the file whole): once more
   * when the VM is running but its agent was briefly out of reach, each time once it answers again.
   */
  private async with<T>(uri: vscode.Uri, work: (files: GuestFiles, at: GuestLocation, sessions: SessionClient) => Promise<T>, retry = false): Promise<T> {
    const at = parseGuestUri(uri);
    for (let attempt = 0; ; attempt++) {
      try {
        const sessions = await this.connections.sessions(at.vm);
        return await work(new GuestFiles(sessions), at, sessions);
      } catch (err) {
        if (isUnreachable(err) && !(err instanceof vscode.FileSystemError)) this.connections.drop(at.vm);
        const again = retry && attempt < RETRIES && isUnreachable(err) && this.model.get(at.vm)?.state === 'running' && (await this.connections.settled(at.vm, RETRY_WAIT_MS));
        if (again) {
          this.log(`${at.vm}:${at.path}: ${(err as Error).message}; trying again`);
          continue;
        }
        throw toFileSystemError(err, uri, () => this.connections.unavailableMessage(at.vm));
      }
    }
  }

  stat(uri: vscode.Uri): Promise<vscode.FileStat> {
    return this.with(uri, async (files, at) => {
      const entry = await files.stat(at.path, false);
      let type = typeOf(entry.type);
      let shown = entry;
      if (entry.type === 'symlink') {
        const target = await files.stat(at.path, true).catch(() => undefined);
        type = vscode.FileType.SymbolicLink | (target ? typeOf(target.type) : vscode.FileType.Unknown);
        if (target) shown = target;
      }
      return { type, ctime: shown.mtimeMs, mtime: shown.mtimeMs, size: shown.size };
    }, true);
  }

  readDirectory(uri: vscode.Uri): Promise<[string, vscode.FileType][]> {
    return this.with(uri, async (_files, at, sessions) => {
      const entries: GuestEntry[] = [];
      let offset: number | null = 0;
      // Pages must move forward; a guest that pages forever stops at MAX_ENTRIES.
      while (offset !== null && entries.length < MAX_ENTRIES) {
        const page: { entries: GuestEntry[]; next: number | null } = await sessions.call('list', { path: at.path, offset });
        entries.push(...page.entries);
        if (page.next !== null && page.next <= offset) break;
        offset = page.next;
      }
      if (entries.length >= MAX_ENTRIES) this.log(`${at.vm}:${at.path} lists more than ${MAX_ENTRIES} entries; the rest are not shown`);
      const out: [string, vscode.FileType][] = [];
      const links: number[] = [];
      const seen = new Set<string>();
      for (const e of entries.slice(0, MAX_ENTRIES)) {
        const name = checkGuestName(e.name);
        if (!name || seen.has(name)) continue;
        seen.add(name);
        if (e.type === 'symlink' && links.length < MAX_LINK_STATS) links.push(out.length);
        out.push([name, e.type === 'symlink' ? vscode.FileType.SymbolicLink | vscode.FileType.Unknown : typeOf(e.type)]);
      }
      // The Explorer expands a link to a folder only when it is told the link's target type.
      let next = 0;
      const worker = async () => {
        while (next < links.length) {
          const i = links[next++];
          const target = await sessions.call<GuestEntry>('stat', { path: path.posix.join(at.path, out[i][0]), follow: true }).catch(() => undefined);
          if (target) out[i][1] = vscode.FileType.SymbolicLink | typeOf(target.type);
        }
      };
      await Promise.all(Array.from({ length: LINK_STAT_PARALLEL }, worker));
      return out;
    }, true);
  }

  readFile(uri: vscode.Uri): Promise<Uint8Array> {
    return this.with(uri, async (files, at) => {
      const entry = await files.stat(at.path, true);
      if (entry.type === 'dir') throw vscode.FileSystemError.FileIsADirectory(uri);
      if (entry.size > MAX_READ_BYTES) throw tooLarge(uri, entry.size);
      let buffer = Buffer.allocUnsafe(Math.max(entry.size, 64 * 1024));
      let length = 0;
      const stop = new AbortController();
      let overflowed = false;
      await files.read(at.path, (chunk) => {
        if (length + chunk.length > MAX_READ_BYTES) {
          overflowed = true;
          return stop.abort();
        }
        if (length + chunk.length > buffer.length) {
          const grown = Buffer.allocUnsafe(Math.min(MAX_READ_BYTES, Math.max(buffer.length * 2, length + chunk.length)));
          buffer.copy(grown, 0, 0, length);
          buffer = grown;
        }
        chunk.copy(buffer, length);
        length += chunk.length;
      }, stop.signal).catch((err) => {
        if (overflowed) throw tooLarge(uri, length);
        throw err;
      });
      return buffer.subarray(0, length);
    }, true);
  }

  writeFile(uri: vscode.Uri, content: Uint8Array, options: { readonly create: boolean; readonly overwrite: boolean }): Promise<void> {
    return this.with(uri, async (files, at) => {
      const existing = await existingEntry(files, at.path, true);
      if (existing?.type === 'dir') throw vscode.FileSystemError.FileIsADirectory(uri);
      if (existing && !options.overwrite) throw vscode.FileSystemError.FileExists(uri);
      if (!existing && !options.create) throw vscode.FileSystemError.FileNotFound(uri);
      const bytes = Buffer.from(content.buffer, content.byteOffset, content.byteLength);
      await files.write(at.path, pieces(bytes), { mode: existing?.mode ?? 0o644 });
    }, true);
  }

  createDirectory(uri: vscode.Uri): Promise<void> {
    return this.with(uri, (files, at) => files.mkdir(at.path, false));
  }

  delete(uri: vscode.Uri, options: { readonly recursive: boolean }): Promise<void> {
    return this.with(uri, async (files, at) => {
      if (at.path === '/') throw vscode.FileSystemError.NoPermissions(`deleting the guest's root folder is not allowed`);
      await files.remove(at.path, options.recursive);
    });
  }

  rename(oldUri: vscode.Uri, newUri: vscode.Uri, options: { readonly overwrite: boolean }): Promise<void> {
    const to = parseGuestUri(newUri);
    return this.with(oldUri, async (files, from) => {
      if (to.vm !== from.vm) throw vscode.FileSystemError.NoPermissions(`moving files between VMs (${from.vm} to ${to.vm}) is not supported; copy them instead`);
      await files.stat(from.path, false);
      const target = await existingEntry(files, to.path, false);
      if (target && !options.overwrite) throw vscode.FileSystemError.FileExists(newUri);
      // rename(2) replaces a file atomically but not a folder: an overwritten folder goes first.
      if (target?.type === 'dir' && to.path !== from.path) await files.remove(to.path, true);
      await files.rename(from.path, to.path);
    });
  }

  watch(uri: vscode.Uri, options: { readonly recursive: boolean; readonly excludes: readonly string[] }): vscode.Disposable {
    const at = parseGuestUri(uri);
    const watcher = new GuestWatcher({ vm: at.vm, path: at.path, recursive: options.recursive, excludes: options.excludes }, {
      sessions: (vm) => this.connections.sessions(vm),
      reachable: (vm) => isReachable(this.model.get(vm)),
      fire: (events) => this.changed.fire(events),
      log: this.log,
    });
    this.watchers.add(watcher);
    return new vscode.Disposable(() => {
      this.watchers.delete(watcher);
      watcher.dispose();
    });
  }

  /** Open watches (the tests read it). */
  get watchCount(): number {
    return this.watchers.size;
  }

  dispose(): void {
    this.subscription.dispose();
    for (const w of this.watchers) w.dispose();
    this.watchers.clear();
    this.changed.dispose();
  }
}

function tooLarge(uri: vscode.Uri, size: number): vscode.FileSystemError {
  return new vscode.FileSystemError(`${uri.authority}:${uri.path} is ${Math.round(size / 2 ** 20)} MiB, more than the ${MAX_READ_BYTES / 2 ** 20} MiB an editor reads from a VM; use Copy from VM instead`);
}

/** The entry at `guestPath`, or undefined when there is none (other failures are thrown). */
async function existingEntry(files: GuestFiles, guestPath: string, follow: boolean): Promise<GuestEntry | undefined> {
  try {
    return await files.stat(guestPath, follow);
  } catch (err) {
    if (/\bENOENT\b/.test((err as Error).message)) return undefined;
    throw err;
  }
}

async function* pieces(bytes: Buffer): AsyncIterable<Buffer> {
  const size = 256 * 1024;
  for (let at = 0; at < bytes.length; at += size) yield bytes.subarray(at, at + size);
}
