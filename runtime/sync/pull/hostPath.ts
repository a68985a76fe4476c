/**
 * Which relative paths from a guest may name something in a host folder. A path is '/'-separated
 * names, each one component a host filesystem accepts on every platform we run on: no empty
 * names, no `.` or `..`, no NUL or other control characters (a newline in a name breaks every
 * line-based tool on the host), at most 255 bytes per name (NAME_MAX) and 4,000 bytes in all
 * (below PATH_MAX once joined to the folder). Pure.
 */
import { linkStaysInside } from '../../client/copyPlan';

export const MAX_NAME_BYTES = 255;
export const MAX_PATH_BYTES = 4000;

/** Why `rel` can't be a host path (one clause, the name printable), or undefined when it can. */
export function checkRelPath(rel: string): string | undefined {
  if (typeof rel !== 'string' || rel.length === 0) return 'has an empty path';
  if (Buffer.byteLength(rel) > MAX_PATH_BYTES) return `has a path longer than ${MAX_PATH_BYTES} bytes`;
  for (const name of rel.split('/')) {
    const why = checkName(name);
    if (why) return why;
  }
  return undefined;
}

/** Why `name` can't be one host path component, or undefined when it can. */
export function checkName(name: string): string | undefined {
  if (name.length === 0) return 'has an empty name in its path';
  if (name === '.' || name === '..') return `has "${name}" in its path`;
  if (name.includes('\0')) return 'has a NUL byte in its name';
  if (/[\x01-\x1f\x7f]/.test(name)) return 'has a control character (a newline, a tab...) in its name';
  if (name.includes('\\')) return 'has a backslash in its name (a path separator on Windows)';
  if (Buffer.byteLength(name) > MAX_NAME_BYTES) return `has a name longer than ${MAX_NAME_BYTES} bytes`;
  return undefined;
}

/** A guest-made string made safe to print on one line of a terminal. */
export function printable(text: string, max = 300): string {
  const clean = text.replace(/[\x00-\x1f\x7f-\x9f]/g, '?');
  return clean.length > max ? `${clean.slice(0, max)}...` : clean;
}

/**
 * The key two names share on a case-insensitive host filesystem (macOS's APFS and HFS+, Windows'
 * NTFS by default): Unicode-normalised (NFC; APFS also treats NFD as the same) and case-folded.
 */
export function foldName(name: string): string {
  return name.normalize('NFC').toLowerCase();
}

/**
 * Whether a link at `linkRel` (relative to the folder, '/'-separated) pointing at `target` stays
 * inside the folder by its text alone: never absolute, only `..`s first, each up a real directory
 * of the folder, then names; so `a/..` after a link `a -> .` can't climb out. (Links on the way
 * are checked on the host by the writer.)
 */
export function linkTextStaysInside(linkRel: string, target: string): boolean {
  return target.length <= 4096 && !target.includes('\\') && linkStaysInside(linkRel, target);
}
