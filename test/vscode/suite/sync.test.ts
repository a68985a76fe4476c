/**
 * vscode: workspace sync and pull through the extension's commands, against a real guest.
 * Procedure: on a running VM, start a sync of a small workspace folder (a text file and a 200 KiB
 * random file in a subfolder) with Sync Workspace Folder to VM (arguments skip the pickers); the
 * command resolves once the guest matches; the sync shows as a child of its VM reading "in sync";
 * the guest holds the same bytes (read through the client); a file edited and saved in a VS Code
 * editor reaches the guest; Stop Syncing removes the child. A guest path that is a file, and a host
 * folder that does not exist, each show one sentence and start nothing. Then Pull Folder from VM
 * of a guest folder holding a normal file and a `.vscode/tasks.json`: the file is written, the
 * tasks file is reported held back and is not written; pulled again allowing it, it is written.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import { GuestFiles } from '../../../runtime/client/guestFiles';
import type { PullSummary } from '../../../runtime/sync/pull/pullEngine';
import type { SyncStatus } from '../../../runtime/sync/types';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import type { Node, VmNode } from '../../../extension/tree/vmTreeProvider';
import { SHARED_VM, extensionApi, runningVm, until } from './util';

const VM = SHARED_VM;
const GUEST = '/root/sync-suite';

suite('vscode: workspace sync and pull', function () {
  this.timeout(400_000);
  let api: SandboxVmsApi;
  let hostDir: string;
  const vmNode: VmNode = { kind: 'vm', name: VM };
  const files: Record<string, Buffer> = {
    'hello.txt': Buffer.from('hello from the host\n'),
    'src/data.bin': randomBytes(200 * 1024),
  };

  suiteSetup(async () => {
    api = await extensionApi();
    await runningVm(api, VM);
    hostDir = path.join(vscode.workspace.workspaceFolders![0].uri.fsPath, 'sync-suite');
    for (const [rel, data] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(hostDir, rel)), { recursive: true });
      fs.writeFileSync(path.join(hostDir, rel), data);
    }
  });

  /** A guest file's bytes, read through the client's file calls. */
  async function guestBytes(guestPath: string): Promise<Buffer | undefined> {
    const sessions = await (await api.connection.client()).attach(VM);
    try {
      const chunks: Buffer[] = [];
      await new GuestFiles(sessions).read(guestPath, (c) => void chunks.push(Buffer.from(c)));
      return Buffer.concat(chunks);
    } catch (err) {
      if (/ENOENT/.test((err as Error).message)) return undefined;
      throw err;
    } finally {
      sessions.dispose();
    }
  }

  async function guestExec(script: string): Promise<void> {
    const sessions = await (await api.connection.client()).attach(VM);
    try {
      let out = '';
      const exit = await new Promise<{ code: number | null; error?: string }>((resolve, reject) => {
        sessions.open({ kind: 'exec', argv: ['sh', '-c', script] }, { onData: (_s, d) => void (out += d.toString()), onExit: resolve }).catch(reject);
      });
      assert.equal(exit.code, 0, `${script}: ${exit.error ?? out}`);
    } finally {
      sessions.dispose();
    }
  }

  const syncChild = (id: string) => api.tree.getChildren(vmNode).find((n: Node) => n.kind === 'sync' && n.id === id);
  let started: SyncStatus | undefined;

  test('Sync Workspace Folder to VM: the first copy finishes, the sync shows under its VM in sync, the bytes are in the guest', async () => {
    started = await vscode.commands.executeCommand<SyncStatus | undefined>(Command.syncFolder, VM, { hostDir, guestPath: GUEST });
    assert.ok(started, 'the command resolved with the sync');
    assert.equal(started.state, 'in-sync');
    assert.equal(started.guestPath, GUEST);
    const id = started.id;
    const child = await until('the sync under its VM', () => syncChild(id), api.tree.onDidChangeTreeData, 30_000);
    const item = api.tree.getTreeItem(child);
    assert.equal(item.label, 'sync-suite');
    assert.equal(item.description, `in sync → ${GUEST}`);
    assert.equal((item.iconPath as vscode.ThemeIcon).id, 'check');
    assert.equal(item.contextValue, 'vmSync');
    assert.match(String(item.tooltip), new RegExp(`Host folder: ${hostDir}\\nIn ${VM}: ${GUEST}`));
    for (const [rel, data] of Object.entries(files)) assert.ok((await guestBytes(`${GUEST}/${rel}`))?.equals(data), `${rel} is in the guest, byte for byte`);
  });

  test('a file saved in a VS Code editor reaches the guest', async () => {
    assert.ok(started, 'the sync started');
    const uri = vscode.Uri.file(path.join(hostDir, 'hello.txt'));
    const doc = await vscode.workspace.openTextDocument(uri);
    const editor = await vscode.window.showTextDocument(doc);
    const line = `edited in VS Code ${Date.now()}\n`;
    assert.ok(await editor.edit((e) => e.insert(new vscode.Position(doc.lineCount - 1, 0), line)));
    assert.ok(await doc.save(), 'the editor saved');
    const want = fs.readFileSync(uri.fsPath);
    assert.ok(want.toString().includes(line));
    const t0 = Date.now();
    let got: Buffer | undefined;
    while (!(got = await guestBytes(`${GUEST}/hello.txt`))?.equals(want)) {
      assert.ok(Date.now() - t0 < 30_000, `the guest still has ${JSON.stringify(got?.toString())} after 30 s`);
      await new Promise((r) => setTimeout(r, 200));
    }
    console.log(`    saved edit visible in the guest after ${Date.now() - t0} ms (polled every 200 ms)`);
    await vscode.commands.executeCommand('workbench.action.closeActiveEditor');
  });

  test('Stop Syncing removes the sync from under its VM; the guest keeps its files', async () => {
    assert.ok(started, 'the sync started');
    const id = started.id;
    const result = await vscode.commands.executeCommand<{ removed: string[] } | undefined>(Command.stopSync, { kind: 'sync', vm: VM, id });
    assert.deepEqual(result?.removed, [id]);
    await until('the sync gone from the tree', () => (syncChild(id) ? undefined : true), api.tree.onDidChangeTreeData, 30_000);
    assert.equal(api.syncs.list(VM).length, 0);
    assert.ok((await guestBytes(`${GUEST}/src/data.bin`))?.equals(files['src/data.bin']), 'the guest keeps the synced files');
  });

  test('a guest path that is a file, a missing host folder, a stopped VM: one sentence each, no sync', async () => {
    await guestExec('echo not-a-folder > /root/sync-suite-file');
    const stopped = 'sync-suite-stopped';
    if (!api.model.get(stopped)) await vscode.commands.executeCommand(Command.create, undefined, { name: stopped, cpus: 1, memory: '512M', disk: '10G' });
    const errors: string[] = [];
    const sub = api.notifications.onDidShowError((m) => errors.push(m));
    try {
      assert.equal(await vscode.commands.executeCommand(Command.syncFolder, VM, { hostDir, guestPath: '/root/sync-suite-file' }), undefined);
      assert.equal(await vscode.commands.executeCommand(Command.syncFolder, VM, { hostDir: path.join(hostDir, 'missing'), guestPath: GUEST }), undefined);
      assert.equal(await vscode.commands.executeCommand(Command.syncFolder, stopped, { hostDir, guestPath: GUEST }), undefined);
      assert.equal(await vscode.commands.executeCommand(Command.pullFolder, stopped, { guestPath: GUEST, hostFolder: hostDir }), undefined);
    } finally {
      sub.dispose();
      await vscode.commands.executeCommand(Command.delete, stopped, { confirm: false });
    }
    assert.deepEqual(errors, [
      `The guest path /root/sync-suite-file in ${VM} is a file; give a folder (it is made if missing).`,
      `The folder ${path.join(hostDir, 'missing')} does not exist on this machine.`,
      `The VM ${stopped} is stopped; start it first.`,
      `The VM ${stopped} is stopped; start it first.`,
    ]);
    assert.equal((await (await api.syncs.client()).list(VM)).length, 0, 'no sync was started');
  });

  test('Pull Folder from VM writes a normal file and holds back .vscode/tasks.json without writing it', async () => {
    await guestExec('mkdir -p /root/pull-suite/.vscode && echo pulled-file > /root/pull-suite/notes.txt && echo \'{"version":"2.0.0","tasks":[{"label":"x","type":"shell","command":"touch /tmp/pwned","runOptions":{"runOn":"folderOpen"}}]}\' > /root/pull-suite/.vscode/tasks.json');
    const into = path.join(vscode.workspace.workspaceFolders![0].uri.fsPath, 'pulled');
    const summary = await vscode.commands.executeCommand<PullSummary | undefined>(Command.pullFolder, VM, { guestPath: '/root/pull-suite', hostFolder: into });
    assert.ok(summary, 'the pull finished');
    assert.equal(fs.readFileSync(path.join(into, 'notes.txt'), 'utf8'), 'pulled-file\n');
    assert.deepEqual(summary.heldBack.map((h) => h.path), ['.vscode/tasks.json']);
    assert.ok(!fs.existsSync(path.join(into, '.vscode', 'tasks.json')), 'the held-back file is not written');
    assert.equal(summary.conflicts.length, 0);
    assert.equal(summary.written, 1);
    // What Review Held-Back Files does with the user's pick: the same pull again, allowing it.
    const allowed = await vscode.commands.executeCommand<PullSummary | undefined>(Command.pullFolder, VM, { guestPath: '/root/pull-suite', hostFolder: into, allow: ['.vscode/tasks.json'] });
    assert.deepEqual(allowed?.heldBack, []);
    assert.match(fs.readFileSync(path.join(into, '.vscode', 'tasks.json'), 'utf8'), /"runOn":"folderOpen"/);
    assert.equal(allowed?.written, 1, 'only the allowed file is written the second time');
  });
});
