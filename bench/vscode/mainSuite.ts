/**
 * The extension-host entry of the main bench window (extensionTestsPath): an activation sample,
 * then, with the view shown and the extension connected to a service that has `registered` VMs:
 * the event-to-view latency of pause/resume of the running VM, terminal round trips through the
 * extension's Pseudoterminal beside `sandboxvm shell` (node-pty) and a bare SessionClient on that
 * VM, and Create VM to a shell prompt through the extension's commands beside the CLI's.
 * Results go to <out>/main.json. Uses the extension's API (returned by activate) and wraps a few of
 * its objects' methods on the instance to timestamp them; the extension is not changed.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as vscode from 'vscode';
import type * as NodePty from 'node-pty';
import type { SandboxVmsApi } from '../../extension/extension';
import { Command, EXTENSION_ID, View } from '../../extension/ids';
import type { GuestTerminal } from '../../extension/terminals/terminalManager';
import type { Node } from '../../extension/tree/vmTreeProvider';
import { ServiceClient } from '../../runtime/client/serviceClient';
import type { VmInfo } from '../../runtime/common/status';
import { EchoProbe } from '../lib/echo';
import { activationSample } from './activation';
import { progress, readConfig, writeResult, type BenchConfig, type EventSample, type MainResults } from './shared';

const now = () => performance.now();
const BOOT_MS = 240_000;
/** Typed into a login shell: no line discipline, cat echoes each byte. The quotes keep the typed line from matching READY. */
const ECHO_SETUP = "stty raw -echo; echo RE''ADY; exec cat\r";
/** VS Code's tree view batches changes for 200 ms after one it passed on at once; samples are spaced past it. */
const SPACING_MS = 400;

const delay = (ms: number) => new Promise((r) => setTimeout(r, ms));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

export async function run(): Promise<void> {
  const config = readConfig();
  try {
    await measure(config);
  } catch (err) {
    progress(config, `FAILED: ${(err as Error).stack ?? err}`);
    throw err;
  }
}

async function measure(config: BenchConfig): Promise<void> {
  const say = (m: string) => progress(config, m);
  const n = fs.readdirSync(config.out).filter((f) => /^activation-\d+\.json$/.test(f)).length;
  const activation = await activationSample(config, n % 2 === 0 ? 'ours' : 'peer');
  say(`main window: activation ${activation.ours.commandToActivated.toFixed(1)} ms (load ${activation.ours.load.toFixed(1)}, activate() ${activation.ours.activate.toFixed(1)}); empty extension ${activation.peer.commandToActivated.toFixed(1)} ms`);

  const api = vscode.extensions.getExtension<SandboxVmsApi>(EXTENSION_ID)!.exports;
  await vscode.commands.executeCommand(`${View.machines}.focus`);
  await api.connection.client();
  await api.model.waitFor(config.vm, (i) => i?.state === 'running' && !!i.runtime?.agent.connected, 60_000);
  if (api.model.size !== config.registered) throw new Error(`the view has ${api.model.size} VMs, expected ${config.registered}`);
  if (!api.treeView.visible) throw new Error('the Virtual Machines view is not visible');
  say(`view shown, ${api.model.size} VMs registered, ${config.vm} running`);

  const own = await ServiceClient.connect({ home: config.home, autoStart: false });
  try {
    const events = await measureEvents(config, api, own, say);
    const rtt = await measureRtt(config, api, own, say);
    say(`stopping ${config.vm}`);
    await own.stop(config.vm);
    const createToPrompt = await measureCreate(config, api, own, say);
    const results: MainResults = { activation, events, rtt, createToPrompt };
    writeResult(config, 'main.json', results);
  } finally {
    own.dispose();
  }
}

// ---------------------------------------------------------------------------------------------
// Event to view

interface Pending extends Partial<EventSample> {
  state: string;
  t0: number;
  done: () => void;
}

async function measureEvents(config: BenchConfig, api: SandboxVmsApi, own: ServiceClient, say: (m: string) => void): Promise<EventSample[]> {
  const vm = config.vm;
  let cur: Pending | undefined;
  const mark = (key: 'subscriber' | 'model' | 'fired' | 'item') => {
    const c = cur!;
    if (c[key] !== undefined) return;
    c[key] = now() - c.t0;
    if (c.subscriber !== undefined && c.item !== undefined) c.done();
  };

  const observer = await ServiceClient.connect({ home: config.home, autoStart: false });
  await observer.subscribe((info) => void (cur && info.name === vm && info.state === cur.state && mark('subscriber')));

  const model = api.model;
  const update = model.update;
  model.update = function (this: typeof model, info: VmInfo) {
    if (cur && info.name === vm && info.state === cur.state) mark('model');
    return update.call(this, info);
  };
  const fired = api.tree.onDidChangeTreeData((node) => {
    if (cur?.model !== undefined && (node === undefined || (node.kind === 'vm' && node.name === vm))) mark('fired');
  });
  const tree = api.tree;
  const getTreeItem = tree.getTreeItem;
  const getChildren = tree.getChildren;
  tree.getTreeItem = function (this: typeof tree, el: Node) {
    const item = getTreeItem.call(this, el);
    if (cur) {
      cur.getTreeItem = (cur.getTreeItem ?? 0) + 1;
      if (cur.fired !== undefined && el.kind === 'vm' && el.name === vm && item.contextValue === `${cur.state}Vm`) mark('item');
    }
    return item;
  };
  tree.getChildren = function (this: typeof tree, el?: Node) {
    if (cur) cur.getChildren = (cur.getChildren ?? 0) + 1;
    return getChildren.call(this, el);
  };

  // The VM's row must be drawn for the page to see it change (the list draws only what is in view).
  await api.treeView.reveal({ kind: 'vm', name: vm }, { select: false, focus: false });
  const samples: EventSample[] = [];
  try {
    for (let i = 0; i < config.counts.events + 2; i++) {
      const state = i % 2 === 0 ? 'paused' : 'running';
      let done!: () => void;
      const complete = new Promise<void>((r) => (done = r));
      cur = { state, t0: now(), done };
      await (state === 'paused' ? own.pause(vm) : own.resume(vm));
      await withTimeout(complete, 10_000, `the view showing ${vm} ${state} (got ${JSON.stringify(cur)})`);
      const c = cur;
      cur = undefined;
      // The first pause and resume warm the paths up.
      if (i >= 2) samples.push({ state, epoch0: performance.timeOrigin + c.t0, subscriber: c.subscriber!, model: c.model!, fired: c.fired!, item: c.item!, getChildren: c.getChildren ?? 0, getTreeItem: c.getTreeItem ?? 0 });
      await delay(SPACING_MS);
    }
  } finally {
    cur = undefined;
    delete (model as Partial<typeof model>).update;
    delete (tree as Partial<typeof tree>).getTreeItem;
    delete (tree as Partial<typeof tree>).getChildren;
    fired.dispose();
    observer.dispose();
  }
  if (api.model.get(vm)?.state !== 'running') await own.resume(vm);
  say(`event to view: ${samples.length} samples`);
  return samples;
}

// ---------------------------------------------------------------------------------------------
// Terminal round trips

interface Side {
  name: 'extension' | 'cli' | 'session';
  open(probe: EchoProbe): Promise<{ write: (d: string) => unknown; close: () => Promise<void> }>;
}

async function measureRtt(config: BenchConfig, api: SandboxVmsApi, own: ServiceClient, say: (m: string) => void): Promise<MainResults['rtt']> {
  const vm = config.vm;
  const pty = loadNodePty(config);
  const sides: Side[] = [
    {
      name: 'extension',
      open: async (probe) => {
        const g = api.terminals.open(vm);
        const sub = g.pty.onDidWrite((d) => probe.feed(d));
        await withTimeout(new Promise<void>((r) => (g.pty.sessionId !== undefined ? r() : g.pty.onDidStartSession(() => r()))), 60_000, 'the extension terminal opening');
        return { write: (d) => g.pty.handleInput(d), close: async () => { sub.dispose(); g.terminal?.dispose(); } };
      },
    },
    {
      name: 'cli',
      open: async (probe) => {
        const p = pty.spawn(config.cli, ['shell', vm], { name: 'xterm-256color', cols: 80, rows: 24, env: { ...process.env, SANDBOXVM_HOME: config.home } as Record<string, string> });
        p.onData((d) => probe.feed(d));
        return {
          write: (d) => p.write(d),
          close: async () => {
            const exited = new Promise<void>((r) => p.onExit(() => r()));
            p.kill();
            await withTimeout(exited, 10_000, 'sandboxvm shell exiting').catch(() => undefined);
          },
        };
      },
    },
    {
      name: 'session',
      open: async (probe) => {
        const sessions = await own.attach(vm);
        const s = await sessions.open({ kind: 'pty', cols: 80, rows: 24, env: { TERM: 'xterm-256color' } }, { onData: (_s, d) => probe.feed(d), onExit: () => undefined });
        // Not awaited, as the extension's handleInput does not: the sample is the echo, not the worker's take.
        return { write: (d) => void s.write(d).catch(() => undefined), close: async () => { await s.close().catch(() => undefined); sessions.dispose(); } };
      },
    },
  ];
  const out: MainResults['rtt'] = { extension: [], cli: [], session: [] };
  const half = Math.ceil(config.counts.rtt / 2);
  // extension, cli, session, then back: drift hits every side alike.
  const order = [...sides, ...[...sides].reverse()];
  for (let i = 0; i < order.length; i++) {
    const side = order[i];
    let write: (d: string) => unknown = () => undefined;
    const probe = new EchoProbe((d) => write(d));
    const t = await side.open(probe);
    write = t.write;
    try {
      t.write(ECHO_SETUP);
      await probe.waitFor('READY', 60_000, `${side.name} terminal`);
      const n = i < sides.length ? half : config.counts.rtt - half;
      const samples = await probe.samples(n, i < sides.length ? 300 : 100);
      out[side.name].push(...samples);
      say(`terminal round trip, ${side.name}: ${n} samples, median ${median(samples).toFixed(2)} ms`);
    } finally {
      await t.close();
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Create VM to a shell prompt

const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Za-z0-9]/g;
const PROMPT = /[#$] $/;

/** Resolves when the text fed so far ends with a shell prompt. */
class PromptWatch {
  private text = '';
  private resolve?: () => void;
  readonly seen = new Promise<void>((r) => (this.resolve = r));
  feed(d: string): void {
    this.text = (this.text + d).slice(-4096);
    if (PROMPT.test(this.text.replace(ANSI, ''))) this.resolve?.();
  }
  tail(): string {
    return JSON.stringify(this.text.slice(-300));
  }
}

async function measureCreate(config: BenchConfig, api: SandboxVmsApi, own: ServiceClient, say: (m: string) => void): Promise<MainResults['createToPrompt']> {
  const out: MainResults['createToPrompt'] = { extension: [], cli: [] };
  const pty = loadNodePty(config);
  const remove = async (name: string) => {
    await own.remove(name, true).catch(() => undefined);
    await api.model.waitFor(name, (i) => i === undefined, 30_000);
  };

  const viaExtension = async (name: string): Promise<number> => {
    const watch = new PromptWatch();
    const t0 = now();
    const created = await vscode.commands.executeCommand(Command.create, undefined, { name, cpus: 1, memory: '512M', disk: '10G' });
    if (created !== name) throw new Error(`Create VM returned ${JSON.stringify(created)}`);
    await vscode.commands.executeCommand(Command.start, name);
    const info = await api.model.waitFor(name, (i) => i?.state !== 'starting', 10_000);
    if (info?.state !== 'running') throw new Error(`${name} is ${info?.state} after Start: ${info?.lastError?.message ?? 'see the service log'}`);
    const g = await vscode.commands.executeCommand<GuestTerminal | undefined>(Command.openTerminal, name);
    if (!g) throw new Error('Open Terminal returned no terminal');
    const sub = g.pty.onDidWrite((d) => watch.feed(d));
    try {
      await withTimeout(watch.seen, 60_000, `a prompt in the extension terminal on ${name} (it shows ${watch.tail()})`);
      return now() - t0;
    } finally {
      sub.dispose();
      g.terminal?.dispose();
    }
  };

  const viaCli = async (name: string): Promise<number> => {
    const watch = new PromptWatch();
    const script = '"$0" create "$1" --cpus 1 --memory 512M --disk 10G && "$0" start "$1" && exec "$0" shell "$1"';
    const t0 = now();
    const p = pty.spawn('/bin/sh', ['-c', script, config.cli, name], { name: 'xterm-256color', cols: 80, rows: 24, env: { ...process.env, SANDBOXVM_HOME: config.home } as Record<string, string> });
    const exited = new Promise<number>((r) => p.onExit((e) => r(e.exitCode)));
    p.onData((d) => watch.feed(d));
    try {
      const first = await withTimeout(Promise.race([watch.seen.then(() => 'prompt'), exited.then((c) => `exit ${c}`)]), BOOT_MS, `a prompt from sandboxvm shell ${name} (it shows ${watch.tail()})`);
      if (first !== 'prompt') throw new Error(`the CLI ended (${first}) before a prompt: ${watch.tail()}`);
      return now() - t0;
    } finally {
      p.kill();
      await withTimeout(exited, 10_000, 'sandboxvm shell exiting').catch(() => undefined);
    }
  };

  for (let i = 0; i < config.counts.createRuns; i++) {
    const order = i % 2 === 0 ? (['extension', 'cli'] as const) : (['cli', 'extension'] as const);
    for (const side of order) {
      const name = `${side === 'extension' ? 'ext' : 'cli'}-${i}`;
      try {
        const ms = await (side === 'extension' ? viaExtension(name) : viaCli(name));
        out[side].push(ms);
        say(`create to prompt, ${side} (${name}): ${ms.toFixed(0)} ms`);
      } finally {
        await remove(name);
      }
    }
  }
  return out;
}

/** node-pty from the repository (the suite bundle lives in a temporary folder). */
function loadNodePty(config: BenchConfig): typeof NodePty {
  return require(path.join(config.repo, 'node_modules', 'node-pty')) as typeof NodePty;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}
