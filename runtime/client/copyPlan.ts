/**
 * Pure decisions of `cp`, shared by both directions: where a copy lands (cp's rules), and whether a
 * guest-made symbolic link may be recreated on the host.
 */
import * as path from 'node:path';

/** What a destination path is, links followed ('missing' when nothing is there). */
export type DestinationKind = 'missing' | 'file' | 'dir' | 'other';

export type Destination = { ok: true; path: string } | { ok: false; why: string };

/**
 * Where a source whose base name is `base` lands when copied to `dst` (cp's rules):
 *   a directory (or a link to one)  -> `<dst>/<base>`
 *   a file (or a link to one)       -> `dst`, replaced (a file source only)
 *   nothing                         -> `dst` (unless it ends with `/`: that must be a directory)
 * `why` completes "<dst> ..." for the error message.
 */
export function resolveDestination(dst: string, base: string, kind: DestinationKind, sourceIsDir: boolean, posix: boolean): Destination {
  const p = posix ? path.posix : path;
  if (kind === 'dir') {
    if (!base || base === '.' || base === '..' || base === '/') return { ok: false, why: 'needs a source with a name (not / or ..)' };
    return { ok: true, path: p.join(dst, base) };
  }
  if (dst.endsWith('/')) return { ok: false, why: kind === 'missing' ? 'is not an existing directory' : 'is not a directory' };
  if (kind === 'other') return { ok: false, why: 'is neither a file nor a directory' };
  if (kind === 'file' && sourceIsDir) return { ok: false, why: 'is a file; a directory cannot replace it' };
  return { ok: true, path: dst };
}

/** The base name cp gives a source: its last component, trailing slashes aside. */
export function sourceBase(src: string, posix: boolean): string {
  const p = posix ? path.posix : path;
  return p.basename(src.replace(/\/+$/, '') || '/');
}

/**
 * Whether a link at `linkRel` (relative to the copy's root, '/'-separated, made only of names the
 * host checked) pointing at `target` may be recreated: it must resolve inside the root whatever the
 * links on its way are. Only `..`s first (each up a real directory the copy made), then names
 * (each a real entry of the copy or a link that passed this same check), so `a/..` after a link
 * `a -> .` can't climb out. Absolute targets never count as inside: they name the host's own tree.
 */
export function linkStaysInside(linkRel: string, target: string): boolean {
  if (target.length === 0 || target.includes('\0') || target.startsWith('/')) return false;
  let depth = linkRel.split('/').length - 1;
  let descending = false;
  for (const part of target.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') {
      if (descending || depth === 0) return false;
      depth--;
    } else descending = true;
  }
  return true;
}
