/**
 * vscode: Clone VM... (extension/clones), without booting.
 * Procedure: create a stopped VM; Clone VM... (given the name and kind, as a caller passes them)
 * makes a linked clone, which the model shows with its source; a full copy has none; a name taken
 * shows one sentence and adds nothing; Clone from This Checkpoint... makes a clone on that
 * checkpoint's layer; Compact Disk rewrites the stopped source's disk and says what it gave back;
 * the clones and the source are deleted (the source last: a linked clone holds it).
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import { extensionApi } from './util';

const VM = 'vscode-clsrc';

suite('vscode: clones', function () {
  this.timeout(180_000);
  let api: SandboxVmsApi;

  suiteSetup(async () => {
    api = await extensionApi();
  });

  suiteTeardown(async () => {
    for (const name of [`${VM}-l`, `${VM}-f`, `${VM}-c`, VM]) if (api.model.get(name)) await vscode.commands.executeCommand(Command.delete, name, { confirm: false });
  });

  test('a linked clone and a full copy appear in the model; a taken name changes nothing', async () => {
    await vscode.commands.executeCommand(Command.create, undefined, { name: VM, cpus: 1, memory: '512M', disk: '10G', network: 'isolated' });
    await api.model.waitFor(VM, (i) => !!i, 10_000);
    assert.equal(await vscode.commands.executeCommand(Command.clone, VM, { newName: `${VM}-l`, full: false }), `${VM}-l`);
    const linked = await api.model.waitFor(`${VM}-l`, (i) => !!i, 10_000);
    assert.equal(linked?.config.linkedTo?.vm, VM);
    assert.equal(linked?.state, 'stopped');
    assert.equal(await vscode.commands.executeCommand(Command.clone, VM, { newName: `${VM}-f`, full: true }), `${VM}-f`);
    const full = await api.model.waitFor(`${VM}-f`, (i) => !!i, 60_000);
    assert.equal(full?.config.linkedTo, undefined);
    const count = api.model.list().length;
    assert.equal(await vscode.commands.executeCommand(Command.clone, VM, { newName: `${VM}-l`, full: false }), undefined, 'the error is shown, nothing is returned');
    assert.equal(api.model.list().length, count);
  });

  test('Clone from This Checkpoint... makes a clone on that checkpoint; Compact Disk says what it gave back', async () => {
    const client = await api.connection.client();
    const made = await client.createCheckpoint(VM, 'base for clone');
    assert.equal(await vscode.commands.executeCommand(Command.cloneFromCheckpoint, { vm: VM, checkpoint: 'base for clone' }, { newName: `${VM}-c`, full: false }), `${VM}-c`);
    const clone = await api.model.waitFor(`${VM}-c`, (i) => !!i, 10_000);
    assert.deepEqual({ vm: clone?.config.linkedTo?.vm, checkpoint: clone?.config.linkedTo?.checkpoint }, { vm: VM, checkpoint: made.id });
    const errors: string[] = [];
    const sub = api.notifications.onDidShowError((e) => errors.push(e));
    const reclaimed = await vscode.commands.executeCommand<number | undefined>(Command.compactDisk, VM);
    sub.dispose();
    assert.deepEqual(errors, []);
    assert.equal(typeof reclaimed, 'number', 'the compact ran and returned the bytes it freed');
    assert.ok(reclaimed! >= 0);
  });
});
