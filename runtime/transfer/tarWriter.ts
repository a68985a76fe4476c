/**
 * The few tar records an archive needs: a ustar header for a regular file and the end marker.
 * Sizes of 8 GiB and more use the GNU base-256 form (GNU tar and bsdtar read it;
 * sync/pull/tarFeed.ts too).
 */

const BLOCK = 512;

/** A ustar header of the regular file `name` (at most 100 bytes) of `size` bytes. */
export function fileHeader(name: string, size: number, mtime = Math.floor(Date.now() / 1000)): Buffer {
  const h = Buffer.alloc(BLOCK);
  const nameBytes = Buffer.from(name, 'utf8');
  if (nameBytes.length > 100) throw new Error(`tar name too long: ${name}`);
  nameBytes.copy(h, 0);
  h.write('0000600\0', 100, 'latin1');
  h.write('0000000\0', 108, 'latin1');
  h.write('0000000\0', 116, 'latin1');
  if (size < 8 * 2 ** 30) {
    h.write(size.toString(8).padStart(11, '0') + '\0', 124, 'latin1');
  } else {
    h[124] = 0x80;
    let n = BigInt(size);
    for (let i = 135; i > 124; i--) {
      h[i] = Number(n & 0xffn);
      n >>= 8n;
    }
  }
  h.write(mtime.toString(8).padStart(11, '0') + '\0', 136, 'latin1');
  h.write('0', 156, 'latin1');
  h.write('ustar\0', 257, 'latin1');
  h.write('00', 263, 'latin1');
  h.write('sandboxvm', 265, 'latin1');
  h.write('sandboxvm', 297, 'latin1');
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0') + '\0 ', 148, 'latin1');
  return h;
}

/** Zeros that pad a body of `size` bytes to a whole block. */
export function padding(size: number): Buffer {
  return Buffer.alloc((BLOCK - (size % BLOCK)) % BLOCK);
}

/** The end of an archive: two zero blocks. */
export const END_MARKER = Buffer.alloc(2 * BLOCK);
