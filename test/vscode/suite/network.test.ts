/**
 * vscode: network policy in the extension, without booting.
 * Procedure: create a VM through the command with `network: 'isolated'`; the tree's tooltip says
 * so; Set Network Policy (given the policy, as a caller passes it) makes it `host` in the model and
 * the tooltip; a bad policy shows one sentence and changes nothing; delete the VM.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command, EXTENSION_ID, View } from '../../../extension/ids';
import type { VmNode } from '../../../extension/tree/vmTreeProvider';

const VM = 'vscode-net';

suite('vscode: network policy', function () {
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

  test('created isolated, set to host while stopped: model and tooltip follow; a bad policy changes nothing', async () => {
    await vscode.commands.executeCommand(Command.create, undefined, { name: VM, cpus: 1, memory: '512M', disk: '10G', network: 'isolated' });
    const created = await api.model.waitFor(VM, (i) => !!i, 10_000);
    assert.equal(created?.config.network, 'isolated');
    assert.match(tooltip() ?? '', /Network: isolated \(no network at all\)/);
    const set = await vscode.commands.executeCommand(Command.setNetworkPolicy, VM, 'host');
    assert.equal(set, 'host');
    const after = await api.model.waitFor(VM, (i) => i?.config.network === 'host', 10_000);
    assert.equal(after?.config.network, 'host');
    assert.match(tooltip() ?? '', /Network: host/);
    const bad = await vscode.commands.executeCommand(Command.setNetworkPolicy, VM, 'lan');
    assert.equal(bad, undefined, 'the error is shown, nothing is returned');
    assert.equal(api.model.get(VM)?.config.network, 'host');
  });
});
