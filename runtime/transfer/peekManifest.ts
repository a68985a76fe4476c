/** The manifest of an archive file, read without the rest (for a prompt's default name); throws as import would. */
import { createReadStream } from 'node:fs';
import { ErrorCode, SandboxError } from '../common/errors';
import { readTar, TarError } from '../sync/pull/tarFeed';
import { MANIFEST_NAME, MAX_MANIFEST_BYTES, parseManifest, type Manifest } from './manifest';

export async function peekManifest(file: string): Promise<Manifest> {
  const stream = createReadStream(file, { highWaterMark: 64 * 1024 });
  try {
    for await (const entry of readTar(stream)) {
      if (entry.name !== MANIFEST_NAME || entry.type !== '0' || entry.size > MAX_MANIFEST_BYTES) break;
      const parts: Buffer[] = [];
      for await (const p of entry.body) parts.push(p);
      return parseManifest(Buffer.concat(parts).toString('utf8'));
    }
  } catch (err) {
    if (!(err instanceof TarError)) throw err;
  } finally {
    stream.destroy();
  }
  throw new SandboxError(ErrorCode.BadArgument, `${file} is not a sandboxvm VM archive: it does not start with manifest.json`);
}
