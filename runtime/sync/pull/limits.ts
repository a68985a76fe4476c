/**
 * How much one pull may write on the host, whatever the guest claims. A guest can say a file holds
 * 1 TB (a sparse file costs it nothing) or make a million files; the host refuses before reading
 * them, and never takes more bytes for a file than the guest announced.
 *
 * Defaults (each can be changed per pull: `sandboxvm pull --max-file-size/--max-total/--max-files/--min-free`):
 *   maxFileBytes   1 GiB    one file; bigger ones are refused, the rest of the pull goes on
 *   maxTotalBytes  8 GiB    all files of one pull; files past it are refused
 *   maxEntries     50,000   files, folders and links of one pull; a guest folder with more is
 *                            refused as a whole before anything is written (a workspace with
 *                            more, e.g. one with node_modules, raises it or pulls a subfolder)
 *   minFreeBytes   1 GiB    the host filesystem keeps at least this much free, and at least
 *   minFreeFraction 5%      this share of its size: a file that would go below is refused
 */
import * as fs from 'node:fs';

export interface PullLimits {
  maxFileBytes: number;
  maxTotalBytes: number;
  maxEntries: number;
  minFreeBytes: number;
  minFreeFraction: number;
}

export const DEFAULT_LIMITS: Readonly<PullLimits> = Object.freeze({
  maxFileBytes: 2 ** 30,
  maxTotalBytes: 8 * 2 ** 30,
  maxEntries: 50_000,
  minFreeBytes: 2 ** 30,
  minFreeFraction: 0.05,
});

/** Free space on the filesystem holding `dir`, for an unprivileged writer (statfs bavail), and its size. */
export function freeSpace(dir: string): { free: number; size: number } {
  const st = fs.statfsSync(dir);
  return { free: st.bavail * st.bsize, size: st.blocks * st.bsize };
}

/** The bytes that must stay free on a filesystem of `size` bytes. */
export function freeFloor(limits: PullLimits, size: number): number {
  return Math.max(limits.minFreeBytes, Math.ceil(size * limits.minFreeFraction));
}
