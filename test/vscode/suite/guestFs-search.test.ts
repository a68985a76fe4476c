/**
 * vscode: Go to File in VM and Find in VM Folder (guestSearch.ts) against a real guest.
 * Procedure: make a folder in the guest with text files, a binary file, a .git folder and a
 * node_modules folder, and a file whose name has a newline; Go to File lists the files but not those
 * under .git or node_modules; Find in VM Folder finds a literal text with its line numbers, skips
 * the binary file and the skipped folders, and an absent text gives no results; a folder outside
 * what was asked never appears.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import type { GuestMatch } from '../../../extension/guestFs/guestSearch';
import { Command } from '../../../extension/ids';
import { extensionApi, runningVm } from './util';

const VM = 'vscode-guestfs';
const DIR = '/root/gfs-search';
const folder = `sandboxvm://${VM}${DIR}`;

suite('vscode: searching guest files (Go to File in VM, Find in VM Folder)', function () {
  this.timeout(600_000);
  let api: SandboxVmsApi;

  suiteSetup(async () => {
    api = await extensionApi();
    await runningVm(api, VM);
    const sessions = await (await api.connection.client()).attach(VM);
    try {
      const script = [
        `rm -rf ${DIR} ${DIR}-sibling && mkdir -p ${DIR}/src ${DIR}/.git ${DIR}/node_modules/dep ${DIR}-sibling && cd ${DIR}`,
        "printf 'one\\nneedle here\\nthree\\nneedle again\\n' > src/a.txt",
        "printf 'no match\\n' > b.txt",
        "printf 'needle\\000binary' > c.bin",
        "printf 'needle\\n' > .git/config",
        "printf 'needle\\n' > node_modules/dep/index.js",
        "printf 'needle\\n' > \"$(printf 'odd\\nname.txt')\"",
        `printf 'needle\\n' > ${DIR}-sibling/x.txt`,
      ].join(' && ');
      const exit = await new Promise<{ code: number | null; error?: string }>((resolve, reject) => {
        sessions.open({ kind: 'exec', argv: ['sh', '-c', script] }, { onData: () => undefined, onExit: resolve }).catch(reject);
      });
      assert.equal(exit.code, 0, exit.error);
    } finally {
      sessions.dispose();
    }
  });

  const rel = (m: GuestMatch) => m.uri.path.slice(DIR.length + 1);

  test('Go to File in VM lists the files, not those under .git or node_modules', async () => {
    const t0 = Date.now();
    const files = await vscode.commands.executeCommand<GuestMatch[]>(Command.goToFile, undefined, { folder, resultsOnly: true });
    console.log(`goToFile: ${files?.length} files in ${Date.now() - t0} ms`);
    assert.deepEqual(files?.map(rel).sort(), ['b.txt', 'c.bin', 'odd\nname.txt', 'src/a.txt']);
    assert.ok(files!.every((m) => m.uri.scheme === 'sandboxvm' && m.uri.authority === VM));
  });

  test('Find in VM Folder finds the literal text with line numbers; binaries and skipped folders are left out', async () => {
    const found = await vscode.commands.executeCommand<GuestMatch[]>(Command.findInFolder, vscode.Uri.parse(folder), { text: 'needle', resultsOnly: true });
    const lines = found!.map((m) => `${rel(m)}:${m.line}:${m.text}`).sort();
    assert.deepEqual(lines, ['odd\nname.txt:1:needle', 'src/a.txt:2:needle here', 'src/a.txt:4:needle again']);
    const none = await vscode.commands.executeCommand<GuestMatch[]>(Command.findInFolder, undefined, { folder, text: 'not-anywhere-at-all', resultsOnly: true });
    assert.deepEqual(none, []);
    const regexLike = await vscode.commands.executeCommand<GuestMatch[]>(Command.findInFolder, undefined, { folder, text: 'needle.*', resultsOnly: true });
    assert.deepEqual(regexLike, [], 'the text is matched literally');
  });
});
