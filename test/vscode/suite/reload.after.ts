/**
 * vscode, second half of "terminals survive a window reload" (see reload.before.ts): in the
 * reloaded window the extension makes the terminal again on the same guest session; it shows the
 * lines printed while the window reloaded, its numbers following the last one the old window got
 * without a gap, and it takes input. Closing it forgets it (and closes the shell); then the VM is
 * deleted.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import { Command } from '../../../extension/ids';
import { extensionApi, ticks, until } from './util';

suite('vscode: terminals survive a window reload', function () {
  this.timeout(300_000);

  test('after the reload the terminal is back on the same shell, shows what it printed meanwhile without a gap, and takes input', async () => {
    const h = JSON.parse(fs.readFileSync(process.env.SANDBOXVM_VSCODE_HANDOFF!, 'utf8')) as { vm: string; session: number; last: number; at: number };
    const api = await extensionApi();
    const g = await until('the revived terminal', () => api.terminals.of(h.vm).find((t) => t.pty.sessionId === h.session), (l) => api.terminals.onDidChange(l), 120_000);
    const revivedAfterMs = Date.now() - h.at;
    assert.ok(g.terminal, 'a terminal was made for the kept session');
    await until(`tick-${h.last + 10}`, () => (ticks(g.pty.transcript).includes(h.last + 10) ? true : undefined), (l) => g.pty.onDidWrite(l), 60_000);
    const seen = ticks(g.pty.transcript);
    assert.ok(seen[0] <= h.last + 1, `the first line shown (tick-${seen[0]}) follows the last one the old window got (tick-${h.last}) without a gap`);
    for (let i = 1; i < seen.length; i++) assert.equal(seen[i], seen[i - 1] + 1, `tick-${seen[i - 1]} is followed by tick-${seen[i - 1] + 1}, not tick-${seen[i]}`);
    assert.match(g.pty.transcript, /Reattached to the shell/);
    console.log(`# revived ${(revivedAfterMs / 1000).toFixed(1)} s after the last line the old window got (tick-${h.last}); the new terminal starts at tick-${seen[0]}`);

    // Under load the renderer can take a while to open the revived terminal; VS Code holds input until it does.
    await until('VS Code to open the revived terminal', () => (g.pty.isOpen ? true : undefined), (l) => g.pty.onDidWrite(l), 60_000);
    g.terminal!.sendText('\x03', false);
    g.terminal!.sendText('echo "input-$((6*7))"');
    await until('the shell to answer', () => (g.pty.transcript.includes('\rinput-42\r\n') ? true : undefined), (l) => g.pty.onDidWrite(l), 30_000).catch((err) => {
      throw new Error(`${err.message}; session ${g.pty.sessionId}, ended ${g.pty.hasEnded}; the terminal shows ${JSON.stringify(g.pty.transcript.slice(-600))}`);
    });

    g.terminal!.dispose();
    await until('the record to go', () => (api.terminals.saved().some((s) => s.session === h.session) ? undefined : true), (l) => api.terminals.onDidChange(l), 10_000);
    await vscode.commands.executeCommand(Command.delete, h.vm, { confirm: false });
    await api.model.waitFor(h.vm, (i) => i === undefined, 60_000);
  });
});
