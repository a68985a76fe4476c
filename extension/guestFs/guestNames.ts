/** Names and relative paths that come from the guest, checked before they become part of a URI (no vscode import: unit-tested). */

/** Longest guest path accepted (Linux's PATH_MAX). */
export const MAX_GUEST_PATH = 4096;

/**
 * A name the guest listed or reported, checked before it becomes part of a URI: one non-empty
 * component, not `.` or `..`, no `/` or NUL, at most 255 bytes. Returns undefined when it fails.
 */
export function checkGuestName(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0 || name === '.' || name === '..') return undefined;
  if (name.includes('/') || name.includes('\0') || Buffer.byteLength(name) > 255) return undefined;
  return name;
}

/**
 * A path relative to a watched folder, as the guest's watcher reports it: each segment a valid name.
 * Returns the segments, or undefined when any is not (the event is then dropped).
 */
export function checkRelativePath(relative: unknown): string[] | undefined {
  if (typeof relative !== 'string' || relative.length === 0 || relative.length > MAX_GUEST_PATH) return undefined;
  const segments = relative.split('/');
  return segments.every((s) => checkGuestName(s) !== undefined) ? segments : undefined;
}
