/**
 * Sends a plan to the guest as one stream of records (wire.ts): many small files per write, large
 * files in chunks, a `flush` every few MiB so progress is what the guest has applied. Each file's
 * size and mtime are taken from its open descriptor as it is read, so the header always matches
 * the bytes; a file that shrinks while read is padded and left for the watcher to send again.
 * `model` (what the guest has, as far as the host knows) is updated with what was sent.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { GuestFailure, SyncChannel } from './channel';
import { entryOf } from './scan';
import { forgetSubtree, type SyncPlan } from './plan';
import { encodeHeader, type TreeEntry } from './wire';

/** A write gathers records up to about this size. */
const BATCH_BYTES = 256 * 1024;
/** Files above this are read and sent in pieces of this size. */
const CHUNK = 128 * 1024;
/** A flush (and a progress step) after about this many bytes or records. */
const FLUSH_BYTES = 4 * 1024 * 1024;
const FLUSH_RECORDS = 500;
/** Bytes handed to the worker and not yet within the guest's credit: below its 1 MiB of queued input. */
const IN_FLIGHT_BYTES = 768 * 1024;

export interface PushProgress {
  files: number;
  totalFiles: number;
  bytes: number;
  totalBytes: number;
}

export interface PushResult {
  files: number;
  bytes: number;
  /** Paths that changed while being read: to send again. */
  changed: string[];
  /** What the guest could not apply (forgotten from `model`). */
  failed: GuestFailure[];
}

export async function pushPlan(channel: SyncChannel, root: string, plan: SyncPlan, model: Map<string, TreeEntry>, onProgress?: (p: PushProgress) => void): Promise<PushResult> {
  const result: PushResult = { files: 0, bytes: 0, changed: [], failed: [] };
  const progress: PushProgress = { files: 0, totalFiles: plan.files.length, bytes: 0, totalBytes: plan.bytes };
  let parts: Buffer[] = [];
  let partBytes = 0;
  let sinceFlush = 0;
  let recordsSinceFlush = 0;
  let filesSinceFlush = 0;
  let bytesSinceFlush = 0;
  const inFlight = new Set<Promise<void>>();
  let inFlightBytes = 0;
  const acks: Promise<void>[] = [];
  let failure: unknown;

  const write = async (force = false) => {
    if (partBytes === 0 || (!force && partBytes < BATCH_BYTES)) return;
    const buf = parts.length === 1 ? parts[0] : Buffer.concat(parts, partBytes);
    parts = [];
    partBytes = 0;
    while (inFlight.size > 0 && inFlightBytes + buf.length > IN_FLIGHT_BYTES) await Promise.race(inFlight).catch(() => undefined);
    if (failure) throw failure;
    const p = channel.send(buf);
    inFlight.add(p);
    inFlightBytes += buf.length;
    p.catch((e) => (failure ??= e)).finally(() => {
      inFlight.delete(p);
      inFlightBytes -= buf.length;
    });
  };
  const add = async (b: Buffer) => {
    parts.push(b);
    partBytes += b.length;
    sinceFlush += b.length;
    recordsSinceFlush++;
    await write();
  };
  const maybeFlush = async (force = false) => {
    if (!force && sinceFlush < FLUSH_BYTES && recordsSinceFlush < FLUSH_RECORDS) return;
    if (recordsSinceFlush === 0) return;
    const files = filesSinceFlush;
    const bytes = bytesSinceFlush;
    sinceFlush = recordsSinceFlush = filesSinceFlush = bytesSinceFlush = 0;
    // The batch first: the flush record must follow every record it covers.
    await write(true);
    const acked = channel.flush().then(() => {
      progress.files += files;
      progress.bytes += bytes;
      onProgress?.({ ...progress });
    });
    acked.catch(() => undefined);
    acks.push(acked);
  };

  for (const p of plan.removes) {
    await add(encodeHeader({ op: 'remove', path: p }));
    forgetSubtree(model, p);
  }
  for (const d of plan.dirs) {
    await add(encodeHeader({ op: 'dir', path: d.path, mode: d.mode }));
    model.set(d.path, d);
  }
  for (const l of plan.links) {
    await add(encodeHeader({ op: 'link', path: l.path, target: l.target! }));
    model.set(l.path, l);
  }
  for (const f of plan.files) {
    const abs = path.join(root, f.path);
    let fd: number;
    try {
      fd = fs.openSync(abs, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    } catch {
      result.changed.push(f.path); // gone or replaced since the scan
      continue;
    }
    try {
      const st = fs.fstatSync(fd);
      const entry = st.isFile() ? entryOf(f.path, st) : undefined;
      if (!entry) {
        result.changed.push(f.path);
        continue;
      }
      await add(encodeHeader({ op: 'file', path: entry.path, size: entry.size, mode: entry.mode, mtimeMs: entry.mtimeMs }));
      let at = 0;
      while (at < entry.size) {
        const n = Math.min(CHUNK, entry.size - at);
        const buf = Buffer.allocUnsafe(n);
        let got = 0;
        while (got < n) {
          const r = fs.readSync(fd, buf, got, n - got, at + got);
          if (r === 0) break;
          got += r;
        }
        if (got < n) {
          buf.fill(0, got);
          result.changed.push(f.path);
        }
        at += n;
        await add(buf);
      }
      model.set(entry.path, entry);
      result.files++;
      result.bytes += entry.size;
      filesSinceFlush++;
      bytesSinceFlush += entry.size;
    } finally {
      fs.closeSync(fd);
    }
    await maybeFlush();
  }
  await maybeFlush(true);
  await write(true);
  await Promise.all(inFlight);
  if (failure) throw failure;
  await Promise.all(acks);
  result.failed = channel.failures.splice(0);
  for (const fail of result.failed) forgetSubtree(model, fail.path);
  return result;
}
