/**
 * Scans a host folder: every entry not ignored, as relative path, type, size, mode and mtime.
 * Symbolic links whose target stays inside the folder are kept as links; links that lead out of
 * it (absolute, or climbing above the root) are skipped with a warning, never followed. FIFOs,
 * sockets and devices are skipped silently. `.gitignore` files are read as they are met (when
 * `gitignore` is on) and apply to their directory and below.
 */
import { promises as fsp, type Stats } from 'node:fs';
import * as path from 'node:path';
import { IgnoreRules, parseIgnoreFile } from './ignore';
import { joinRel, parentOf } from './relPath';
import type { TreeEntry } from './wire';

export interface ScanResult {
  entries: Map<string, TreeEntry>;
  /** Every directory scanned ('' is the root), for the watcher. */
  dirs: string[];
  /** The rules in force, including each .gitignore met (the guest walks with the same). */
  rules: IgnoreRules;
  warnings: string[];
}

export interface ScanOptions {
  gitignore: boolean;
  /** Scan only below this directory ('' = all); `rules` must then hold every .gitignore above it. */
  under?: string;
}

/** The entry of one host path, or undefined when it is missing, ignored by type, or a link leading out. */
export function entryOf(rel: string, st: Stats, target?: string): TreeEntry | undefined {
  if (st.isDirectory()) return { path: rel, type: 'dir', size: 0, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) };
  if (st.isFile()) return { path: rel, type: 'file', size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) };
  if (st.isSymbolicLink() && target !== undefined) return { path: rel, type: 'symlink', size: 0, mode: 0o777, mtimeMs: Math.floor(st.mtimeMs), target };
  return undefined;
}

/** Whether a link at `rel` with `target` stays inside the tree. */
export function linkStaysInside(rel: string, target: string): boolean {
  if (target === '' || path.posix.isAbsolute(target) || target.includes('\0')) return false;
  const resolved = path.posix.normalize(path.posix.join(parentOf(rel), target));
  return resolved !== '..' && !resolved.startsWith('../');
}

export async function scanTree(root: string, rules: IgnoreRules, options: ScanOptions): Promise<ScanResult> {
  const result: ScanResult = { entries: new Map(), dirs: [], rules, warnings: [] };
  const walk = async (dir: string): Promise<void> => {
    result.dirs.push(dir);
    const abs = dir === '' ? root : path.join(root, dir);
    if (options.gitignore) {
      const text = await fsp.readFile(path.join(abs, '.gitignore'), 'utf8').catch(() => undefined);
      if (text !== undefined) result.rules = result.rules.with(dir, parseIgnoreFile(text));
    }
    let names: string[];
    try {
      names = await fsp.readdir(abs);
    } catch (err) {
      if (dir === '') throw err;
      result.warnings.push(`cannot read ${abs}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
      return;
    }
    names.sort();
    const stats = await Promise.all(names.map((n) => fsp.lstat(path.join(abs, n)).catch(() => undefined)));
    const subdirs: string[] = [];
    for (let i = 0; i < names.length; i++) {
      const st = stats[i];
      if (!st) continue;
      const rel = joinRel(dir, names[i]);
      if (result.rules.ignores(rel, st.isDirectory())) continue;
      let target: string | undefined;
      if (st.isSymbolicLink()) {
        target = await fsp.readlink(path.join(abs, names[i])).catch(() => undefined);
        if (target === undefined) continue;
        if (!linkStaysInside(rel, target)) {
          result.warnings.push(`${path.join(root, rel)} is a link to ${target}, outside the folder: skipped`);
          continue;
        }
      }
      const entry = entryOf(rel, st, target);
      if (!entry) continue;
      result.entries.set(rel, entry);
      if (entry.type === 'dir') subdirs.push(rel);
    }
    for (const d of subdirs) await walk(d);
  };
  await walk(options.under ?? '');
  return result;
}
