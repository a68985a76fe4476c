/**
 * What to send so the guest's folder equals the host's: a pure function of the two manifests.
 * Equal means same type and, for a file, same size, mode and whole-millisecond mtime (the guest
 * stamps each file it writes with the host's); for a link, the same target; for a directory, the
 * same mode. Order: removals (topmost only), directories (parents first), then links and files.
 */
import { isWithin, parentOf } from './relPath';
import type { TreeEntry } from './wire';

export interface SyncPlan {
  /** Guest paths to remove (recursively); none lies below another. */
  removes: string[];
  dirs: TreeEntry[];
  links: TreeEntry[];
  files: TreeEntry[];
  /** Host files already equal in the guest. */
  equal: number;
  /** Bytes of the files to send. */
  bytes: number;
}

export function sameEntry(a: TreeEntry, b: TreeEntry | undefined): boolean {
  if (!b || a.type !== b.type) return false;
  if (a.type === 'file') return a.size === b.size && a.mtimeMs === b.mtimeMs && (a.mode & 0o7777) === (b.mode & 0o7777);
  if (a.type === 'symlink') return a.target === b.target;
  return (a.mode & 0o7777) === (b.mode & 0o7777);
}

/**
 * @param host what the host has (below `under`, or everything)
 * @param guest what the guest has, as far as it is known
 * @param under limits the removals to this subtree ('' = the whole folder)
 */
export function planSync(host: ReadonlyMap<string, TreeEntry>, guest: ReadonlyMap<string, TreeEntry>, under = ''): SyncPlan {
  const plan: SyncPlan = { removes: [], dirs: [], links: [], files: [], equal: 0, bytes: 0 };
  const removed: string[] = [];
  const guestPaths = [...guest.keys()].filter((p) => isWithin(p, under) && p !== under).sort();
  for (const p of guestPaths) {
    if (removed.length > 0 && isWithin(p, removed[removed.length - 1])) continue;
    const h = host.get(p);
    const g = guest.get(p)!;
    // A type change removes the old entry first (a directory becoming a file, a link becoming a directory).
    if (!h || h.type !== g.type) {
      plan.removes.push(p);
      removed.push(p);
    }
  }
  for (const h of [...host.values()].sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))) {
    const g = guest.get(h.path);
    const gone = removed.length > 0 && removed.some((r) => isWithin(h.path, r));
    if (!gone && sameEntry(h, g)) {
      if (h.type === 'file') plan.equal++;
      continue;
    }
    if (h.type === 'dir') plan.dirs.push(h);
    else if (h.type === 'symlink') plan.links.push(h);
    else {
      plan.files.push(h);
      plan.bytes += h.size;
    }
  }
  return plan;
}

/** Removes `p` and everything below it from a model of the guest. */
export function forgetSubtree(model: Map<string, TreeEntry>, p: string): void {
  model.delete(p);
  const prefix = `${p}/`;
  for (const k of model.keys()) if (k.startsWith(prefix)) model.delete(k);
}

export { parentOf };
