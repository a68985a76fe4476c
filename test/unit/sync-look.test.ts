/** The status bar's look of workspace syncs (extension/sync/syncPresentation.ts). */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { pullSentence, syncItemLook, syncLook } from '../../extension/sync/syncPresentation';
import type { PullSummary } from '../../runtime/sync/pull/pullEngine';
import type { SyncStatus } from '../../runtime/sync/types';

const status = (over: Partial<SyncStatus>): SyncStatus => ({ id: 'aaaaaaaa', vm: 'dev', hostDir: '/w/app', guestPath: '/root/app', state: 'in-sync', message: 'in sync', files: 0, totalFiles: 0, bytes: 0, totalBytes: 0, warnings: [], ...over });

test('nothing to show without syncs; in sync, syncing with progress, errors first', () => {
  assert.equal(syncLook([], ['/w/app']), undefined);
  assert.equal(syncLook([status({})], ['/w/app'])!.text, '$(check) dev: in sync');
  assert.equal(syncLook([status({ state: 'syncing', files: 3, totalFiles: 10, message: 'syncing 7 file(s)' })], ['/w/app'])!.text, '$(sync~spin) dev: syncing 3/10');
  const both = syncLook([status({}), status({ id: 'bbbbbbbb', vm: 'ci', hostDir: '/w/app/sub', state: 'error', message: 'cannot write x in the guest: no space left on the guest disk' })], ['/w/app'])!;
  assert.equal(both.text, '$(warning) ci: sync error (+1)');
  assert.match(both.tooltip, /\/w\/app\/sub → ci:\/root\/app: cannot write x/);
});

test("the window's folders' syncs are shown before others", () => {
  const look = syncLook([status({ hostDir: '/elsewhere', state: 'error', message: 'bad' }), status({ vm: 'mine' })], ['/w/app'])!;
  assert.equal(look.text, '$(check) mine: in sync');
  assert.equal(syncLook([status({ hostDir: '/elsewhere' })], ['/w/app'])!.text, '$(check) dev: in sync');
});

test("a sync's tree item: the host folder's name, the guest path and its state; errors and the last error in the tooltip", () => {
  const now = 1_000_000;
  const inSync = syncItemLook(status({ hostDir: '/home/me/app', lastSyncAt: now - 2000 }), undefined, now);
  assert.deepEqual([inSync.label, inSync.description, inSync.icon], ['app', 'in sync → /root/app', 'check']);
  assert.match(inSync.tooltip, /Host folder: \/home\/me\/app\nIn dev: \/root\/app\nNow: in sync\nLast in sync: just now/);
  const busy = syncItemLook(status({ state: 'syncing', files: 3, totalFiles: 4, bytes: 1024, totalBytes: 4096, message: 'syncing 1 file(s)' }), undefined, now);
  assert.equal(busy.description, 'syncing 1 file → /root/app');
  assert.equal(busy.icon, 'sync~spin');
  assert.match(busy.tooltip, /Progress: 3 of 4 files, 1\.0 KiB of 4\.0 KiB/);
  const broken = syncItemLook(status({ state: 'error', message: 'cannot reach the guest agent; retrying' }), undefined, now);
  assert.deepEqual([broken.description, broken.icon], ['cannot reach the guest agent → /root/app', 'warning']);
  const scanning = syncItemLook(status({ state: 'scanning', message: 'comparing the host and guest folders' }), undefined, now);
  assert.equal(scanning.description, 'comparing → /root/app');
  assert.match(scanning.tooltip, /Now: comparing the host and guest folders/);
  const recovered = syncItemLook(status({}), { message: 'no space left on the guest disk; retrying', at: now - 120_000 }, now);
  assert.match(recovered.tooltip, /Last error \(2 min ago\): no space left on the guest disk$/m);
});

test('a pull reads as one sentence: written, held back and conflicts named', () => {
  const summary: PullSummary = {
    guestPath: '/root/app', hostRoot: '/home/me/app', written: 2, folders: 1, removed: 0, unchanged: 5, bytes: 10, seconds: 0.5,
    heldBack: [{ path: '.vscode/tasks.json', reason: 'VS Code runs tasks from it' }],
    conflicts: [{ path: 'README.md', reason: 'changed on both sides', guestCopy: 'README (guest).md' }],
    refused: [], quarantine: '/q',
  };
  assert.equal(
    pullSentence('dev', summary),
    "Pulled dev:/root/app into app: 2 files written, 5 unchanged. Held back 1 file that could run programs on this machine (.vscode/tasks.json); review it to allow. 1 conflict (README.md): your version is kept, the guest's is beside it.",
  );
  assert.equal(pullSentence('dev', { ...summary, heldBack: [], conflicts: [], unchanged: 0 }), 'Pulled dev:/root/app into app: 2 files written.');
});
