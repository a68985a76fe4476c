/**
 * sha256 of base image files, remembered for the service's life: a published image is never
 * modified (image/baseImage.ts), so export and import hash its ~260 MB once, not every time. The
 * key is the file's identity and shape (device, inode, size, mtime): a file replaced or changed
 * is hashed again.
 */
import { createHash } from 'node:crypto';
import { createReadStream, promises as fs } from 'node:fs';

const known = new Map<string, string>();

export async function imageFileSha256(file: string): Promise<string> {
  const st = await fs.stat(file);
  const key = `${file}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const cached = known.get(key);
  if (cached) return cached;
  const sha = await new Promise<string>((resolve, reject) => {
    const hash = createHash('sha256');
    createReadStream(file, { highWaterMark: 1024 * 1024 })
      .on('data', (d) => hash.update(d))
      .on('error', reject)
      .on('end', () => resolve(hash.digest('hex')));
  });
  known.set(key, sha);
  return sha;
}
