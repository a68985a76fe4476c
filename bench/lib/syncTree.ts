/**
 * A generated source tree shaped like a real repository (bench and sync tests): many small files
 * in nested folders, some medium ones, a few large, ~100 MB for 5,000 files. Deterministic for a
 * seed. Returns the sha256 of every file by relative path.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

export interface TreeSpec {
  files: number;
  /** Approximate total bytes. */
  bytes: number;
  seed?: number;
}

export function generateTree(root: string, spec: TreeSpec): Map<string, string> {
  let state = (spec.seed ?? 1) >>> 0 || 1;
  const rand = () => {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    return state / 2 ** 32;
  };
  const large = Math.max(1, Math.round(spec.files / 1000));
  const medium = Math.round(spec.files / 50);
  const small = spec.files - large - medium;
  // about 30% of the bytes in small files, 25% medium, 45% large
  const sizes: number[] = [];
  for (let i = 0; i < small; i++) sizes.push(Math.max(0, Math.round(((0.3 * spec.bytes) / small) * (0.2 + 1.6 * rand()))));
  for (let i = 0; i < medium; i++) sizes.push(Math.round(((0.25 * spec.bytes) / medium) * (0.5 + rand())));
  for (let i = 0; i < large; i++) sizes.push(Math.round(((0.45 * spec.bytes) / large) * (0.8 + 0.4 * rand())));
  const hashes = new Map<string, string>();
  const block = Buffer.alloc(1 << 20);
  for (let i = 0; i < block.length; i += 4) block.writeUInt32LE((rand() * 2 ** 32) >>> 0, i);
  sizes.forEach((size, i) => {
    const depth = 1 + Math.floor(rand() * 4);
    const parts = ['src'];
    for (let d = 0; d < depth; d++) parts.push(`m${Math.floor(rand() * 8)}`);
    const rel = path.posix.join(...parts, `f${i}.${['ts', 'js', 'json', 'md', 'bin'][i % 5]}`);
    const abs = path.join(root, rel);
    fs.mkdirSync(path.dirname(abs), { recursive: true });
    const header = Buffer.from(`// file ${i} seed ${spec.seed ?? 1}\n`);
    const parts2: Buffer[] = [header];
    let left = Math.max(0, size - header.length);
    let at = Math.floor(rand() * block.length);
    while (left > 0) {
      const n = Math.min(left, block.length - at);
      parts2.push(block.subarray(at, at + n));
      left -= n;
      at = 0;
    }
    const data = Buffer.concat(parts2);
    fs.writeFileSync(abs, data);
    hashes.set(rel, createHash('sha256').update(data).digest('hex'));
  });
  return hashes;
}
