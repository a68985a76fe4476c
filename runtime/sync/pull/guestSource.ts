/**
 * The guest side of a pull over a running VM's sessions: the agent's paged `list` (stopping at the
 * first page whose count says the folder holds more than the pull may take, so a folder of a
 * million files is refused after one call, not after listing it), `readlink`, and streamed reads.
 * Many files travel as one tar stream from the guest's own `tar` (GNU tar, in every Debian image)
 * run by an exec session, whose bytes the relay moves: one session instead of one per file.
 * What comes back was validated by the worker (names, types, sizes; runtime/protocol/messages.ts)
 * and is still untrusted: the engine bounds and checks it again.
 */
import { PassThrough } from 'node:stream';
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
    readMany: (root, rels) => tarOf(sessions, root, rels),
    readlink: (guestPath) => files.readlink(guestPath),
    read: (guestPath, onData, signal) => files.read(guestPath, onData, signal),
  };
}

/**
 * `tar` in the guest over the files `rels` of `root` (names on stdin, NUL-separated, never taken as
 * options or patterns; links not followed; hard links stored as files), its stdout as chunks.
 * Failures (no tar, a file gone) just end the stream early: the engine reads the rest one by one.
 */
function tarOf(sessions: SessionClient, root: string, rels: string[]): { chunks: AsyncIterable<Buffer>; close(): void } {
  const pipe = new PassThrough({ highWaterMark: 1024 * 1024 });
  const argv = ['tar', '--create', '--file=-', '--format=gnu', '--no-recursion', '--hard-dereference', '--ignore-failed-read', '--directory', root, '--null', '--no-unquote', '--verbatim-files-from', '--files-from=-'];
  let session: Awaited<ReturnType<SessionClient['open']>> | undefined;
  let closed = false;
  sessions
    .open(
      { kind: 'exec', argv, env: { LC_ALL: 'C.UTF-8' } },
      {
        onData: (stream, data) => {
          if (stream !== 1 || pipe.destroyed) return;
          if (!pipe.write(data)) return new Promise<void>((resolve) => pipe.once('drain', resolve).once('close', resolve));
        },
        onExit: () => pipe.end(),
      },
    )
    .then(async (s) => {
      session = s;
      if (closed) return void s.close().catch(() => undefined);
      await s.write(Buffer.from(rels.map((r) => `${r}\0`).join('')));
      await s.eof();
    })
    .catch((err: Error) => pipe.destroy(err));
  return {
    chunks: pipe,
    close: () => {
      closed = true;
      pipe.destroy();
      void session?.close().catch(() => undefined);
    },
  };
}
