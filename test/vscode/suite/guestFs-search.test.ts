/**
 * vscode: Go to File in VM and Find in VM Folder (guestSearch.ts) against a real guest.
 * Procedure: make a folder in the guest with text files, a binary file, a .git folder and a
 * node_modules folder, and a file whose name has a newline; Go to File lists the files but not those
 * under .git or node_modules; Find in VM Folder finds a literal text with its line numbers, skips
 * the binary file and the skipped folders, and an absent text gives no results; a folder outside
 * what was asked never appears.
 * Then VS Code's own search on the folder (guestSearchProviders.ts): with the proposed API granted
 * (run.ts starts code-server with --enable-proposed-api), both providers are registered, and `workspace.findFiles` (Go to File's file search) and
 * `workspace.findTextInFiles` (the Search view's text search) on a RelativePattern whose base is the
 * guest folder return the guest's files and lines, through VS Code's search service; excludes and
 * includes apply; a cancelled search ends at once. (Without the grant, the installed extension
 * still activates and logs why: test/vscode/vsix-smoke.ts.)
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

/** workspace.findTextInFiles (proposed `findTextInFiles`, declared in package.json for this test). */
type FindText = (query: { pattern: string; isRegExp?: boolean; isCaseSensitive?: boolean }, options: { include?: vscode.GlobPattern; exclude?: string }, callback: (r: { uri: vscode.Uri; ranges: vscode.Range | vscode.Range[]; preview: { text: string } }) => void, token?: vscode.CancellationToken) => Thenable<{ limitHit?: boolean }>;

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

  test('the proposed search API granted: both providers registered', () => {
    assert.equal(api.guestFs.search.file, true, 'file search provider registered');
    assert.equal(api.guestFs.search.text, true, 'text search provider registered');
  });

  test('Go to File: workspace.findFiles on the guest folder goes to the guest (excludes and includes apply)', async () => {
    const base = vscode.Uri.parse(folder);
    const t0 = Date.now();
    const all = await vscode.workspace.findFiles(new vscode.RelativePattern(base, '**/*'), undefined, 1000);
    console.log(`findFiles: ${all.length} files in ${Date.now() - t0} ms`);
    assert.ok(all.every((u) => u.scheme === 'sandboxvm' && u.authority === VM));
    assert.deepEqual(all.map((u) => u.path.slice(DIR.length + 1)).sort(), ['b.txt', 'c.bin', 'node_modules/dep/index.js', 'odd\nname.txt', 'src/a.txt']);
    const noModules = await vscode.workspace.findFiles(new vscode.RelativePattern(base, '**/*'), '**/node_modules/**', 1000);
    assert.deepEqual(noModules.map((u) => u.path.slice(DIR.length + 1)).sort(), ['b.txt', 'c.bin', 'odd\nname.txt', 'src/a.txt']);
    const byName = await vscode.workspace.findFiles(new vscode.RelativePattern(base, '**/a.txt'));
    assert.deepEqual(byName.map((u) => u.path), [`${DIR}/src/a.txt`]);
    const sibling = await vscode.workspace.findFiles(new vscode.RelativePattern(base, '**/x.txt'));
    assert.deepEqual(sibling, [], 'nothing from the folder beside it');
  });

  test('Search: workspace.findTextInFiles on the guest folder finds lines with their columns; regex, case and cancellation', async () => {
    const findText = (vscode.workspace as unknown as { findTextInFiles: FindText }).findTextInFiles;
    const include = new vscode.RelativePattern(vscode.Uri.parse(folder), '**');
    const search = async (query: Parameters<FindText>[0], token?: vscode.CancellationToken, exclude = '**/node_modules/**') => {
      const found: string[] = [];
      await findText(query, { include, exclude }, (r) => {
        const ranges = Array.isArray(r.ranges) ? r.ranges : [r.ranges];
        for (const range of ranges) found.push(`${r.uri.path.slice(DIR.length + 1)}:${range.start.line + 1}:${range.start.character}-${range.end.character}:${r.preview.text.trim()}`);
      }, token);
      return found.sort();
    };
    const t0 = Date.now();
    const literal = await search({ pattern: 'needle', isCaseSensitive: true });
    console.log(`findTextInFiles: ${literal.length} matches in ${Date.now() - t0} ms`);
    // The exclude (the Search view sends search.exclude's node_modules the same way) applies; .git is
    // never searched; c.bin is binary. (VS Code's own include glob drops the name with a newline.)
    assert.deepEqual(literal, ['src/a.txt:2:0-6:needle here', 'src/a.txt:4:0-6:needle again']);
    assert.deepEqual(await search({ pattern: 'needle', isCaseSensitive: true }, undefined, '**/*.md'), ['node_modules/dep/index.js:1:0-6:needle', 'src/a.txt:2:0-6:needle here', 'src/a.txt:4:0-6:needle again']);
    assert.deepEqual(await search({ pattern: 'NEEDLE A', isCaseSensitive: false }), ['src/a.txt:4:0-8:needle again']);
    assert.deepEqual(await search({ pattern: 'NEEDLE', isCaseSensitive: true }), []);
    assert.deepEqual(await search({ pattern: 'ne+dle h', isRegExp: true }), ['src/a.txt:2:0-8:needle here']);
    assert.deepEqual(await search({ pattern: 'needle.*', isCaseSensitive: true }), [], 'a literal query is literal');
    const cancelled = new vscode.CancellationTokenSource();
    cancelled.cancel();
    assert.deepEqual(await search({ pattern: 'needle' }, cancelled.token), []);
  });
});
