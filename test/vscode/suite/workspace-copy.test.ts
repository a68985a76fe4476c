/**
 * vscode: Copy to VM (Explorer) and Copy from VM (the tree), against a real guest.
 * Procedure: on a running VM, copy a workspace file (256 KiB, random) and a folder (two files, one
 * in a subfolder) to /root with the Explorer's command, as the Explorer calls it (the item and the
 * selection); check them in the guest with sha256sum through a SessionClient exec; copy the folder
 * and the file back into a new workspace folder with Copy from VM and compare the bytes; a guest
 * destination that is no directory shows one sentence and copies nothing.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { CopyOutcome } from '../../../extension/commands/copyFiles';
import { Command } from '../../../extension/ids';
import type { SandboxVmsApi } from '../../../extension/extension';
import { SHARED_VM, extensionApi, runningVm } from './util';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

suite('vscode: copy to and from the VM', function () {
  this.timeout(400_000);
  let api: SandboxVmsApi;
  let ws: string;
  const files: Record<string, Buffer> = {
    'hello.bin': randomBytes(256 * 1024),
    'tree/a.txt': Buffer.from('alpha\n'),
    'tree/sub/b.txt': Buffer.from('beta '.repeat(1000)),
  };

  suiteSetup(async () => {
    api = await extensionApi();
    await runningVm(api, SHARED_VM);
    ws = vscode.workspace.workspaceFolders![0].uri.fsPath;
    for (const [rel, data] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(ws, rel)), { recursive: true });
      fs.writeFileSync(path.join(ws, rel), data);
    }
  });

  /** Runs argv in the guest through the extension's service connection; resolves with stdout. */
  async function exec(argv: string[]): Promise<string> {
    const sessions = await (await api.connection.client()).attach(SHARED_VM);
    try {
      let out = '';
      const exit = await new Promise<{ code: number | null; error?: string }>((resolve, reject) => {
        sessions.open({ kind: 'exec', argv }, { onData: (_s, d) => void (out += d.toString()), onExit: resolve }).catch(reject);
      });
      assert.equal(exit.code, 0, `${argv.join(' ')}: ${exit.error ?? out}`);
      return out;
    } finally {
      sessions.dispose();
    }
  }

  test('Copy to VM: a file and a folder from the Explorer land in /root, byte for byte', async () => {
    const file = vscode.Uri.file(path.join(ws, 'hello.bin'));
    const folder = vscode.Uri.file(path.join(ws, 'tree'));
    const outcome = await vscode.commands.executeCommand<CopyOutcome | undefined>(Command.copyTo, file, [file, folder], { vm: SHARED_VM, destination: '/root' });
    assert.ok(outcome, 'the copy finished');
    assert.deepEqual(outcome.destinations, ['/root/hello.bin', '/root/tree']);
    assert.equal(outcome.files, 3);
    assert.equal(outcome.bytes, Object.values(files).reduce((n, b) => n + b.length, 0));
    const sums = await exec(['sha256sum', ...Object.keys(files).map((r) => `/root/${r}`)]);
    for (const [rel, data] of Object.entries(files)) assert.match(sums, new RegExp(`^${sha(data)}  /root/${rel}$`, 'm'), rel);
  });

  test('Copy from VM: the folder and the file come back into a workspace folder', async () => {
    const back = path.join(ws, 'back');
    fs.mkdirSync(back);
    await exec(['sh', '-c', 'echo guest-made > /root/tree/sub/c.txt']);
    const folder = await vscode.commands.executeCommand<CopyOutcome | undefined>(Command.copyFrom, SHARED_VM, { guestPath: '/root/tree', hostFolder: back });
    assert.deepEqual(folder?.destinations, [path.join(back, 'tree')]);
    assert.equal(folder?.files, 3);
    const file = await vscode.commands.executeCommand<CopyOutcome | undefined>(Command.copyFrom, { kind: 'vm', name: SHARED_VM }, { guestPath: '/root/hello.bin', hostFolder: back });
    assert.equal(file?.files, 1);
    for (const [rel, data] of Object.entries(files)) assert.ok(fs.readFileSync(path.join(back, rel)).equals(data), `${rel} came back unchanged`);
    assert.equal(fs.readFileSync(path.join(back, 'tree/sub/c.txt'), 'utf8'), 'guest-made\n');
  });

  test('Copy to VM into a path that is no directory: one sentence, nothing copied', async () => {
    const shown = new Promise<string>((resolve) => api.notifications.onDidShowError(resolve));
    const file = vscode.Uri.file(path.join(ws, 'hello.bin'));
    const outcome = await vscode.commands.executeCommand(Command.copyTo, file, [file], { vm: SHARED_VM, destination: '/root/nowhere' });
    assert.equal(outcome, undefined);
    assert.equal(await shown, `There is no directory /root/nowhere in ${SHARED_VM}; give an existing one.`);
    assert.equal(await exec(['sh', '-c', 'ls -d /root/nowhere 2>/dev/null || echo none']), 'none\n');
  });
});
