/**
 * Files in a running guest: metadata calls and streamed transfers of any size, over the worker's
 * session API. Transfers keep several chunks in flight (the channel's credit window does the
 * pacing), so a copy runs at the channel's speed rather than one round trip per chunk.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../common/errors';
import type { SessionClient, SessionExit } from './sessionClient';
import { ROOM_CHECK_BYTES, ensureHostRoom } from './hostRoom';

export interface GuestEntry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

export interface GuestInfo {
  hostname: string;
  os: string;
  kernel: string;
  arch: string;
  uptimeS: number;
  memory: { totalMiB: number; freeMiB: number };
  addresses: { iface: string; family: string; address: string }[];
  listening: string[];
}

const CHUNK = 256 * 1024;
const IN_FLIGHT = 3;

export class GuestFiles {
  constructor(private readonly sessions: SessionClient) {}

  /** The entry at `guestPath`; `follow`: what a symbolic link there points to (stat -L). */
  stat(guestPath: string, follow = false): Promise<GuestEntry> {
    return this.sessions.call('stat', { path: guestPath, follow });
  }

  /** A symbolic link's target, as the guest says it (unchecked beyond its length). */
  readlink(guestPath: string): Promise<string> {
    return this.sessions.call('readlink', { path: guestPath });
  }

  symlink(target: string, guestPath: string): Promise<void> {
    return this.sessions.call('symlink', { target, path: guestPath });
  }

  async list(guestPath: string): Promise<GuestEntry[]> {
    const all: GuestEntry[] = [];
    let offset: number | null = 0;
    while (offset !== null) {
      const page: { entries: GuestEntry[]; next: number | null } = await this.sessions.call('list', { path: guestPath, offset });
      all.push(...page.entries);
      offset = page.next;
    }
    return all;
  }

  mkdir(guestPath: string, recursive = false): Promise<void> {
    return this.sessions.call('mkdir', { path: guestPath, recursive });
  }

  rename(from: string, to: string): Promise<void> {
    return this.sessions.call('rename', { from, to });
  }

  remove(guestPath: string, recursive = false): Promise<void> {
    return this.sessions.call('remove', { path: guestPath, recursive });
  }

  info(): Promise<GuestInfo> {
    return this.sessions.call('info');
  }

  /**
   * Writes `source` to `guestPath` (the agent replaces it atomically when complete, writing
   * through a link to a file; see guest-agent/src/fileTarget.ts). `onProgress` gets the bytes sent
   * so far. Rejects with the guest's reason when the write fails, with Cancelled when `signal`
   * aborts it (the guest then drops its temporary).
   */
  async write(guestPath: string, source: AsyncIterable<Buffer>, options: { mode?: number; onProgress?: (bytes: number) => void; signal?: AbortSignal } = {}): Promise<number> {
    cancelledBy(options.signal);
    let failure: SessionExit | undefined;
    const session = await this.sessions.open({ kind: 'write', path: guestPath, mode: options.mode }, { onData: () => undefined, onExit: (r) => (failure = r.error ? r : undefined) });
    const onAbort = () => void session.close().catch(() => undefined);
    options.signal?.addEventListener('abort', onAbort);
    try {
      let sent = 0;
      const inFlight = new Set<Promise<void>>();
      try {
        for await (const chunk of rechunk(source, CHUNK)) {
          if (failure || options.signal?.aborted) break;
          const p = session.write(chunk).then(() => {
            sent += chunk.length;
            options.onProgress?.(sent);
          });
          inFlight.add(p);
          p.finally(() => inFlight.delete(p)).catch(() => undefined);
          if (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight).catch(() => undefined);
        }
      } catch (err) {
        // The source failed (a host read error): the guest drops its temporary.
        await session.close().catch(() => undefined);
        throw err;
      }
      await Promise.all(inFlight).catch(() => undefined);
      if (!failure && !options.signal?.aborted) await session.eof().catch(() => undefined);
      const result = await session.exited;
      cancelledBy(options.signal);
      if (result.error || result.code !== 0) throw new SandboxError(ErrorCode.BadArgument, `cannot write ${guestPath} in the guest: ${guestReason(result, 'write', guestPath)}`);
      return sent;
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Streams `guestPath` to `onData` (awaited before more is asked of the guest). Resolves with the byte count. */
  async read(guestPath: string, onData: (chunk: Buffer) => void | Promise<void>, signal?: AbortSignal): Promise<number> {
    cancelledBy(signal);
    let received = 0;
    const session = await this.sessions.open(
      { kind: 'read', path: guestPath },
      {
        onData: (_stream, data) => {
          if (signal?.aborted) return;
          received += data.length;
          return onData(data);
        },
        onExit: () => undefined,
      },
    );
    const onAbort = () => void session.close().catch(() => undefined);
    signal?.addEventListener('abort', onAbort);
    try {
      const result = await session.exited;
      cancelledBy(signal);
      if (result.error || result.code !== 0) throw new SandboxError(ErrorCode.BadArgument, `cannot read ${guestPath} in the guest: ${guestReason(result, 'read', guestPath)}`);
      return received;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /**
   * Copies a guest file to a host file: written to a new temporary beside `hostPath` (never
   * through anything already there) and renamed over it when complete, so a failed or cancelled
   * copy leaves nothing. The temporary is in `temporaries` while it exists (for a last-resort
   * cleanup at exit). The guest decides only the bytes; the host's free space is checked every
   * ROOM_CHECK_BYTES (hostRoom.ts), whatever size the guest listed.
   */
  async download(guestPath: string, hostPath: string, options: { mode?: number; onProgress?: (bytes: number) => void; signal?: AbortSignal; temporaries?: Set<string> } = {}): Promise<number> {
    const tmp = hostTemporary(hostPath);
    let handle: fs.promises.FileHandle;
    try {
      handle = await fs.promises.open(tmp, 'wx', (options.mode ?? 0o644) & 0o777);
    } catch (err) {
      throw new SandboxError(ErrorCode.BadArgument, `cannot write ${hostPath}: ${describeHostError(err, path.dirname(hostPath))}`);
    }
    options.temporaries?.add(tmp);
    const out = handle.createWriteStream();
    // A failing host disk stops the guest's stream too; the user's cancel is told apart from it.
    const stop = new AbortController();
    const onAbort = () => stop.abort();
    options.signal?.addEventListener('abort', onAbort);
    let writeError: unknown;
    out.on('error', (err) => {
      writeError ??= err;
      stop.abort();
    });
    let bytes = 0;
    // One shared wait for 'drain' however many chunks arrive while the file catches up.
    let drained: Promise<void> | undefined;
    try {
      await this.read(
        guestPath,
        (chunk) => {
          if (writeError) return;
          if (Math.floor((bytes + chunk.length) / ROOM_CHECK_BYTES) > Math.floor(bytes / ROOM_CHECK_BYTES)) {
            try {
              ensureHostRoom(path.dirname(hostPath), ROOM_CHECK_BYTES, `copying ${guestPath}`);
            } catch (err) {
              writeError = err;
            }
          }
          if (writeError) return stop.abort();
          bytes += chunk.length;
          options.onProgress?.(bytes);
          if (out.write(chunk)) return drained;
          drained ??= new Promise<void>((resolve) => {
            const settle = () => ((drained = undefined), out.off('drain', settle), out.off('error', settle), resolve());
            out.on('drain', settle).on('error', settle);
          });
          return drained;
        },
        stop.signal,
      ).catch((err) => {
        throw writeError ?? err;
      });
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
      await fs.promises.rename(tmp, hostPath);
      options.temporaries?.delete(tmp);
      return bytes;
    } catch (err) {
      out.destroy();
      await fs.promises.rm(tmp, { force: true });
      options.temporaries?.delete(tmp);
      cancelledBy(options.signal);
      if (err instanceof SandboxError) throw err;
      throw new SandboxError(ErrorCode.BadArgument, `cannot write ${hostPath}: ${describeHostError(err, path.dirname(hostPath))}`);
    } finally {
      options.signal?.removeEventListener('abort', onAbort);
    }
  }
}

let temporaryCount = 0;
/** `.<name>.sandboxvm-<pid>-<n>.partial` beside `file`: the same pattern as the guest's temporaries. */
function hostTemporary(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file).slice(0, 200)}.sandboxvm-${process.pid}-${++temporaryCount}.partial`);
}

function cancelledBy(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw new SandboxError(ErrorCode.Cancelled, 'the copy was cancelled; nothing was written');
}

/** The guest's reason for a failed transfer, without its own "cannot write <path>: " and without control characters. */
function guestReason(result: SessionExit, verb: string, guestPath: string): string {
  const text = result.error ?? `code ${result.code}`;
  const prefix = `cannot ${verb} ${guestPath}: `;
  return (text.startsWith(prefix) ? text.slice(prefix.length) : text).replace(/[\x00-\x1f\x7f]/g, ' ');
}

/** A host fs error as a clause that names `dir` where it matters and never a temporary. */
export function describeHostError(err: unknown, dir: string): string {
  const e = err as NodeJS.ErrnoException;
  switch (e?.code) {
    case 'ENOENT':
      return `no such directory ${dir}`;
    case 'ENOTDIR':
      return `${dir} is not a directory`;
    case 'EACCES':
    case 'EPERM':
      return `permission denied in ${dir}`;
    case 'ENOSPC':
      return 'the disk is full; free some space and try again';
    case 'EROFS':
      return `${dir} is on a read-only file system`;
    case 'EISDIR':
      return 'it is a directory';
    default:
      return e?.code ?? String(e?.message ?? err);
  }
}

/** Regroups a stream's chunks into pieces of about `size` bytes (fewer, larger RPCs). */
async function* rechunk(source: AsyncIterable<Buffer>, size: number): AsyncIterable<Buffer> {
  let parts: Buffer[] = [];
  let length = 0;
  for await (const chunk of source) {
    parts.push(chunk);
    length += chunk.length;
    while (length >= size) {
      const all = Buffer.concat(parts, length);
      yield all.subarray(0, size);
      parts = [all.subarray(size)];
      length -= size;
    }
  }
  if (length > 0) yield Buffer.concat(parts, length);
}
