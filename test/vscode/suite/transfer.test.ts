/**
 * vscode: Export VM... and Import VM... (extension/transfer) in the real extension host.
 * Procedure: a stopped VM is created (no boot needed); Export VM writes it to a file in the
 * workspace's parent (the command with the file, as the save dialog would hand it); Import VM reads
 * it back under another name: the model shows the new VM stopped with the source's settings. A file
 * that is not an archive imports nothing (the command shows one sentence and returns undefined).
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import type { ExportedVm, ImportedVm } from '../../../runtime/transfer/transfers';
import { extensionApi } from './util';

suite('vscode: export and import', function () {
  this.timeout(300_000);
  let api: SandboxVmsApi;
  let dir: string;
  const SRC = 'vscode-xfer';
  const COPY = 'vscode-xfer-copy';

  suiteSetup(async () => {
    api = await extensionApi();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sbx-xfer-'));
    if (!api.model.get(SRC)) await vscode.commands.executeCommand(Command.create, undefined, { name: SRC, cpus: 1, memory: '256M', disk: '10G' });
    assert.ok(await api.model.waitFor(SRC, (i) => i?.state === 'stopped', 120_000));
  });
  suiteTeardown(async () => {
    const client = await api.connection.client();
    for (const n of [SRC, COPY]) await client.remove(n, true).catch(() => undefined);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('Export VM writes one archive; Import VM makes a new VM from it', async () => {
    const file = path.join(dir, 'src.tar');
    const exported = await vscode.commands.executeCommand<ExportedVm | undefined>(Command.exportVm, SRC, file);
    assert.ok(exported && exported.bytes > 1e6, 'the archive holds the base image');
    assert.equal(fs.statSync(file).size, exported.bytes);
    assert.deepEqual(fs.readdirSync(dir), ['src.tar'], 'no temporary left');
    const imported = await vscode.commands.executeCommand<ImportedVm | undefined>(Command.importVm, file, COPY);
    assert.equal(imported?.info.name, COPY);
    const info = await api.model.waitFor(COPY, (i) => i?.state === 'stopped', 30_000);
    assert.equal(info?.config.memoryMiB, 256);
  });

  test('a file that is not an archive imports nothing', async () => {
    const file = path.join(dir, 'junk.tar');
    fs.writeFileSync(file, 'not a tar at all'.repeat(100));
    const before = api.model.list().map((i) => i.name).sort();
    const r = await vscode.commands.executeCommand<ImportedVm | undefined>(Command.importVm, file, 'vscode-junk');
    assert.equal(r, undefined);
    assert.deepEqual(api.model.list().map((i) => i.name).sort(), before);
  });
});
