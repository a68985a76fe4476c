/**
 * A VM's disk usage on the host, from stat alone (allocated blocks; no qemu-img, no guest), so
 * `vm.list` stays fast: a handful of stat calls per VM.
 *
 *  - disk:        its writable disk (the top layer QEMU writes)
 *  - checkpoints: its checkpoints' share: every other layer (frozen ones, and deleted checkpoints'
 *                 layers still needed) and the memory states under checkpoints/
 *  - savedState:  saved.state and saved.epoch while saved, unless they are the same file as a
 *                 checkpoint's memory state (hard links are counted once, under checkpoints)
 *  - total:       the three together: what removing the VM frees
 *  - sharedBase:  the base image's own size (shared by every VM on it; not in total)
 */
import { readdirSync, statSync, type Stats } from 'node:fs';
import * as path from 'node:path';
import { activeDisk } from '../common/activeDisk';
import { VM_FILES } from '../common/paths';
import type { DiskUsage } from '../common/status';

function stat(file: string): Stats | undefined {
  try {
    return statSync(file);
  } catch {
    return undefined;
  }
}

function list(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Base images' sizes by path (they never change once published). */
const baseSizes = new Map<string, number>();

function baseSize(file: string): number {
  let size = baseSizes.get(file);
  if (size === undefined) {
    const st = stat(file);
    size = st ? st.blocks * 512 : 0;
    if (st) baseSizes.set(file, size);
  }
  return size;
}

/** Figures younger than this are served again: `vm.list` of many VMs with many checkpoints stays cheap. */
const CACHE_MS = 5000;
const cache = new Map<string, { at: number; usage: DiskUsage }>();

/**
 * The usage of the VM in `vmDir` whose base image is `baseDisk`, at most CACHE_MS old (the
 * manager forgets a VM's figures when it publishes a change of it). Never throws (missing files count 0).
 */
export function diskUsage(vmDir: string, baseDisk: string, now = Date.now()): DiskUsage {
  const hit = cache.get(vmDir);
  if (hit && now - hit.at < CACHE_MS) return hit.usage;
  const usage = measure(vmDir, baseDisk);
  if (cache.size > 10_000) cache.clear();
  cache.set(vmDir, { at: now, usage });
  return usage;
}

/** Drops the cached figures of `vmDir` (its files changed). */
export function forgetDiskUsage(vmDir: string): void {
  cache.delete(vmDir);
}

/** The figures now, from stat. */
export function measure(vmDir: string, baseDisk: string): DiskUsage {
  const seen = new Set<string>();
  const bytes = (file: string): number => {
    const st = stat(file);
    if (!st || !st.isFile()) return 0;
    const key = `${st.dev}:${st.ino}`;
    if (seen.has(key)) return 0;
    seen.add(key);
    return st.blocks * 512;
  };
  const top = activeDisk(vmDir);
  const diskBytes = bytes(top);
  let checkpointsBytes = 0;
  const layersDir = path.join(vmDir, VM_FILES.layers);
  const layerFiles = [path.join(vmDir, VM_FILES.disk), ...list(layersDir).map((f) => path.join(layersDir, f))];
  for (const f of layerFiles) if (f !== top) checkpointsBytes += bytes(f);
  const cpDir = path.join(vmDir, VM_FILES.checkpoints);
  for (const id of list(cpDir)) for (const f of list(path.join(cpDir, id))) checkpointsBytes += bytes(path.join(cpDir, id, f));
  const savedStateBytes = bytes(path.join(vmDir, VM_FILES.savedState)) + bytes(path.join(vmDir, VM_FILES.savedEpoch));
  return { totalBytes: diskBytes + checkpointsBytes + savedStateBytes, diskBytes, checkpointsBytes, savedStateBytes, sharedBaseBytes: baseSize(baseDisk) };
}
