/**
 * vscode: a VM's host disk usage in the tree, without booting.
 * Procedure: create a VM through the command; its tooltip says the disk use on the host and that
 * the base image is shared; the details status carries the same sentence; delete the VM.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command, EXTENSION_ID, View } from '../../../extension/ids';
import type { VmNode } from '../../../extension/tree/vmTreeProvider';
import { detailsStatus } from '../../../extension/details/detailsMessages';

const VM = 'vscode-disk';

suite('vscode: disk usage', function () {
  this.timeout(120_000);
  let api: SandboxVmsApi;

  const tooltip = () => {
    const node = api.tree.getChildren().find((n) => n.kind === 'vm' && n.name === VM) as VmNode | undefined;
    const t = node && api.tree.resolveTreeItem(api.tree.getTreeItem(node), node).tooltip;
    return t instanceof vscode.MarkdownString ? t.value : t;
  };

  suiteSetup(async () => {
    api = await vscode.extensions.getExtension<SandboxVmsApi>(EXTENSION_ID)!.activate();
    await vscode.commands.executeCommand(`${View.machines}.focus`);
    await api.connection.client();
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
