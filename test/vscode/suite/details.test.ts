/**
 * vscode: the serial console, the details panel and the tree's live figures, in real VS Code
 * against a real service and guest.
 * Procedure: create a VM, issue Start and open its serial console at once (while it starts): the
 * terminal shows console.log from its first byte (the kernel's first lines; `quiet` boots print
 * no "Linux version"), and `echo serial-$((6*7))` typed into
 * it answers `serial-42` from the ttyS0 shell. A listener on port 8042 is started through the
 * console. The details panel opens: its webview draws CPU samples arriving about once a second and
 * plausible memory figures; opening it again reveals the same panel. The visible tree shows live
 * CPU %, the port 8042 as a child, and the guest OS in the tooltip; hidden, it watches nothing.
 * After a kill -9 of the worker the console answers again (takeover); a console opened on the
 * running VM starts with the boot (the replay). Stopping the VM ends the
 * console with one line; the VM is deleted.
 */
/// <reference types="mocha" />
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import type { SerialConsole } from '../../../extension/console/serialConsoles';
import type { DetailsPanel } from '../../../extension/details/detailsPanel';
import type { FromWebview, ToWebview } from '../../../extension/details/detailsMessages';
import { Command, EXTENSION_ID, View } from '../../../extension/ids';
import type { Node } from '../../../extension/tree/vmTreeProvider';
import { until } from './util';

const VM = 'vscode-details';
const BOOT_MS = 240_000;


const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

suite('vscode: serial console, VM details and live tree figures', function () {
  this.timeout(BOOT_MS + 60_000);
  let api: SandboxVmsApi;
  let serial: SerialConsole;
  let out = '';
  const serialWrote = (l: () => void) => serial.pty.onDidWrite(l);
  const serialShows = (what: string, re: RegExp, from = 0, timeoutMs = 60_000) =>
    until(what, () => (re.test(out.slice(from)) ? true : undefined), serialWrote, timeoutMs).catch((err) => {
      throw new Error(`${err.message}; the console shows ${JSON.stringify(out.slice(-800))}`);
    });

  suiteSetup(async () => {
    const ext = vscode.extensions.getExtension<SandboxVmsApi>(EXTENSION_ID);
    assert.ok(ext, `extension ${EXTENSION_ID} is not loaded`);
    api = await ext.activate();
    await vscode.commands.executeCommand(`${View.machines}.focus`);
    await api.connection.client();
    await vscode.commands.executeCommand(Command.create, undefined, { name: VM, cpus: 1, memory: '512M', disk: '10G' });
    await api.model.waitFor(VM, (i) => i?.state === 'stopped', 10_000);
  });

  test('serial console opened as the VM starts: boot lines from the first, then the ttyS0 shell answers', async () => {
    const started = vscode.commands.executeCommand(Command.start, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'starting' || i?.state === 'running', 30_000);
    serial = (await vscode.commands.executeCommand<SerialConsole>(Command.openSerialConsole, VM))!;
    assert.ok(serial?.terminal, 'a terminal was opened');
    serial.pty.onDidWrite((d) => (out += d));
    // The kernel boots with `quiet` (runtime/qemu/argv.ts): its first line on ttyS0 is a timestamped warning, not "Linux version".
    await serialShows('a kernel line', /\[\s*\d+\.\d+\] /, 0, BOOT_MS);
    await started;
    await api.model.waitFor(VM, (i) => i?.state === 'running' && !!i.runtime?.agent.connected, 60_000);
    await serialShows('the root prompt', /root@[\w-]+:~# $/m);
    const log = fs.readFileSync(api.model.get(VM)!.paths.consoleLog, 'utf8');
    const header = out.indexOf('\r\n') + 2;
    const n = Math.min(log.length, out.length - header);
    assert.ok(n > 100, `console.log holds ${log.length} bytes, the terminal ${out.length - header}`);
    assert.equal(out.slice(header, header + n), log.slice(0, n), 'the console shows console.log from its first byte (the whole boot)');
    const mark = out.length;
    serial.terminal.sendText('echo serial-$((6*7))');
    await serialShows('serial-42', /\rserial-42\r\n/, mark, 30_000);
    assert.equal((await vscode.commands.executeCommand<SerialConsole>(Command.openSerialConsole, VM))?.pty, serial.pty, 'opening it again shows the same console');
    // A listener for the tree's port children (the guest's own Node, in the background).
    const mark2 = out.length;
    serial.terminal.sendText(`(node -e "require('net').createServer().listen(8042)" </dev/null >/dev/null 2>&1 &) ; echo listen-started`);
    await serialShows('the listener started', /\rlisten-started\r\n/, mark2, 30_000);
  });

  test('details: the webview draws CPU samples about once a second and plausible memory figures', async () => {
    const panel = (await vscode.commands.executeCommand<DetailsPanel>(Command.showDetails, VM))!;
    assert.ok(panel, 'a panel was opened');
    const drawn = () => panel.reports.filter((r): r is Extract<FromWebview, { type: 'drawn' }> => r.type === 'drawn');
    const live = () => panel.posted.flatMap((m: ToWebview) => (m.type === 'sample' && typeof m.sample.cpuPercent === 'number' ? [m.sample] : []));
    await until('8 live CPU samples posted', () => (live().length >= 8 ? true : undefined), panel.onDidReport, 60_000);
    const enough = await until('the plot drawn with them', () => drawn().find((d) => d.cpuPoints >= 8), panel.onDidReport, 10_000);
    const samples = panel.posted.flatMap((m: ToWebview) => (m.type === 'sample' ? [m.sample] : m.type === 'init' ? m.samples : []));
    const cpu = live();
    const gaps = cpu.slice(1).map((s, i) => s.at - cpu[i].at);
    const gap = median(gaps);
    assert.ok(gap >= 900 && gap <= 1600, `CPU samples every ${gap} ms (median)`);
    for (const s of cpu) assert.ok(s.cpuPercent! >= 0 && s.cpuPercent! < 1000, `cpu ${s.cpuPercent}`);
    const mem = samples.filter((s) => s.memory).at(-1)!;
    assert.ok(mem, 'a guest memory figure');
    const total = mem.memory!.totalBytes / 2 ** 20;
    assert.ok(total > 300 && total <= 512, `guest memory total ${total.toFixed(0)} MiB for a 512 MiB VM`);
    const used = (mem.memory!.totalBytes - mem.memory!.availableBytes) / 2 ** 20;
    assert.ok(used > 10 && used < total, `guest memory used ${used.toFixed(0)} MiB`);
    const rss = samples.filter((s) => s.hostRssBytes).at(-1)!.hostRssBytes! / 2 ** 20;
    assert.ok(rss > 50 && rss < 2048, `QEMU RSS ${rss.toFixed(0)} MiB`);
    assert.match(enough.cpuText, /^\d+(\.\d)?%$/);
    assert.match(enough.memoryText, /^\d+ MiB of \d+ MiB$/);
    const status = panel.posted.find((m) => m.type === 'init');
    assert.ok(status && status.type === 'init' && status.status.startedAt && status.status.accelerator, 'uptime and accelerator');
    const again = await vscode.commands.executeCommand<DetailsPanel>(Command.showDetails, VM);
    assert.equal(again, panel, 'showing the details again reveals the same panel');
    console.log(`details: ${cpu.length} CPU samples, median gap ${gap} ms, guest memory ${used.toFixed(0)}/${total.toFixed(0)} MiB, QEMU RSS ${rss.toFixed(0)} MiB, drawn ${drawn().length} times`);
    panel.panel.dispose();
    assert.equal(api.details.get(VM), undefined, 'the disposed panel is forgotten');
  });

  test('tree: live CPU % in the description, the listening port as a child, guest OS and ports in the tooltip', async () => {
    const vmNode: Node = { kind: 'vm', name: VM };
    assert.ok(api.metrics.isWatched(VM), 'the visible tree watches the running VM');
    const desc = await until('CPU % in the description', () => {
      const d = String(api.tree.getTreeItem(vmNode).description);
      return /% CPU$/.test(d) ? d : undefined;
    }, api.tree.onDidChangeTreeData, 30_000);
    assert.match(desc, /^Running · 1 vCPU · 512 MiB · \d+% CPU$/);
    const port = await until('port 8042 under the VM', () => api.tree.getChildren(vmNode).find((n) => n.kind === 'port' && n.port === 8042), api.tree.onDidChangeTreeData, 30_000);
    const item = api.tree.getTreeItem(port);
    // Forwarded automatically (ports.test.ts covers the forward itself).
    assert.match(String(item.label), /^8042\/tcp -> 127\.0\.0\.1:\d+$/);
    assert.equal(item.contextValue, 'vmForward');
    // VS Code drops an item's hover each time it re-renders: a steady VM's item must stay still
    // long enough for its tooltip to show and be read, whatever the samples say.
    const renders: number[] = [];
    const counting = api.tree.onDidChangeTreeData((n) => {
      if (!n || (n.kind === 'vm' && n.name === VM)) renders.push(Date.now());
    });
    await new Promise((r) => setTimeout(r, 11_000));
    counting.dispose();
    const gaps = renders.slice(1).map((t, i) => t - renders[i]);
    assert.ok(renders.length <= 3 && gaps.every((g) => g >= 4_500), `the VM's item re-rendered ${renders.length} times in 11 s (gaps ${gaps.join(', ')} ms)`);
    const tip = api.tree.resolveTreeItem(api.tree.getTreeItem(vmNode), vmNode).tooltip as vscode.MarkdownString;
    assert.match(tip.value, /Guest OS: Debian/);
    assert.match(tip.value, /Listening ports: .*8042/);
    assert.match(tip.value, /Addresses: /);
    // Hidden, the tree watches nothing; shown again, it does.
    await vscode.commands.executeCommand('workbench.view.explorer');
    await until('the tree to stop watching', () => (api.metrics.isWatched(VM) ? undefined : true), (l) => api.treeView.onDidChangeVisibility(l), 10_000);
    await vscode.commands.executeCommand(`${View.machines}.focus`);
    await until('the tree to watch again', () => (api.metrics.isWatched(VM) ? true : undefined), (l) => api.treeView.onDidChangeVisibility(l), 10_000);
  });

  test('serial console: carries on through a kill -9 of the worker; ends with one line when the VM stops', async () => {
    const before = api.model.get(VM)!.runtime!.workerPid;
    process.kill(before, 'SIGKILL');
    await api.model.waitFor(VM, (i) => i?.state === 'running' && !!i.runtime && i.runtime.workerPid !== before, 60_000);
    const mark = out.length;
    serial.terminal.sendText('echo after-$((40+2))');
    await serialShows('the shell through the new worker', /\rafter-42\r\n/, mark, 30_000);
    // A console opened on the running VM starts with the replay: the boot from console.log's first line.
    serial.terminal.dispose();
    await until('the old console closed', () => (vscode.window.terminals.includes(serial.terminal) ? undefined : true), vscode.window.onDidCloseTerminal, 10_000);
    serial = (await vscode.commands.executeCommand<SerialConsole>(Command.openSerialConsole, VM))!;
    out = '';
    serial.pty.onDidWrite((d) => (out += d));
    const firstLine = fs.readFileSync(api.model.get(VM)!.paths.consoleLog, 'utf8').split('\n')[0];
    await serialShows('the replay of the boot', new RegExp(firstLine.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')), 0, 30_000);
    const ended = new Promise<string>((resolve) => serial.pty.onDidEnd(resolve));
    await vscode.commands.executeCommand(Command.turnOff, VM);
    await api.model.waitFor(VM, (i) => i?.state === 'stopped', 60_000);
    assert.equal(await ended, `${VM} stopped`);
    const last = out.trim().split('\r\n').at(-1)!;
    assert.match(last, new RegExp(`${VM} stopped; the serial console ended\\. Press any key to close the terminal\\.`));
    serial.terminal.dispose();
    await vscode.commands.executeCommand(Command.delete, VM, { confirm: false });
    await api.model.waitFor(VM, (i) => i === undefined, 30_000);
  });
});
