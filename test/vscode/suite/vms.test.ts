/**
 * vscode: the extension in real VS Code (code-server), against a real service and a real guest.
 * Procedure: activate the extension, show its view (which connects, starting the service), create
 * a VM through the command, see it in the tree, start it, open a terminal through the
 * Pseudoterminal and run `uname -r` (the guest's kernel comes back), save and start it (an open
 * terminal says its shell is kept and carries on with it), kill -9 the worker (the terminal carries
 * on), kill -9 the service (the view
 * says reconnecting and recovers with one listener), stop the VM (the open terminal says why it
 * ended), delete it; a bad name shows one clear sentence and creates nothing.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command, EXTENSION_ID, View } from '../../../extension/ids';
import type { VmNode } from '../../../extension/tree/vmTreeProvider';
import { ServiceClient } from '../../../runtime/client/serviceClient';
import { until } from './util';

const VM = 'vscode-e2e';
const BOOT_MS = 240_000;


suite('vscode: Sandbox VMs view, commands and terminals', function () {
  this.timeout(BOOT_MS + 60_000);
  let api: SandboxVmsApi;

  const vmItem = () => {
    const node = api.tree.getChildren().find((n) => n.kind === 'vm' && n.name === VM) as VmNode | undefined;
    return node && api.tree.getTreeItem(node);
  };

  suiteSetup(async () => {
    const ext = vscode.extensions.getExtension<SandboxVmsApi>(EXTENSION_ID);
    assert.ok(ext, `extension ${EXTENSION_ID} is not loaded`);
    api = await ext.activate();
    await vscode.commands.executeCommand(`${View.machines}.focus`);
    await api.connection.client();
    assert.equal(api.connection.state, 'connected');
  });

  test('create: the tree shows the new VM, stopped, with its CPUs and memory', async () => {
    const name = await vscode.commands.executeCommand(Command.create, undefined, { name: VM, cpus: 1, memory: '512M', disk: '10G' });
    assert.equal(name, VM);
    const item = await until('the VM in the tree', vmItem, api.model.onDidChange, 10_000);
    assert.equal(item.label, VM);
    assert.equal(item.contextValue, 'stoppedVm');
    assert.equal(item.description, 'Off · 1 vCPU · 512 MiB');
    assert.equal((item.iconPath as vscode.ThemeIcon).id, 'vm-outline');
    assert.match(item.id!, /^vm:/);
  });

  test('start: the VM runs, its agent answers, the item turns green', async () => {
    await vscode.commands.executeCommand(Command.start, VM);
    const info = await api.model.waitFor(VM, (i) => i?.state === 'running' && !!i.runtime?.agent.connected, 30_000);
    assert.ok(info?.runtime?.agent.kernel, 'the agent reported its kernel');
    const item = vmItem()!;
    assert.equal(item.contextValue, 'runningVm');
    assert.equal((item.iconPath as vscode.ThemeIcon).id, 'vm-running');
    assert.equal(((item.iconPath as vscode.ThemeIcon).color as vscode.ThemeColor).id, 'charts.green');
  });

  test('terminal: `uname -r` through the Pseudoterminal prints the guest kernel; the tree lists the terminal', async () => {
    const kernel = api.model.get(VM)!.runtime!.agent.kernel!;
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const g = api.terminals.of(VM)[0];
    assert.ok(g?.terminal, 'a terminal was opened');
    let out = '';
    g.pty.onDidWrite((d) => (out += d));
    await until('the guest session', () => g.pty.sessionId, (l: () => void) => g.pty.onDidWrite(l), 30_000);
    g.terminal.sendText('uname -r');
    await until(`"${kernel}" in the terminal`, () => (out.includes(`${kernel}\r\n`) ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 30_000);
    const children = api.tree.getChildren({ kind: 'vm', name: VM });
    assert.equal(children.length, 1);
    assert.equal(api.tree.getTreeItem(children[0]).contextValue, 'vmTerminal');
    g.terminal.sendText('exit 3');
    const ended = await new Promise<string>((resolve) => g.pty.onDidExit(() => setImmediate(() => resolve(out))));
    assert.match(ended, /The shell exited with code 3\./);
  });

  test('save and start: the open terminal says the shell is kept, then carries on with the same shell', async () => {
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const g = api.terminals.of(VM).at(-1)!;
    let out = '';
    g.pty.onDidWrite((d) => (out += d));
    const id = await until('the guest session', () => g.pty.sessionId, (l: () => void) => g.pty.onDidWrite(l), 30_000);
    g.terminal!.sendText('X=kept-$((6*7)); echo "set-$X"');
    await until('the shell to take the variable', () => (out.includes('set-kept-42\r\n') ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 30_000);
    await vscode.commands.executeCommand(Command.save, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'saved', 60_000);
    await until('the saved message', () => (out.includes(`${VM} was saved. This shell is kept in the guest`) ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 10_000);
    assert.equal(vmItem()!.contextValue, 'savedVm');
    await vscode.commands.executeCommand(Command.start, VM);
    await until('the shell back', () => (out.includes('the shell is back') ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 60_000);
    assert.equal(g.pty.sessionId, id, 'the same guest session');
    const back = out.length;
    g.terminal!.sendText('echo "$X"');
    await until('the variable set before the save', () => (out.slice(back).includes('\rkept-42\r\n') ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 30_000).catch((err) => {
      throw new Error(`${err.message}; the terminal shows ${JSON.stringify(out.slice(-600))}`);
    });
    g.terminal!.dispose();
  });

  test('save and start: what is typed once the VM runs again, before the shell is back, reaches the shell', async () => {
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const g = api.terminals.of(VM).at(-1)!;
    let out = '';
    g.pty.onDidWrite((d) => (out += d));
    await until('the guest session', () => g.pty.sessionId, (l: () => void) => g.pty.onDidWrite(l), 30_000);
    await vscode.commands.executeCommand(Command.save, VM);
    await until('the saved message', () => (out.includes(`${VM} was saved.`) ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 60_000);
    const started = vscode.commands.executeCommand(Command.start, VM);
    // A user types as soon as the VM shows as running, before the terminal has its shell again.
    await api.model.waitFor(VM, (i) => i?.state === 'running', 120_000);
    g.terminal!.sendText('echo "typeahead-$((6*7))"');
    await started;
    await until('the output of what was typed', () => (out.includes('typeahead-42\r\n') ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 30_000).catch((err) => {
      throw new Error(`${err.message}; the terminal shows ${JSON.stringify(out.slice(-600))}`);
    });
    g.terminal!.dispose();
  });

  test('kill -9 of the worker: the open terminal carries on with the same shell', async () => {
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const g = api.terminals.of(VM).at(-1)!;
    let out = '';
    g.pty.onDidWrite((d) => (out += d));
    const id = await until('the guest session', () => g.pty.sessionId, (l: () => void) => g.pty.onDidWrite(l), 30_000);
    g.terminal!.sendText('Y=worker-$((2*21)); echo "set-$Y"');
    await until('the shell to take the variable', () => (out.includes('set-worker-42\r\n') ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 30_000);
    const before = api.model.get(VM)!.runtime!.workerPid;
    const mark = out.length;
    process.kill(before, 'SIGKILL');
    await api.model.waitFor(VM, (i) => i?.state === 'running' && !!i.runtime && i.runtime.workerPid !== before && i.runtime.agent.connected, 60_000);
    g.terminal!.sendText('echo "$Y"');
    await until('the shell answering through the new worker', () => (out.slice(mark).includes('\rworker-42\r\n') ? true : undefined), (l: () => void) => g.pty.onDidWrite(l), 30_000).catch((err) => {
      throw new Error(`${err.message}; the terminal shows ${JSON.stringify(out.slice(-600))}`);
    });
    assert.equal(g.pty.sessionId, id);
    assert.doesNotMatch(out, /Press any key to close/);
    g.terminal!.dispose();
  });

  test('kill -9 of the service: the view says reconnecting, recovers by itself, hears each event once', async () => {
    const { pid } = await (await api.connection.client()).serviceInfo();
    const states: string[] = [];
    const sub = api.connection.onDidChangeState((s) => states.push(s));
    process.kill(pid, 'SIGKILL');
    await until('reconnecting', () => (api.connection.state === 'reconnecting' ? true : undefined), api.connection.onDidChangeState, 10_000);
    assert.equal(api.treeView.message, 'Reconnecting to the Sandbox VMs service...');
    await until('connected again', () => (api.connection.state === 'connected' ? true : undefined), api.connection.onDidChangeState, 60_000);
    sub.dispose();
    assert.deepEqual(states, ['reconnecting', 'connected']);
    assert.equal(api.treeView.message, undefined);
    const { pid: newPid } = await (await api.connection.client()).serviceInfo();
    assert.notEqual(newPid, pid, 'a new service was started');
    assert.equal(api.model.get(VM)?.state, 'running', 'the VM outlived its service and was adopted');
    // Count what the service publishes on a connection of our own and what the model hears.
    const observer = await ServiceClient.connect({ home: (await api.connection.client()).home, autoStart: false });
    let published = 0;
    await observer.subscribe((info) => info.name === VM && published++);
    let heard = 0;
    const count = api.model.onDidChange((c) => (c === undefined || c.name === VM) && heard++);
    await vscode.commands.executeCommand(Command.pause, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'paused', 10_000);
    await vscode.commands.executeCommand(Command.resume, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'running', 10_000);
    await new Promise((r) => setTimeout(r, 1000));
    count.dispose();
    observer.dispose();
    assert.ok(published >= 2, `the service published ${published} snapshots`);
    assert.equal(heard, published, 'each snapshot changed the model exactly once');
  });

  test('stop: an open terminal says the session ended, in one line; the VM reads off', async () => {
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const g = api.terminals.of(VM).at(-1)!;
    let out = '';
    g.pty.onDidWrite((d) => (out += d));
    await until('the guest session', () => g.pty.sessionId, (l: () => void) => g.pty.onDidWrite(l), 30_000);
    const exited = new Promise<void>((resolve) => g.pty.onDidExit(() => resolve()));
    await vscode.commands.executeCommand(Command.stop, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'stopped', 60_000);
    await exited;
    const last = out.trim().split('\r\n').at(-1)!;
    assert.match(last, /(The session ended|The shell|stopped; the shell ended).*Press any key to close the terminal\./);
    assert.doesNotMatch(last, /\n|at .*\.js:\d+/);
    g.terminal?.dispose();
  });

  test('a wrong state (pause a stopped VM, from the palette): one clear sentence, nothing changes', async () => {
    const shown = new Promise<string>((resolve) => api.notifications.onDidShowError(resolve));
    await vscode.commands.executeCommand(Command.pause, VM);
    const message = await shown;
    assert.match(message, new RegExp(VM));
    assert.match(message, /stopped/);
    assert.doesNotMatch(message, /\n|Error:|at .*\.js:\d+/);
    assert.equal(api.model.get(VM)?.state, 'stopped');
  });

  test('delete: the VM leaves the tree', async () => {
    await vscode.commands.executeCommand(Command.delete, VM, { confirm: false });
    await api.model.waitFor(VM, (i) => i === undefined, 30_000);
    assert.equal(vmItem(), undefined);
  });

  test('a bad name: one clear sentence, nothing created', async () => {
    const before = api.model.size;
    const shown = new Promise<string>((resolve) => api.notifications.onDidShowError(resolve));
    const result = await vscode.commands.executeCommand(Command.create, undefined, { name: 'Bad Name!' });
    assert.equal(result, undefined);
    const message = await shown;
    assert.equal(message, 'Cannot create "Bad Name!": use 1-63 lowercase letters, digits and dashes, starting and ending with a letter or digit.');
    assert.equal(api.model.size, before);
  });
});
