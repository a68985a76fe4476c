/**
 * The guest side of a pull over a running VM's sessions: the agent's paged `list` (stopping at the
 * first page whose count says the folder holds more than the pull may take, so a folder of a
 * million files is refused after one call, not after listing it), `readlink`, and streamed reads.
 * What comes back was validated by the worker (names, types, sizes; runtime/protocol/messages.ts)
 * and is still untrusted: the engine bounds and checks it again.
 */
import { GuestFiles, type GuestEntry } from '../../client/guestFiles';
import type { SessionClient } from '../../client/sessionClient';
import { TooManyEntries, type PullSource } from './pullEngine';

export function guestPullSource(sessions: SessionClient): PullSource {
  const files = new GuestFiles(sessions);
  return {
    async list(guestPath: string, budget: number): Promise<GuestEntry[]> {
      const all: GuestEntry[] = [];
      let offset: number | null = 0;
      while (offset !== null) {
        const page: { entries: GuestEntry[]; total: number; next: number | null } = await sessions.call('list', { path: guestPath, offset });
        if (page.total > budget) throw new TooManyEntries();
        all.push(...page.entries);
        if (all.length > budget) throw new TooManyEntries();
        offset = page.next;
      }
      return all;
    },
    readlink: (guestPath) => files.readlink(guestPath),
    read: (guestPath, onData, signal) => files.read(guestPath, onData, signal),
  };
}
