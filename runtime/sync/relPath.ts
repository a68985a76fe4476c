/**
 * Relative paths inside a synced tree, as both ends spell them: POSIX separators, no leading or
 * trailing `/`, no empty, `.` or `..` component, no NUL, at most 4096 characters. Anything the guest
 * names is checked with `isRelPath` before it is believed.
 */

export const MAX_REL_PATH = 4096;

/** True when `p` is a well-formed relative path inside the tree (see above). */
export function isRelPath(p: unknown): p is string {
  if (typeof p !== 'string' || p.length === 0 || p.length > MAX_REL_PATH || p.includes('\0')) return false;
  for (const part of p.split('/')) if (part === '' || part === '.' || part === '..' || part.length > 255) return false;
  return true;
}

/** The parent of a relative path ('' for a top-level entry). */
export function parentOf(p: string): string {
  const i = p.lastIndexOf('/');
  return i < 0 ? '' : p.slice(0, i);
}

/** `child` is `dir` itself or lies below it. */
export function isWithin(child: string, dir: string): boolean {
  return dir === '' || child === dir || child.startsWith(`${dir}/`);
}

/** Joins a relative directory and a name. */
export function joinRel(dir: string, name: string): string {
  return dir === '' ? name : `${dir}/${name}`;
}
