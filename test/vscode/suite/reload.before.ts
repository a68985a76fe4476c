/**
 * vscode, first half of "terminals survive a window reload" (run last, only with
 * SANDBOXVM_VSCODE_HANDOFF; see index.ts). Procedure: open a terminal on a running VM, start a
 * loop that prints a numbered line every 0.2 s, let it print for a while (the workspace state that
 * records the terminal is written meanwhile), then reload the window with
 * `workbench.action.reloadWindow`. The handoff file holds the last number this window received,
 * rewritten as each line arrives. reload.after.ts checks the other half.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { Command } from '../../../extension/ids';
import { LOOP, SHARED_VM, extensionApi, runningVm, ticks, until } from './util';


suite('vscode: a terminal when the window reloads', function () {
  this.timeout(600_000);

  test('a terminal printing a numbered line every 0.2 s; the window reloads', async () => {
    const handoff = process.env.SANDBOXVM_VSCODE_HANDOFF!;
    const api = await extensionApi();
    await runningVm(api, SHARED_VM);
    await vscode.commands.executeCommand(Command.openTerminal, SHARED_VM);
    const g = api.terminals.of(SHARED_VM).at(-1)!;
    const session = await until('the guest session', () => g.pty.sessionId, (l) => g.pty.onDidWrite(l), 60_000);
    g.terminal!.sendText(LOOP);
    const record = () => {
      const seen = ticks(g.pty.transcript);
      if (seen.length > 0) fs.writeFileSync(handoff, JSON.stringify({ vm: SHARED_VM, session, last: seen.at(-1), at: Date.now() }));
    };
    g.pty.onDidWrite(record);
    await until('tick-10', () => (ticks(g.pty.transcript).includes(10) ? true : undefined), (l) => g.pty.onDidWrite(l), 60_000);
    assert.ok(api.terminals.saved().some((s) => s.vm === SHARED_VM && s.session === session), 'the terminal is recorded in the workspace state');
    // The workbench writes the workspace state to its database within 5 s.
    await new Promise((r) => setTimeout(r, 6000));
    record();
    void vscode.commands.executeCommand('workbench.action.reloadWindow');
    await new Promise(() => undefined); // this extension host ends with the reload
  });
});
