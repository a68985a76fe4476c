/**
 * Reads a tar stream from the guest (GNU or ustar/pax format, as `tar --format=gnu` writes it), one
 * entry at a time, without trusting it: every header's checksum is checked, names (GNU long names,
 * pax `path`) are at most 4,096 bytes, pax headers at most 64 KiB, sizes are parsed strictly
 * (octal, or base-256 up to 2^53), and a malformed stream ends with a TarError. An entry's body is
 * exactly its size; what the consumer leaves unread is skipped before the next header, so the
 * caller must refuse an entry whose size it did not expect before asking for the next one (the
 * skip reads the bytes; the caller bounds them). Pure: bytes in, entries out.
 */

export interface TarEntry {
  name: string;
  /** '0' a file, '5' a folder, '2' a link, anything else as its type flag. */
  type: string;
  size: number;
  body: AsyncIterable<Buffer>;
}

export class TarError extends Error {}

const BLOCK = 512;
const MAX_NAME = 4096;
const MAX_PAX = 64 * 1024;

class ByteReader {
  private buf: Buffer = Buffer.alloc(0);
  private done = false;
  constructor(private readonly it: AsyncIterator<Buffer>) {}

  private async fill(): Promise<boolean> {
    if (this.done) return false;
    const r = await this.it.next();
    if (r.done) {
      this.done = true;
      return false;
    }
    this.buf = this.buf.length === 0 ? r.value : Buffer.concat([this.buf, r.value]);
    return true;
  }

  /** Exactly `n` bytes, or undefined at a clean end of the stream before any of them. */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) {
      if (!(await this.fill())) {
        if (this.buf.length === 0) return undefined;
        throw new TarError('the stream ended in the middle of an entry');
      }
    }
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** `n` bytes as they arrive. */
  async *take(n: number): AsyncGenerator<Buffer> {
    while (n > 0) {
      if (this.buf.length === 0 && !(await this.fill())) throw new TarError('the stream ended in the middle of a file');
      const piece = this.buf.subarray(0, Math.min(n, this.buf.length));
      this.buf = this.buf.subarray(piece.length);
      n -= piece.length;
      yield piece;
    }
  }
}

/** The entries of the tar stream `chunks`, in order. */
export async function* readTar(chunks: AsyncIterable<Buffer>): AsyncGenerator<TarEntry> {
  const reader = new ByteReader(chunks[Symbol.asyncIterator]());
  let longName: string | undefined;
  for (;;) {
    const header = await reader.read(BLOCK);
    if (!header) throw new TarError('the stream ended without its end marker');
    if (header.every((b) => b === 0)) return;
    const h = parseHeader(header);
    const padded = Math.ceil(h.size / BLOCK) * BLOCK;
    if (h.type === 'L' || h.type === 'K' || h.type === 'x' || h.type === 'g') {
      if (h.size > (h.type === 'x' || h.type === 'g' ? MAX_PAX : MAX_NAME + 1)) throw new TarError(`a ${h.type} header of ${h.size} bytes`);
      const data = (await reader.read(padded))!.subarray(0, h.size);
      if (h.type === 'L') longName = cString(data);
      if (h.type === 'x') longName = paxPath(data) ?? longName;
      continue;
    }
    const name = (longName ?? h.name).replace(/\/+$/, '');
    longName = undefined;
    let consumed = 0;
    const body = (async function* () {
      for await (const piece of reader.take(h.size - consumed)) {
        consumed += piece.length;
        yield piece;
      }
    })();
    yield { name, type: h.type, size: h.size, body };
    // Whatever the consumer left: skipped, then the padding.
    for await (const piece of reader.take(h.size - consumed)) consumed += piece.length;
    if (padded > h.size) await reader.read(padded - h.size);
  }
}

function parseHeader(b: Buffer): { name: string; size: number; type: string } {
  const stored = octal(b.subarray(148, 156), 'checksum');
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 32 : b[i];
  if (sum !== stored) throw new TarError('a header with a bad checksum');
  let name = cString(b.subarray(0, 100));
  if (b.subarray(257, 263).toString('latin1') === 'ustar\0') {
    const prefix = cString(b.subarray(345, 500));
    if (prefix) name = `${prefix}/${name}`;
  }
  const size = b[124] & 0x80 ? base256(b.subarray(124, 136)) : octal(b.subarray(124, 136), 'size');
  const flag = b[156] === 0 ? '0' : String.fromCharCode(b[156]);
  return { name, size, type: flag };
}

function cString(b: Buffer): string {
  const end = b.indexOf(0);
  return b.subarray(0, end < 0 ? b.length : end).toString('utf8');
}

function octal(field: Buffer, what: string): number {
  const text = cString(field).trim();
  if (!/^[0-7]{1,12}$/.test(text)) throw new TarError(`a header with a malformed ${what}`);
  const n = parseInt(text, 8);
  if (!Number.isSafeInteger(n)) throw new TarError(`a header with a ${what} too large`);
  return n;
}

function base256(field: Buffer): number {
  if (field[0] !== 0x80) throw new TarError('a header with a negative or huge size');
  let n = 0;
  for (let i = 1; i < field.length; i++) {
    n = n * 256 + field[i];
    if (!Number.isSafeInteger(n)) throw new TarError('a header with a size too large');
  }
  return n;
}

/** The `path` record of a pax header ("<len> path=<value>\n" records). */
function paxPath(data: Buffer): string | undefined {
  let at = 0;
  let path: string | undefined;
  while (at < data.length) {
    const space = data.indexOf(0x20, at);
    if (space < 0) break;
    const len = Number(data.subarray(at, space).toString('latin1'));
    if (!Number.isSafeInteger(len) || len <= 0 || at + len > data.length) throw new TarError('a malformed pax header');
    const record = data.subarray(space + 1, at + len - 1).toString('utf8');
    const eq = record.indexOf('=');
    if (eq > 0 && record.slice(0, eq) === 'path') {
      if (Buffer.byteLength(record) > MAX_NAME + 5) throw new TarError('a pax path too long');
      path = record.slice(eq + 1);
    }
    at += len;
  }
  return path;
}
