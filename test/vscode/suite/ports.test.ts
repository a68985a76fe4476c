/**
 * vscode: forwarded ports in the tree. Procedure: on the shared running VM, start a guest server
 * (Node on port 7301, answering "hi" to every connection); the runtime forwards it automatically and
 * the VM's children show `7301/tcp -> 127.0.0.1:<host port>` as a forward; Copy Address on that
 * child returns and copies `127.0.0.1:<host port>`, and a connection to that address gets "hi".
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import type { PortNode } from '../../../extension/tree/vmTreeProvider';
import { SHARED_VM, extensionApi, runningVm, until } from './util';

const GUEST_PORT = 7301;
const SERVER = `require('net').createServer((s) => s.end('hi')).listen(${GUEST_PORT})`;

suite('vscode: forwarded ports', function () {
  this.timeout(360_000);
  let api: SandboxVmsApi;

  suiteSetup(async () => {
    api = await extensionApi();
    await runningVm(api, SHARED_VM);
  });

  test('a guest server shows as a forwarded port child; Copy Address copies 127.0.0.1:<port>, which answers', async () => {
    const sessions = await (await api.connection.client()).attach(SHARED_VM);
    try {
      const s = await sessions.open({ kind: 'exec', argv: ['sh', '-c', `setsid /opt/sandboxvm/bin/node -e "${SERVER}" >/dev/null 2>&1 &`] }, { onData: () => undefined, onExit: () => undefined });
      assert.equal((await s.exited).code, 0);
    } finally {
      sessions.dispose();
    }
    const child = await until(
      'the forwarded port in the tree',
      () => api.tree.getChildren({ kind: 'vm', name: SHARED_VM }).find((n): n is PortNode => n.kind === 'port' && n.port === GUEST_PORT && n.hostPort !== undefined),
      api.model.onDidChange,
      90_000,
    );
    const item = api.tree.getTreeItem(child);
    assert.equal(item.label, `${GUEST_PORT}/tcp -> 127.0.0.1:${child.hostPort}`);
    assert.equal(item.contextValue, 'vmForward');
    assert.equal(item.description, 'automatic');
    const copied = await vscode.commands.executeCommand<string>(Command.copyPortAddress, child);
    assert.equal(copied, `127.0.0.1:${child.hostPort}`);
    assert.equal(await vscode.env.clipboard.readText(), copied);
    const answer = await new Promise<string>((resolve, reject) => {
      let text = '';
      const socket = net.connect({ host: '127.0.0.1', port: child.hostPort! });
      socket.on('data', (d) => (text += d));
      socket.on('error', reject);
      socket.on('close', () => resolve(text));
    });
    assert.equal(answer, 'hi');
  });
});
