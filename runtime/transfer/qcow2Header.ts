/**
 * A qcow2 file's header, read without QEMU: what an archive's disk says about other files before
 * any program opens it. A qcow2 can name any host file as its backing file or as its external
 * data file (`/etc/shadow`, `~/.ssh/id_rsa`), so import reads these fields first and refuses
 * anything but a plain qcow2; export rewrites the backing name to the sibling's name inside the
 * archive. Pure: bytes in, fields out. Layout: QEMU's docs/interop/qcow2.txt.
 */

const MAGIC = 0x514649fb;
/** Incompatible feature bits QEMU 7.2 knows: dirty, corrupt, external data file, compression type, extended L2. */
const KNOWN_INCOMPATIBLE = 0b11111n;
const EXTERNAL_DATA_FILE_BIT = 1n << 2n;
const EXT_END = 0;
const EXT_DATA_FILE = 0x44415441;
const EXT_CRYPTO = 0x0537be77;

/** How much of the file's start the header (with its extensions and backing name) must fit in. */
export const HEADER_BYTES = 64 * 1024;

export interface Qcow2Header {
  version: number;
  virtualSize: number;
  /** The backing file's name as stored; undefined: none. */
  backing?: string;
  /** Byte range of the backing name within the header, for rewriting it. */
  backingAt?: { offset: number; size: number };
}

export class Qcow2Error extends Error {}

/** Parses the header at the start of `b` (at least the first HEADER_BYTES of the file, or the whole file). Throws Qcow2Error for anything but a plain qcow2. */
export function parseQcow2Header(b: Buffer): Qcow2Header {
  if (b.length < 72 || b.readUInt32BE(0) !== MAGIC) throw new Qcow2Error('it is not a qcow2 image');
  const version = b.readUInt32BE(4);
  if (version !== 2 && version !== 3) throw new Qcow2Error(`it is qcow2 version ${version}`);
  const backingOffset = Number(b.readBigUInt64BE(8));
  const backingSize = b.readUInt32BE(16);
  const virtualSize = Number(b.readBigUInt64BE(24));
  if (b.readUInt32BE(32) !== 0) throw new Qcow2Error('it is encrypted');
  let extStart = 72;
  if (version === 3) {
    if (b.length < 104) throw new Qcow2Error('its header is cut short');
    const incompatible = b.readBigUInt64BE(72);
    if (incompatible & EXTERNAL_DATA_FILE_BIT) throw new Qcow2Error('it keeps its data in an external file');
    if (incompatible & ~KNOWN_INCOMPATIBLE) throw new Qcow2Error('it uses features this QEMU does not know');
    extStart = b.readUInt32BE(100);
    if (extStart < 104 || extStart > b.length) throw new Qcow2Error('its header length is malformed');
  }
  for (let at = extStart, n = 0; ; n++) {
    if (at + 8 > b.length || n > 64) throw new Qcow2Error('its header extensions are malformed');
    const type = b.readUInt32BE(at);
    const len = b.readUInt32BE(at + 4);
    if (type === EXT_END) break;
    if (type === EXT_DATA_FILE) throw new Qcow2Error('it names an external data file');
    if (type === EXT_CRYPTO) throw new Qcow2Error('it is encrypted');
    at += 8 + Math.ceil(len / 8) * 8;
  }
  const header: Qcow2Header = { version, virtualSize };
  if (backingOffset !== 0 || backingSize !== 0) {
    if (backingSize === 0 || backingSize > 1023 || backingOffset < 72 || backingOffset + backingSize > b.length) throw new Qcow2Error('its backing file name is malformed');
    header.backing = b.subarray(backingOffset, backingOffset + backingSize).toString('utf8');
    header.backingAt = { offset: backingOffset, size: backingSize };
  }
  return header;
}

/**
 * A copy of the header `b` whose backing name is `name` (written over the old one, the rest
 * zeroed). The new name must not be longer than the old: relative sibling names always fit where
 * the absolute paths QEMU wrote were.
 */
export function withBacking(b: Buffer, name: string): Buffer {
  const h = parseQcow2Header(b);
  if (!h.backingAt) throw new Qcow2Error('it has no backing file to rename');
  const bytes = Buffer.from(name, 'utf8');
  if (bytes.length === 0 || bytes.length > h.backingAt.size) throw new Qcow2Error(`its backing name has no room for ${JSON.stringify(name)}`);
  const out = Buffer.from(b);
  out.fill(0, h.backingAt.offset, h.backingAt.offset + h.backingAt.size);
  bytes.copy(out, h.backingAt.offset);
  out.writeUInt32BE(bytes.length, 16);
  return out;
}
