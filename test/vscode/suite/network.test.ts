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
import { Command } from '../../../extension/ids';
import { extensionApi, vmTooltip } from './util';

const VM = 'vscode-net';

suite('vscode: network policy', function () {
  this.timeout(120_000);
  let api: SandboxVmsApi;

  const tooltip = () => vmTooltip(api, VM);

  suiteSetup(async () => {
    api = await extensionApi();
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
