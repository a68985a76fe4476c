/**
 * vscode: a VM's host disk usage in the tree, without booting.
 * Procedure: create a VM through the command; its tooltip says the disk use on the host and that
 * the base image is shared; the details status carries the same sentence; delete the VM.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import { extensionApi, vmTooltip } from './util';
import { detailsStatus } from '../../../extension/details/detailsMessages';

const VM = 'vscode-disk';

suite('vscode: disk usage', function () {
  this.timeout(120_000);
  let api: SandboxVmsApi;

  const tooltip = () => vmTooltip(api, VM);

  suiteSetup(async () => {
    api = await extensionApi();
  });

  suiteTeardown(async () => {
    if (api.model.get(VM)) await vscode.commands.executeCommand(Command.delete, VM, { confirm: false });
  });

  test('the tooltip and details show the disk use on the host, the base image apart', async () => {
    await vscode.commands.executeCommand(Command.create, undefined, { name: VM, cpus: 1, memory: '512M', disk: '10G', network: 'isolated' });
    const created = await api.model.waitFor(VM, (i) => !!i, 10_000);
    assert.ok(created?.disk, 'the snapshot carries the disk usage');
    assert.ok(created.disk.totalBytes > 0 && created.disk.sharedBaseBytes > created.disk.totalBytes);
    assert.match((tooltip() ?? '').replace(/\\/g, ''), /Disk use: [\d.]+ [KMG]iB on the host; the base image \([\d.]+ MiB\) is shared/);
    assert.match(detailsStatus(created).diskUse ?? '', /on the host; the base image \([\d.]+ MiB\) is shared/);
  });
});
