/** The status bar's look of workspace syncs (extension/sync/syncPresentation.ts). */
import { strict as assert } from 'node:assert';
import { test } from 'node:test';
import { syncLook } from '../../extension/sync/syncPresentation';
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
