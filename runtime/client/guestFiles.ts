/**
 * Files in a running guest: metadata calls and streamed transfers of any size, over the worker's
 * session API. Transfers keep several chunks in flight (the channel's credit window does the
 * pacing), so a copy runs at the channel's speed rather than one round trip per chunk.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../common/errors';
import type { SessionClient, SessionExit } from './sessionClient';

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

  stat(guestPath: string): Promise<GuestEntry> {
    return this.sessions.call('stat', { path: guestPath });
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
   * Writes `source` to `guestPath` (replacing it atomically when complete). `onProgress` gets the
   * bytes sent so far. Rejects with the guest's reason when the write fails.
   */
  async write(guestPath: string, source: AsyncIterable<Buffer>, options: { mode?: number; onProgress?: (bytes: number) => void } = {}): Promise<number> {
    let failure: SessionExit | undefined;
    const session = await this.sessions.open({ kind: 'write', path: guestPath, mode: options.mode }, { onData: () => undefined, onExit: (r) => (failure = r.error ? r : undefined) });
    let sent = 0;
    const inFlight = new Set<Promise<void>>();
    for await (const chunk of rechunk(source, CHUNK)) {
      if (failure) break;
      const p = session.write(chunk).then(() => {
        sent += chunk.length;
        options.onProgress?.(sent);
      });
      inFlight.add(p);
      p.finally(() => inFlight.delete(p)).catch(() => undefined);
      if (inFlight.size >= IN_FLIGHT) await Promise.race(inFlight);
    }
    await Promise.all(inFlight).catch(() => undefined);
    if (!failure) await session.eof().catch(() => undefined);
    const result = await session.exited;
    if (result.error || result.code !== 0) throw new SandboxError(ErrorCode.BadArgument, `writing ${guestPath} in the guest failed: ${result.error ?? `code ${result.code}`}`);
    return sent;
  }

  /** Streams `guestPath` to `onData` (awaited before more is asked of the guest). Resolves with the byte count. */
  async read(guestPath: string, onData: (chunk: Buffer) => void | Promise<void>): Promise<number> {
    let received = 0;
    const session = await this.sessions.open(
      { kind: 'read', path: guestPath },
      {
        onData: (_stream, data) => {
          received += data.length;
          return onData(data);
        },
        onExit: () => undefined,
      },
    );
    const result = await session.exited;
    if (result.error || result.code !== 0) throw new SandboxError(ErrorCode.BadArgument, `reading ${guestPath} in the guest failed: ${result.error ?? `code ${result.code}`}`);
    return received;
  }

  /**
   * Copies a guest file to a host file: written to a temporary beside `hostPath` and renamed over
   * it when complete, so a failed copy leaves no partial file. The guest decides only the bytes.
   */
  async download(guestPath: string, hostPath: string, onProgress?: (bytes: number) => void): Promise<number> {
    const tmp = path.join(path.dirname(hostPath), `.${path.basename(hostPath)}.sandboxvm-${process.pid}.partial`);
    const out = fs.createWriteStream(tmp, { mode: 0o644 });
    let bytes = 0;
    // One shared wait for 'drain' however many chunks arrive while the file catches up.
    let drained: Promise<void> | undefined;
    try {
      await this.read(guestPath, (chunk) => {
        bytes += chunk.length;
        onProgress?.(bytes);
        if (out.write(chunk)) return drained;
        drained ??= new Promise<void>((resolve) => out.once('drain', () => ((drained = undefined), resolve())));
        return drained;
      });
      await new Promise<void>((resolve, reject) => out.end((err?: Error | null) => (err ? reject(err) : resolve())));
      await fs.promises.rename(tmp, hostPath);
      return bytes;
    } catch (err) {
      out.destroy();
      await fs.promises.rm(tmp, { force: true });
      throw err;
    }
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
