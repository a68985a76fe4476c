/**
 * Room on the host for what a guest sends. A guest can list a file as 1 TiB (a sparse file costs
 * it nothing), or list 0 bytes and send more (as /proc files do): a copy from it refuses before
 * writing when the host filesystem would keep less than the pull's free-space floor (1 GiB and 5%
 * of its size, runtime/sync/pull/limits.ts), and checks again every ROOM_CHECK_BYTES it writes.
 */
import { DEFAULT_LIMITS, freeFloor, freeSpace } from '../sync/pull/limits';
import { describeSize } from '../sync/pull/safeHostWriter';
import { ErrorCode, SandboxError } from '../common/errors';

/** How often (in bytes written) a download checks the host's free space again. */
export const ROOM_CHECK_BYTES = 64 * 2 ** 20;

/** Throws, naming `what`, when writing `bytes` more into `dir` would leave the host below its floor. */
export function ensureHostRoom(dir: string, bytes: number, what: string): void {
  let room: { free: number; size: number };
  try {
    room = freeSpace(dir);
  } catch {
    return; // no such folder (yet): the write that follows says so in its own words
  }
  const { free, size } = room;
  const floor = freeFloor(DEFAULT_LIMITS, size);
  if (free - bytes >= floor) return;
  throw new SandboxError(
    ErrorCode.BadArgument,
    `${what} needs ${describeSize(bytes)} and the host has ${describeSize(free)} free in ${dir} (${describeSize(floor)} is kept free); nothing was written: free space or copy less`,
  );
}
