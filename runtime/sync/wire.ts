/**
 * The byte format of a `sync` session (one definition for the host and the agent).
 *
 * Host to guest (the session's stdin): records, each a u32 (big-endian) header length, a JSON
 * header, and for a file its `size` bytes of content right behind it:
 *   {op:'manifest', ignore}          walk the guest folder (skipping `ignore`) and report it
 *   {op:'file', path, size, mode, mtimeMs}  + bytes: written to a temporary beside it, renamed over
 *   {op:'dir', path, mode}           made (with its parents) if missing, mode set
 *   {op:'link', path, target}        a symbolic link (replacing what is there)
 *   {op:'remove', path}              removed, recursively for a directory; absent is fine
 *   {op:'flush', seq}                answered with `ack` once everything before it is applied
 * Many records travel in one write: a batch of small files costs one round trip, not one each.
 *
 * Guest to host (stdout): one JSON value per line:
 *   ["f"|"d"|"l", path, size, mode, mtimeMs, target?]   a manifest entry (target: links only)
 *   {"t":"end","count":N}                                the manifest is complete
 *   {"t":"fail","path":P,"message":M}                    a record could not be applied
 *   {"t":"ack","seq":N}                                  everything before flush N is applied
 * The host checks every line (parseGuestLine) before it believes it.
 */
import { isRelPath } from './relPath';
import type { IgnoreGroup } from './ignore';

export type EntryType = 'file' | 'dir' | 'symlink';

/** One entry of a tree, on either side. `mtimeMs` is whole milliseconds. */
export interface TreeEntry {
  path: string;
  type: EntryType;
  size: number;
  mode: number;
  mtimeMs: number;
  /** symlink: its target. */
  target?: string;
}

export type SyncRecord =
  | { op: 'manifest'; ignore: IgnoreGroup[] }
  | { op: 'file'; path: string; size: number; mode: number; mtimeMs: number }
  | { op: 'dir'; path: string; mode: number }
  | { op: 'link'; path: string; target: string }
  | { op: 'remove'; path: string }
  | { op: 'flush'; seq: number };

/** The largest record header either end accepts. The manifest request carries the ignore rules. */
export const MAX_HEADER = 4 * 1024 * 1024;
/** The longest guest line the host accepts. */
export const MAX_LINE = 16 * 1024;
/** The most entries a guest manifest may hold; past it the host stops the sync with a sentence. */
export const MAX_MANIFEST_ENTRIES = 1_000_000;
/** The largest file size a guest may claim (it only decides what to re-send). */
export const MAX_FILE_SIZE = 2 ** 50;

export function encodeHeader(record: SyncRecord): Buffer {
  const json = Buffer.from(JSON.stringify(record), 'utf8');
  const out = Buffer.allocUnsafe(4 + json.length);
  out.writeUInt32BE(json.length, 0);
  json.copy(out, 4);
  return out;
}

const TYPE_CODES: Record<string, EntryType> = { f: 'file', d: 'dir', l: 'symlink' };
const CODE_OF: Record<EntryType, string> = { file: 'f', dir: 'd', symlink: 'l' };

/** A manifest entry as the guest writes it. */
export function encodeEntry(e: TreeEntry): string {
  const row: unknown[] = [CODE_OF[e.type], e.path, e.size, e.mode, e.mtimeMs];
  if (e.type === 'symlink') row.push(e.target ?? '');
  return JSON.stringify(row);
}

export type GuestLine =
  | { t: 'entry'; entry: TreeEntry }
  | { t: 'end'; count: number }
  | { t: 'fail'; path: string; message: string }
  | { t: 'ack'; seq: number };

/** A guest line, checked: a well-formed message, or a string saying why it is rejected. */
export function parseGuestLine(line: string): GuestLine | string {
  if (line.length > MAX_LINE) return `a line of ${line.length} characters`;
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch {
    return 'a line that is not JSON';
  }
  if (Array.isArray(v)) {
    const [code, p, size, mode, mtimeMs, target] = v;
    const type = typeof code === 'string' ? TYPE_CODES[code] : undefined;
    if (!type) return 'an entry of unknown type';
    if (!isRelPath(p)) return 'an entry whose path is not relative to the folder';
    if (!isWhole(size, MAX_FILE_SIZE) || !isWhole(mode, 0o7777) || !(typeof mtimeMs === 'number' && Number.isFinite(mtimeMs))) return `a malformed entry for ${p}`;
    if (type === 'symlink' && !(typeof target === 'string' && target.length > 0 && target.length <= 4096 && !target.includes('\0'))) return `a malformed link target for ${p}`;
    const entry: TreeEntry = { path: p, type, size, mode, mtimeMs: Math.floor(mtimeMs) };
    if (type === 'symlink') entry.target = target as string;
    return { t: 'entry', entry };
  }
  if (typeof v !== 'object' || v === null) return 'a line that is neither an entry nor a message';
  const m = v as Record<string, unknown>;
  switch (m.t) {
    case 'end':
      return isWhole(m.count, MAX_MANIFEST_ENTRIES) ? { t: 'end', count: m.count } : 'a malformed manifest end';
    case 'ack':
      return isWhole(m.seq, Number.MAX_SAFE_INTEGER) ? { t: 'ack', seq: m.seq } : 'a malformed ack';
    case 'fail':
      if (!isRelPath(m.path) || typeof m.message !== 'string') return 'a malformed failure';
      return { t: 'fail', path: m.path, message: m.message.slice(0, 500).replace(/[\x00-\x1f\x7f]/g, ' ') };
    default:
      return 'a message of unknown type';
  }
}

function isWhole(v: unknown, max: number): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0 && (v as number) <= max;
}

/**
 * Splits a byte stream into lines, bounded: a line longer than MAX_LINE is an error (`onError`),
 * never a growing buffer.
 */
export class LineSplitter {
  private parts: Buffer[] = [];
  private length = 0;

  constructor(private readonly onLine: (line: string) => void, private readonly onError: (why: string) => void) {}

  push(chunk: Buffer): void {
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(10, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      if (this.length + piece.length > MAX_LINE) return this.onError(`a line longer than ${MAX_LINE} bytes`);
      const line = this.length === 0 ? piece : Buffer.concat([...this.parts, piece]);
      this.parts = [];
      this.length = 0;
      this.onLine(line.toString('utf8'));
      start = nl + 1;
    }
    const rest = chunk.subarray(start);
    if (rest.length === 0) return;
    if (this.length + rest.length > MAX_LINE) return this.onError(`a line longer than ${MAX_LINE} bytes`);
    this.parts.push(Buffer.from(rest));
    this.length += rest.length;
  }
}
