/**
 * vscode: checkpoints and undo points in the real extension. Procedure, on a VM of its own
 * (applying turns the VM off and restores it): Create Checkpoint through the command; the VM's
 * "Checkpoints" item shows it with "Now" below it; a file written in the guest is gone after Apply
 * (checked in the guest), the state left kept as "before applying ..." beside Now; Rename and
 * Delete change the tree; a `sandboxvm` task runs in the VM (its output and exit code are the
 * task's) and leaves an undo point; Undo Last Task Run removes what the task did.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command } from '../../../extension/ids';
import type { CheckpointNode } from '../../../extension/checkpoints/checkpointBranch';
import type { Node } from '../../../extension/tree/vmTreeProvider';
import type { TaskRun } from '../../../extension/tasks/vmTaskProvider';
import { extensionApi, runningVm, until } from './util';

const VM = 'vscode-ckpt';

/** What the tree shows under the VM's Checkpoints item, as indented "label (description)" lines. */
function treeText(api: SandboxVmsApi): string[] {
  const vmNode = api.tree.getChildren().find((n) => n.kind === 'vm' && n.name === VM);
  const group = vmNode && api.tree.getChildren(vmNode).find((n): n is CheckpointNode => n.kind === 'checkpoint' && n.key === 'group');
  if (!group) return [];
  const lines: string[] = [];
  const walk = (nodes: Node[], depth: number) => {
    for (const n of nodes) {
      const item = api.tree.getTreeItem(n);
      lines.push(`${'  '.repeat(depth)}${String(item.label)} [${(item.iconPath as vscode.ThemeIcon).id}]`);
      walk(api.tree.getChildren(n), depth + 1);
    }
  };
  walk(api.tree.getChildren(group), 0);
  return lines;
}

async function guest(api: SandboxVmsApi, script: string): Promise<{ code: number | null; out: string }> {
  const sessions = await (await api.connection.client()).attach(VM);
  try {
    let out = '';
    const s = await sessions.open({ kind: 'exec', argv: ['sh', '-c', script] }, { onData: (_s, d) => void (out += d.toString()), onExit: () => undefined });
    return { code: (await s.exited).code, out };
  } finally {
    sessions.dispose();
  }
}

async function agentUp(api: SandboxVmsApi): Promise<void> {
  assert.ok(await api.model.waitFor(VM, (i) => i?.state === 'running' && !!i.runtime?.agent.connected, 180_000), `${VM} runs again`);
}

/** Waits until the tree's lines satisfy `ok`. */
function treeUntil(api: SandboxVmsApi, what: string, ok: (lines: string[]) => boolean): Promise<string[]> {
  return until(what, () => {
    const lines = treeText(api);
    return ok(lines) ? lines : undefined;
  }, api.checkpoints.onDidChange, 60_000);
}

suite('vscode: checkpoints', function () {
  this.timeout(600_000);
  let api: SandboxVmsApi;

  suiteSetup(async () => {
    api = await extensionApi();
    await runningVm(api, VM);
  });

  suiteTeardown(async () => {
    await vscode.commands.executeCommand(Command.delete, VM, { confirm: false });
  });

  test('Create Checkpoint: the tree shows it with Now below it', async () => {
    assert.deepEqual(treeText(api), [], 'no Checkpoints item before the first checkpoint');
    const made = await vscode.commands.executeCommand<{ name: string; state: string } | undefined>(Command.createCheckpoint, VM, { name: 'clean' });
    assert.equal(made?.name, 'clean');
    assert.equal(made?.state, 'running');
    const lines = await treeUntil(api, 'the checkpoint in the tree', (l) => l.length > 0);
    assert.deepEqual(lines, ['clean [history]', '  Now [circle-filled]']);
    const vmNode = api.tree.getChildren().find((n) => n.kind === 'vm' && n.name === VM)!;
    const group = api.tree.getChildren(vmNode).find((n): n is CheckpointNode => n.kind === 'checkpoint')!;
    const groupItem = api.tree.getTreeItem(group);
    assert.equal(groupItem.label, 'Checkpoints');
    assert.match(String(groupItem.description), /^1 checkpoint · /);
    const clean = api.tree.getChildren(group)[0];
    const cleanItem = api.tree.getTreeItem(clean);
    assert.equal(cleanItem.contextValue, 'vmCheckpoint');
    assert.match(String(cleanItem.description), /^\d\d:\d\d · running · /);
    assert.equal(api.tree.getParent(api.tree.getChildren(clean)[0]), clean, 'Now\'s parent is the checkpoint');
  });

  test('a file written after the checkpoint is gone after Apply; the state left is kept beside Now', async () => {
    assert.equal((await guest(api, 'echo after > /root/ck-file && sync && cat /root/ck-file')).out, 'after\n');
    await vscode.commands.executeCommand(Command.applyCheckpoint, { vm: VM, checkpoint: 'clean' }, { discardCurrent: false });
    await agentUp(api);
    const r = await guest(api, 'test -e /root/ck-file; echo $?');
    assert.equal(r.out, '1\n', 'the file written after the checkpoint is gone');
    const lines = await treeUntil(api, 'the branch', (l) => l.length === 3);
    assert.deepEqual(lines, ['clean [history]', '  before applying clean [history]', '  Now [circle-filled]']);
  });

  test('Rename and Delete change the tree', async () => {
    await vscode.commands.executeCommand(Command.renameCheckpoint, { vm: VM, checkpoint: 'before applying clean' }, 'left behind');
    await treeUntil(api, 'the renamed checkpoint', (l) => l.includes('  left behind [history]'));
    await vscode.commands.executeCommand(Command.deleteCheckpoint, { vm: VM, checkpoint: 'left behind' }, { confirm: false });
    const lines = await treeUntil(api, 'the deleted checkpoint gone', (l) => !l.some((x) => x.includes('left behind')));
    assert.deepEqual(lines, ['clean [history]', '  Now [circle-filled]']);
    const errors: string[] = [];
    const sub = api.notifications.onDidShowError((e) => errors.push(e));
    await vscode.commands.executeCommand(Command.renameCheckpoint, { vm: VM, checkpoint: 'clean' }, ' padded');
    sub.dispose();
    assert.equal(errors.length, 1, 'a bad name is refused in one sentence');
    assert.match(errors[0], /\.$/);
  });

  test('a checkpoint made by another client (the CLI) shows without a refresh: the service\'s vm.checkpoints event', async () => {
    await (await api.connection.client()).createCheckpoint(VM, 'from the cli');
    await treeUntil(api, 'the checkpoint made elsewhere', (l) => l.includes('  from the cli [history]'));
    await (await api.connection.client()).deleteCheckpoint(VM, 'from the cli');
    const lines = await treeUntil(api, 'the checkpoint deleted elsewhere gone', (l) => !l.some((x) => x.includes('from the cli')));
    assert.deepEqual(lines, ['clean [history]', '  Now [circle-filled]']);
  });

  test('a sandboxvm task runs in the VM with its output and exit code, leaves an undo point, and Undo Last Task Run removes what it did', async () => {
    const def = { type: 'sandboxvm' as const, vm: VM, command: 'echo task-was-here > /root/task-file; sync; echo "out-$((6*7))"; exit 3' };
    const finished = new Promise<TaskRun>((resolve) => {
      const sub = api.tasks.onDidFinish((r) => {
        sub.dispose();
        resolve(r);
      });
    });
    const task = api.tasks.task(def, 'checkpoint test task');
    const ended = new Promise<number | undefined>((resolve) => {
      const sub = vscode.tasks.onDidEndTaskProcess((e) => {
        if (e.execution.task.name !== task.name) return;
        sub.dispose();
        resolve(e.exitCode);
      });
    });
    // The pruning limits go with the undo point when set (a service without pruning ignores them).
    const settings = vscode.workspace.getConfiguration('sandboxvm');
    await settings.update('undoPoints.maxCount', 3, vscode.ConfigurationTarget.Global);
    await vscode.tasks.executeTask(task);
    const run = await finished.finally(() => settings.update('undoPoints.maxCount', undefined, vscode.ConfigurationTarget.Global));
    assert.equal(run.exitCode, 3);
    assert.match(run.output, /out-42/);
    assert.ok(run.undoPoint, 'an undo point was taken');
    assert.equal(await ended, 3, 'the task\'s exit code is the command\'s');
    assert.equal((await guest(api, 'cat /root/task-file')).out, 'task-was-here\n');
    const lines = await treeUntil(api, 'the undo point', (l) => l.some((x) => x.includes('[debug-step-back]')));
    assert.deepEqual(lines, ['clean [history]', `  ${run.undoPoint!.name} [debug-step-back]`, '  Now [circle-filled]']);

    await vscode.commands.executeCommand(Command.undoLastTaskRun, { confirm: false });
    await agentUp(api);
    assert.equal((await guest(api, 'test -e /root/task-file; echo $?')).out, '1\n', 'Undo removed the file the task wrote');
  });

  test('a task on a VM that does not exist fails with one sentence and exit code 1', async () => {
    const finished = new Promise<number | undefined>((resolve) => {
      const sub = vscode.tasks.onDidEndTaskProcess((e) => {
        if (e.execution.task.name !== 'no such vm') return;
        sub.dispose();
        resolve(e.exitCode);
      });
    });
    await vscode.tasks.executeTask(api.tasks.task({ type: 'sandboxvm', vm: 'no-such-vm', command: 'true' }, 'no such vm'));
    assert.equal(await finished, 1);
  });

  test('terminals live through Apply: a shell the checkpoint has comes back as it was, one opened after it gets a new shell', async () => {
    const shows = (g: { pty: { transcript: string; onDidWrite: vscode.Event<string> } }, text: string | RegExp, what: string) =>
      until(what, () => ((typeof text === 'string' ? g.pty.transcript.includes(text) : text.test(g.pty.transcript)) ? true : undefined), (l) => g.pty.onDidWrite(l), 120_000).catch((err) => {
        throw new Error(`${err.message}; the terminal shows ${JSON.stringify(g.pty.transcript.slice(-800))}`);
      });
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const old = api.terminals.of(VM).at(-1)!;
    old.terminal?.show();
    await until('the first shell', () => old.pty.sessionId, (l) => old.pty.onDidStartSession(l), 60_000);
    // A variable only this shell's memory holds: it is there after Apply only if the shell is the checkpoint's.
    old.terminal!.sendText('MARK=kept-$((6*7)); echo "set-$MARK"');
    await shows(old, 'set-kept-42', 'the variable set');
    await (await api.connection.client()).createCheckpoint(VM, 'with shells');
    old.terminal!.sendText('MARK=changed; echo "now-$MARK"');
    await shows(old, 'now-changed', 'the variable changed');
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const late = api.terminals.of(VM).at(-1)!;
    await until('the second shell', () => late.pty.sessionId, (l) => late.pty.onDidStartSession(l), 60_000);
    let lateStarts = 0;
    const startSub = late.pty.onDidStartSession(() => lateStarts++);

    await vscode.commands.executeCommand(Command.applyCheckpoint, { vm: VM, checkpoint: 'with shells' }, { discardCurrent: true });
    await agentUp(api);
    await shows(old, 'is back at checkpoint "with shells"; this is the shell as it was then', 'the first shell back');
    assert.equal(old.pty.hasEnded, false, 'the first terminal did not end');
    old.terminal!.sendText('echo "after-$MARK"');
    await shows(old, 'after-kept-42', 'the first shell as the checkpoint has it');
    await shows(late, 'here is a new shell', 'the second terminal told its shell is new');
    assert.equal(late.pty.hasEnded, false, 'the second terminal did not end');
    await until('the new shell', () => (lateStarts > 0 ? true : undefined), (l) => late.pty.onDidStartSession(l), 60_000);
    startSub.dispose();
    late.terminal!.sendText('echo "fresh-$((7*8))"');
    await shows(late, /fresh-56/, 'the new shell answers');
    await (await api.connection.client()).deleteCheckpoint(VM, 'with shells').catch(() => undefined);
  });

  test('what is typed into a new terminal before its shell has opened reaches the shell, whole', async () => {
    await agentUp(api);
    await vscode.commands.executeCommand(Command.openTerminal, VM);
    const g = api.terminals.of(VM).at(-1)!;
    assert.equal(g.pty.sessionId, undefined, 'the text is sent before the guest shell exists');
    g.terminal!.sendText('echo "early-$((6*7))"');
    await until('the early command\'s output', () => (g.pty.transcript.includes('early-42') ? true : undefined), (l) => g.pty.onDidWrite(l), 60_000).catch((err) => {
      throw new Error(`${err.message}; the terminal shows ${JSON.stringify(g.pty.transcript.slice(-400))}`);
    });
  });
});
