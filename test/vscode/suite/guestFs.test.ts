/**
 * vscode: guest files in VS Code (the `sandboxvm` FileSystemProvider) against a real guest.
 * Procedure: on a VM of its own, make a guest folder through exec (files, a link to a folder, a
 * dangling link, a binary file); Open Folder in VM adds it to the workspace; list it; open a file,
 * edit and save it and read its bytes in the guest; change a file in the guest through exec and wait
 * for the provider's change event and the open document's new text; create, rename and delete
 * through vscode.workspace.fs; a 20 MB file written and read back (sha256 on both sides, timed);
 * each error kind from the agent's errors; a 1,000-entry folder listed (timed); the VM stopped:
 * Unavailable with one sentence, and after a start the same calls and the watch work again.
 * Figures go to <artifacts>/guestfs-measurements.json.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import { extensionApi, runningVm, until } from './util';

const VM = 'vscode-guestfs';
const DIR = '/root/gfs';
const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const uri = (p: string) => vscode.Uri.from({ scheme: 'sandboxvm', authority: VM, path: p });
const measured: Record<string, unknown> = {};

function saveMeasurements(): void {
  const dir = process.env.SANDBOXVM_TEST_ARTIFACTS ?? '/tmp/sandboxvm-vscode';
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'guestfs-measurements.json'), JSON.stringify(measured, null, 2));
}

/** Resolves with the FileSystemError `work` rejects with; fails when it resolves. */
async function fsError(work: () => Thenable<unknown>): Promise<vscode.FileSystemError> {
  try {
    await work();
  } catch (err) {
    assert.ok(err instanceof vscode.FileSystemError, `a FileSystemError, not ${String(err)}`);
    return err;
  }
  assert.fail('it should have failed');
}

suite('vscode: guest files (sandboxvm://)', function () {
  this.timeout(600_000);
  let api: SandboxVmsApi;
  let watcher: vscode.FileSystemWatcher | undefined;

  /**
   * Runs a shell command in the guest through the extension's service connection; resolves with
   * stdout. Refused while the agent is silent (a loaded host starves a busy guest's heartbeat): waits
   * for it to answer and tries again, twice at most.
   */
  async function sh(script: string): Promise<string> {
    for (let attempt = 0; ; attempt++) {
      const sessions = await (await api.connection.client()).attach(VM);
      try {
        let out = '';
        const exit = await new Promise<{ code: number | null; error?: string }>((resolve) => {
          sessions.open({ kind: 'exec', argv: ['sh', '-c', script] }, { onData: (_s, d) => void (out += d.toString()), onExit: resolve }).catch((err: Error) => resolve({ code: null, error: err.message }));
        });
        if (exit.code !== 0 && attempt < 2 && /not responding|not connected/.test(exit.error ?? '')) {
          await api.model.waitFor(VM, (i) => i?.state === 'running' && i.runtime?.agent.connected === true && i.runtime.agent.responding !== false, 180_000);
          continue;
        }
        assert.equal(exit.code, 0, `${script}: ${exit.error ?? out}`);
        return out;
      } finally {
        sessions.dispose();
      }
    }
  }

  /** The next change event from the provider that `match` accepts. */
  function nextChange(match: (e: vscode.FileChangeEvent) => boolean, timeoutMs = 30_000): Promise<vscode.FileChangeEvent> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        sub.dispose();
        reject(new Error(`no matching change event within ${timeoutMs} ms`));
      }, timeoutMs);
      const sub = api.guestFs.provider.onDidChangeFile((events) => {
        const hit = events.find(match);
        if (!hit) return;
        clearTimeout(timer);
        sub.dispose();
        resolve(hit);
      });
    });
  }

  suiteSetup(async () => {
    api = await extensionApi();
    await runningVm(api, VM);
    // What the Explorer does for a workspace folder: a recursive watch of it (kept for the suite).
    watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(uri(DIR), '**'));
    await sh(`rm -rf ${DIR} && mkdir -p ${DIR}/sub && cd ${DIR} && printf 'hello from the guest\\n' > hello.txt && printf 'inner\\n' > sub/inner.txt && ln -s sub linkdir && ln -s nowhere dangling && printf 'BIN\\000\\001\\002\\377' > blob.bin`);
  });

  suiteTeardown(() => {
    watcher?.dispose();
    saveMeasurements();
  });

  test('Open Folder in VM: the folder is checked and named sandboxvm://<vm>/<path>; a file or a missing folder is refused in one sentence', async () => {
    const opened = await vscode.commands.executeCommand<vscode.Uri | undefined>(Command.openFolder, VM, { guestPath: `${DIR}/`, where: 'none' });
    assert.equal(opened?.toString(), `sandboxvm://${VM}${DIR}`);
    const shown: string[] = [];
    const sub = api.notifications.onDidShowError((m) => void shown.push(m));
    try {
      assert.equal(await vscode.commands.executeCommand(Command.openFolder, VM, { guestPath: '/root/no-such-folder', where: 'none' }), undefined);
      assert.equal(await vscode.commands.executeCommand(Command.openFolder, VM, { guestPath: `${DIR}/hello.txt`, where: 'none' }), undefined);
      assert.equal(await vscode.commands.executeCommand(Command.openFolder, VM, { guestPath: 'root', where: 'none' }), undefined);
    } finally {
      sub.dispose();
    }
    assert.deepEqual(shown, [
      `There is no folder /root/no-such-folder in ${VM}; give an existing one.`,
      `${DIR}/hello.txt in ${VM} is not a folder; give a folder (files open with File > Open).`,
      'Give an absolute path in the guest, like /root.',
    ]);
  });

  test('readDirectory lists the folder with types; links carry their target type', async () => {
    const entries = new Map(await vscode.workspace.fs.readDirectory(uri(DIR)));
    assert.equal(entries.get('hello.txt'), vscode.FileType.File);
    assert.equal(entries.get('sub'), vscode.FileType.Directory);
    assert.equal(entries.get('linkdir'), vscode.FileType.SymbolicLink | vscode.FileType.Directory);
    assert.equal(entries.get('dangling'), vscode.FileType.SymbolicLink | vscode.FileType.Unknown);
    const st = await vscode.workspace.fs.stat(uri(`${DIR}/hello.txt`));
    assert.equal(st.type, vscode.FileType.File);
    assert.equal(st.size, 'hello from the guest\n'.length);
    assert.equal(Math.floor(st.mtime / 1000), Number(await sh(`stat -c %Y ${DIR}/hello.txt`)));
    const link = await vscode.workspace.fs.stat(uri(`${DIR}/linkdir`));
    assert.equal(link.type, vscode.FileType.SymbolicLink | vscode.FileType.Directory);
    assert.deepEqual((await vscode.workspace.fs.readDirectory(uri(`${DIR}/linkdir`))).map(([n]) => n), ['inner.txt']);
  });

  test('a document opens, is edited and saved; the guest has the new bytes', async () => {
    const doc = await vscode.workspace.openTextDocument(uri(`${DIR}/hello.txt`));
    assert.equal(doc.getText(), 'hello from the guest\n');
    await vscode.window.showTextDocument(doc);
    const edit = new vscode.WorkspaceEdit();
    edit.insert(doc.uri, new vscode.Position(1, 0), 'edited in VS Code\n');
    assert.ok(await vscode.workspace.applyEdit(edit));
    const t0 = Date.now();
    assert.ok(await doc.save(), 'saved');
    measured.saveSmallFileMs = Date.now() - t0;
    assert.equal(await sh(`cat ${DIR}/hello.txt`), 'hello from the guest\nedited in VS Code\n');
    assert.equal(await sh(`stat -c %a ${DIR}/hello.txt`), '644\n');
  });

  test('a file changed in the guest fires a change event and the open document shows it', async () => {
    const doc = await vscode.workspace.openTextDocument(uri(`${DIR}/hello.txt`));
    assert.ok(!doc.isDirty);
    const event = nextChange((e) => e.uri.path === `${DIR}/hello.txt`);
    const t0 = Date.now();
    await sh(`printf 'changed inside the guest\\n' > ${DIR}/hello.txt`);
    const e = await event;
    measured.guestChangeToEventMs = Date.now() - t0;
    assert.equal(e.type, vscode.FileChangeType.Changed);
    await until('the open document to show the guest change', () => (doc.getText() === 'changed inside the guest\n' ? true : undefined), vscode.workspace.onDidChangeTextDocument, 30_000);
    measured.guestChangeToDocumentMs = Date.now() - t0;
    let createdSeen = false;
    const onCreate = watcher!.onDidCreate((u) => (createdSeen ||= u.path === `${DIR}/sub/new.txt`));
    const created = nextChange((e) => e.uri.path === `${DIR}/sub/new.txt` && e.type === vscode.FileChangeType.Created);
    await sh(`echo x > ${DIR}/sub/new.txt`);
    await created;
    await until('the FileSystemWatcher to report sub/new.txt', () => (createdSeen ? true : undefined), watcher!.onDidCreate, 30_000);
    const deleted = nextChange((e) => e.uri.path === `${DIR}/sub/new.txt` && e.type === vscode.FileChangeType.Deleted);
    await sh(`rm ${DIR}/sub/new.txt`);
    await deleted;
    onCreate.dispose();
  });

  test('create, rename and delete through vscode.workspace.fs', async () => {
    await vscode.workspace.fs.createDirectory(uri(`${DIR}/made`));
    await vscode.workspace.fs.writeFile(uri(`${DIR}/made/a.txt`), Buffer.from('A'));
    await vscode.workspace.fs.writeFile(uri(`${DIR}/made/b.txt`), Buffer.from('B'));
    assert.equal(await sh(`cat ${DIR}/made/a.txt ${DIR}/made/b.txt`), 'AB');
    const exists = await fsError(() => vscode.workspace.fs.rename(uri(`${DIR}/made/a.txt`), uri(`${DIR}/made/b.txt`), { overwrite: false }));
    assert.equal(exists.code, 'FileExists');
    await vscode.workspace.fs.rename(uri(`${DIR}/made/a.txt`), uri(`${DIR}/made/b.txt`), { overwrite: true });
    assert.equal(await sh(`ls ${DIR}/made; cat ${DIR}/made/b.txt`), 'b.txt\nA');
    await vscode.workspace.fs.rename(uri(`${DIR}/made`), uri(`${DIR}/renamed`));
    assert.equal(await sh(`ls ${DIR}/renamed`), 'b.txt\n');
    await vscode.workspace.fs.delete(uri(`${DIR}/renamed`), { recursive: true, useTrash: false });
    assert.equal(await sh(`ls ${DIR}/renamed 2>/dev/null || echo gone`), 'gone\n');
    assert.equal((await fsError(() => vscode.workspace.fs.stat(uri(`${DIR}/renamed`)))).code, 'FileNotFound');
  });

  test('a 20 MB file round-trips (sha256 in the guest and here), read and write timed', async () => {
    const data = randomBytes(20 * 1024 * 1024);
    let t0 = Date.now();
    await vscode.workspace.fs.writeFile(uri(`${DIR}/big.bin`), data);
    measured.write20MBMs = Date.now() - t0;
    assert.equal(await sh(`sha256sum < ${DIR}/big.bin`), `${sha(data)}  -\n`);
    t0 = Date.now();
    const back = await vscode.workspace.fs.readFile(uri(`${DIR}/big.bin`));
    measured.read20MBMs = Date.now() - t0;
    assert.equal(back.length, data.length);
    assert.equal(sha(back), sha(data));
    await sh(`head -c 20971520 /dev/urandom > ${DIR}/guest-big.bin`);
    const guestSum = (await sh(`sha256sum < ${DIR}/guest-big.bin`)).split(' ')[0];
    t0 = Date.now();
    const guestMade = await vscode.workspace.fs.readFile(uri(`${DIR}/guest-big.bin`));
    measured.readGuestMade20MBMs = Date.now() - t0;
    assert.equal(sha(guestMade), guestSum);
    await sh(`rm ${DIR}/big.bin ${DIR}/guest-big.bin`);
  });

  test('errors map to FileSystemError kinds', async () => {
    const p = api.guestFs.provider;
    assert.equal((await fsError(() => vscode.workspace.fs.stat(uri(`${DIR}/absent`)))).code, 'FileNotFound');
    assert.equal((await fsError(() => vscode.workspace.fs.readFile(uri(`${DIR}/absent`)))).code, 'FileNotFound');
    assert.equal((await fsError(() => p.writeFile(uri(`${DIR}/absent`), Buffer.from('x'), { create: false, overwrite: true }))).code, 'FileNotFound');
    assert.equal((await fsError(() => p.writeFile(uri(`${DIR}/hello.txt`), Buffer.from('x'), { create: true, overwrite: false }))).code, 'FileExists');
    assert.equal((await fsError(() => p.writeFile(uri(`${DIR}/no-dir/x.txt`), Buffer.from('x'), { create: true, overwrite: true }))).code, 'FileNotFound');
    assert.equal((await fsError(() => p.createDirectory(uri(`${DIR}/sub`)))).code, 'FileExists');
    assert.equal((await fsError(() => p.readDirectory(uri(`${DIR}/hello.txt`)))).code, 'FileNotADirectory');
    assert.equal((await fsError(() => p.readFile(uri(`${DIR}/sub`)))).code, 'FileIsADirectory');
    await sh('mkdir -p /mnt/ro && (mountpoint -q /mnt/ro || mount -t tmpfs -o ro tmpfs /mnt/ro)');
    assert.equal((await fsError(() => p.writeFile(uri('/mnt/ro/x.txt'), Buffer.from('x'), { create: true, overwrite: true }))).code, 'NoPermissions');
    assert.equal((await fsError(() => p.createDirectory(uri('/mnt/ro/d')))).code, 'NoPermissions');
    assert.equal(await sh(`cat ${DIR}/hello.txt`), 'changed inside the guest\n', 'nothing was written by the failed calls');
    // A file past what an editor reads from a VM (a sparse 600 MiB here) is refused before a byte moves.
    await sh(`truncate -s 600M ${DIR}/huge.bin`);
    const huge = await fsError(() => p.readFile(uri(`${DIR}/huge.bin`)));
    assert.match(huge.message, /is 600 MiB, more than the 512 MiB an editor reads from a VM; use Copy from VM instead/);
    await sh(`rm ${DIR}/huge.bin`);
  });

  test('a binary file opens as VS Code opens binaries (not as text)', async () => {
    const bytes = await vscode.workspace.fs.readFile(uri(`${DIR}/blob.bin`));
    assert.deepEqual([...bytes], [0x42, 0x49, 0x4e, 0, 1, 2, 0xff]);
    await assert.rejects(Promise.resolve(vscode.workspace.openTextDocument(uri(`${DIR}/blob.bin`))), /binary/i);
  });

  test('a 1,000-entry folder lists whole (timed)', async () => {
    // The watch reports the 1,000 new files too: the listing is timed once those events are in.
    const last = nextChange((e) => e.uri.path === `${DIR}/many/f999`, 120_000);
    let t0 = Date.now();
    await sh(`mkdir -p ${DIR}/many && cd ${DIR}/many && i=0; while [ $i -lt 1000 ]; do : > f$i; i=$((i+1)); done`);
    await last;
    measured.create1000ToLastEventMs = Date.now() - t0;
    t0 = Date.now();
    const entries = await vscode.workspace.fs.readDirectory(uri(`${DIR}/many`));
    measured.readDirectory1000Ms = Date.now() - t0;
    assert.equal(entries.length, 1000);
    assert.ok(entries.every(([, t]) => t === vscode.FileType.File));
    // What the Explorer does for a workspace folder: a recursive watch of it (kept for the suite).
    watcher = vscode.workspace.createFileSystemWatcher(new vscode.RelativePattern(uri(DIR), '**'));
    await sh(`rm -rf ${DIR}/many`);
  });

  test('a stopped VM: Unavailable in one sentence; after a start the files and the watch work again', async () => {
    assert.ok(api.guestFs.provider.watchCount > 0, 'the workspace folder is watched');
    await vscode.commands.executeCommand(Command.stop, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'stopped', 120_000);
    const err = await fsError(() => vscode.workspace.fs.stat(uri(`${DIR}/hello.txt`)));
    assert.equal(err.code, 'Unavailable');
    assert.match(err.message, new RegExp(`sandbox VM ${VM} is not running; start it to see its files`));
    assert.equal((await fsError(() => vscode.workspace.fs.readDirectory(uri(DIR)))).code, 'Unavailable');
    await vscode.commands.executeCommand(Command.start, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'running' && !!i.runtime?.agent.connected, 240_000);
    assert.equal((await vscode.workspace.fs.stat(uri(`${DIR}/hello.txt`))).type, vscode.FileType.File);
    // The watch comes back on its own (it reopens when the VM runs): a guest change shows again.
    const t0 = Date.now();
    let back: vscode.FileChangeEvent | undefined;
    for (let i = 0; !back && Date.now() - t0 < 60_000; i++) {
      const event = nextChange((e) => e.uri.path === `${DIR}/after-start-${i}.txt`, 3000);
      await sh(`echo back > ${DIR}/after-start-${i}.txt`);
      back = await event.catch(() => undefined);
    }
    assert.ok(back, 'a guest change after the start fires an event');
    measured.watchBackAfterStartMs = Date.now() - t0;
  });
});
