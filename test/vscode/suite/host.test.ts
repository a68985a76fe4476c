/**
 * vscode: what the welcome views stand on, in the real extension host against a real service with
 * the shared image cache: the host status says QEMU is there and the base image is built (so the
 * Create VM welcome is the one shown), Build Base Image finds the built image at once (the same
 * hash), and Show What This Machine Lacks lists nothing on this host.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command, EXTENSION_ID, View } from '../../../extension/ids';

suite('vscode: welcome views (host status, Build Image)', function () {
  this.timeout(120_000);
  let api: SandboxVmsApi;

  suiteSetup(async () => {
    api = await vscode.extensions.getExtension<SandboxVmsApi>(EXTENSION_ID)!.activate();
    await vscode.commands.executeCommand(`${View.machines}.focus`);
    await api.connection.client();
  });

  test('host status: QEMU found, base image ready', async () => {
    const s = await api.host.refresh();
    assert.ok(s, 'the service answered host.status');
    assert.equal(api.host.qemu, 'ok', JSON.stringify(s.qemu));
    assert.equal(api.host.image, 'ready', JSON.stringify(s.image));
    assert.match(s.image.hash ?? '', /^[0-9a-f]{16}$/);
  });

  test('Build Base Image: finds the built image at once and leaves the view ready', async () => {
    const started = Date.now();
    const hash = await vscode.commands.executeCommand<string>(Command.buildImage);
    assert.equal(hash, api.host.status?.image.hash);
    assert.ok(Date.now() - started < 30_000, `took ${Date.now() - started} ms`);
    assert.equal(api.host.building, false);
    assert.equal(api.host.image, 'ready');
  });

  test('Show What This Machine Lacks: nothing on this host', async () => {
    assert.deepEqual(await vscode.commands.executeCommand(Command.showRequirements), []);
  });
});
