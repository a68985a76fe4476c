/**
 * `npm run bench -- extension`: the VS Code extension in real VS Code (code-server 4.100.3 and
 * Debian's chromium, as `npm run test:vscode` runs it). The measuring code runs inside the extension
 * host (bench/vscode/*Suite.ts, loaded through the workbench URL's `extensionTestsPath`) and writes
 * raw samples to files this driver reads once the window exits.
 *
 *   activation_ms          executing a command of the extension until its activate() returned
 *                          (VS Code loading the bundle, then activate()); peer: an empty extension
 *                          (one command; installed in code-server's extensions folder) activated
 *                          the same way in the same window
 *   activate_call_ms       activate() itself; peer: the empty extension's
 *   event_to_view_ms       with `REGISTERED` VMs registered, pause/resume of the running one (a
 *                          ServiceClient call from the extension host) until the VM's row in the
 *                          workbench's DOM shows the new state (a MutationObserver in the page,
 *                          before the paint; both clocks are performance.timeOrigin + now());
 *                          peer: the same event reaching a bare ServiceClient subscriber in the
 *                          extension host
 *   event_to_tree_item_ms  the same, until the tree's getTreeItem returned the VM's item in its new
 *                          state (VS Code asking the extension for it to draw); stderr also has
 *                          the event reaching the model and onDidChangeTreeData
 *   terminal_rtt_ms / _p99 one byte through the extension's Pseudoterminal (handleInput, as VS Code
 *                          calls it, to onDidWrite) on a raw-mode `cat`; peers: `sandboxvm shell` in
 *                          a node-pty on the same VM, and a bare SessionClient pty session (its
 *                          write not awaited, as the Pseudoterminal does not await it)
 *   create_to_prompt_ms    Create VM (the command with its arguments, no wizard), Start, Open
 *                          Terminal, until the shell prompt shows; peer: `sandboxvm create && sandboxvm
 *                          start && sandboxvm shell` in a node-pty until the prompt
 *
 * Each activation sample needs a fresh extension host: --runs N opens N windows one after another
 * (alternating which extension activates first, after 3 s for the window's own start-up and an
 * untimed warm-up activation of another empty extension, as a window's first activation pays
 * more); the last window goes on with the other measurements.
 * One temporary home: the `REGISTERED` VMs are created (qcow2 overlays, no boot) and one started
 * before code-server is, untimed. Only one VM runs at a time.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { build } from 'esbuild';
import { imageCacheDir } from '../runtime/common/paths';
import { installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from '../test/vscode/codeServer';
import { onCleanup, throwIfAborting } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import type { BenchOptions } from './lib/options';
import { describe, emit, log } from './lib/output';
import { CLI, REPO_ROOT, connectService, trackVm } from './lib/runtime';
import { median, now, p99 } from './lib/stats';
import { CONFIG_ENV, type ActivationSample, type BenchConfig, type DomMark, type EventSample, type MainResults } from './vscode/shared';

export const summary = 'the VS Code extension in code-server: activation, event to view with 50 VMs, terminal round trip, Create VM to a prompt';

const BENCH = 'extension';
const REGISTERED = 50;
const VM = 'vm-term';
const BOOT_TIMEOUT_MS = 240_000;
const WINDOW_TIMEOUT_MS = 30 * 60_000;
const PEER = { id: 'sandboxvm-bench.empty-extension', command: 'sandboxvmBenchEmpty.noop' };
const WARMUP = { id: 'sandboxvm-bench.warmup-extension', command: 'sandboxvmBenchWarmup.noop' };
/** The browser's console per window (kept after the run; the home is removed). */
const ARTIFACTS = process.env.SANDBOXVM_BENCH_ARTIFACTS ?? '/tmp/sandboxvm-bench-extension';

export async function run({ runs }: BenchOptions): Promise<void> {
  const scale = runs / 5;
  const counts = { events: Math.max(20, Math.round(30 * scale)), rtt: Math.max(200, Math.round(200 * scale)), createRuns: Math.max(2, runs) };
  log(`host: ${hostLine()}`);
  warnOfOtherQemus();
  if (!fs.existsSync(path.join(REPO_ROOT, 'dist', 'extension.js'))) throw new Error('dist/extension.js is missing: run `npm run build` first');
  log(`${runs} window(s) for activation; ${counts.events} state changes, ${counts.rtt} round trips per terminal, ${counts.createRuns} creates per side`);

  const bin = installCodeServer();
  const home = await tempHome();
  const out = path.join(home, 'bench-out');
  fs.mkdirSync(out);
  const suites = await buildSuites(path.join(home, 'suites'));
  const csScratch = path.join(home, 'code-server');
  // Installed by placement: code-server registers what it finds in a new extensions folder.
  const peerMain = writeEmptyExtension(path.join(csScratch, 'extensions'), PEER);
  const warmupMain = writeEmptyExtension(path.join(csScratch, 'extensions'), WARMUP);

  log(`home ${home}; starting the service from dist/, registering ${REGISTERED} VMs`);
  const client = await connectService(home);
  let t = now();
  for (let i = 1; i < REGISTERED; i++) await client.create({ name: `vm-${String(i).padStart(2, '0')}`, memoryMiB: 512 });
  await client.create({ name: VM, memoryMiB: 512 });
  log(`created ${REGISTERED} VMs in ${(now() - t).toFixed(0)} ms`);
  t = now();
  const info = await client.start(VM, undefined, BOOT_TIMEOUT_MS);
  trackVm(info);
  log(`started ${VM} in ${(now() - t).toFixed(0)} ms (${info.runtime?.accel})`);

  const config: BenchConfig = {
    out, repo: REPO_ROOT, cli: CLI, home, vm: VM, registered: REGISTERED,
    peerExtension: { ...PEER, main: peerMain },
    warmupExtension: { ...WARMUP, main: warmupMain },
    counts,
  };
  const configFile = path.join(home, 'bench-config.json');
  fs.writeFileSync(configFile, JSON.stringify(config, null, 1));

  const cs = await startCodeServer(bin, csScratch, {
    SANDBOXVM_HOME: home,
    SANDBOXVM_IMAGE_CACHE: imageCacheDir(),
    [CONFIG_ENV]: configFile,
  });
  onCleanup('stopping code-server', () => cs.stop());
  const browser = await launchChromium();
  onCleanup('closing chromium', () => browser.close());
  const tail = tailProgress(path.join(out, 'progress.log'));
  try {
    for (let i = 0; i < runs; i++) {
      throwIfAborting();
      const main = i === runs - 1;
      const marks = await runWindow(cs, browser, path.join(suites, main ? 'mainSuite.js' : 'activationSuite.js'), main ? 'main' : `activation ${i + 1}`, main ? VM : undefined);
      if (marks) fs.writeFileSync(path.join(out, 'dom-marks.json'), JSON.stringify(marks));
    }
  } finally {
    tail.stop();
  }

  const activations = fs.readdirSync(out).filter((f) => /^activation-\d+\.json$/.test(f)).map((f) => JSON.parse(fs.readFileSync(path.join(out, f), 'utf8')) as ActivationSample);
  const results = JSON.parse(fs.readFileSync(path.join(out, 'main.json'), 'utf8')) as MainResults;
  activations.push(results.activation);
  const marks = JSON.parse(fs.readFileSync(path.join(out, 'dom-marks.json'), 'utf8')) as DomMark[];
  report(activations, results, domTimes(results.events, marks));
}

/**
 * One workbench window with the extension under development, running `suite` in its extension host.
 * With `watchRow`, the page records each change of that VM's row in the view (returned).
 */
async function runWindow(cs: Awaited<ReturnType<typeof startCodeServer>>, browser: Awaited<ReturnType<typeof launchChromium>>, suite: string, label: string, watchRow?: string): Promise<DomMark[] | undefined> {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const consoleLog = fs.createWriteStream(path.join(ARTIFACTS, `console-${label.replace(/\W+/g, '-')}.log`));
  page.on('console', (m) => consoleLog.write(`[${m.type()}] ${m.text()}\n`));
  try {
    const exited = new Promise<number>((resolve) => void page.exposeFunction('codeAutomationExit', (c: number) => resolve(c)));
    if (watchRow) await page.addInitScript(rowObserver, watchRow);
    const t0 = now();
    await page.goto(workbenchUrl(cs, REPO_ROOT, suite));
    await waitForWorkbench(page);
    let timer: NodeJS.Timeout | undefined;
    const code = await Promise.race([exited, new Promise<number>((r) => (timer = setTimeout(() => r(-1), WINDOW_TIMEOUT_MS)))]).finally(() => clearTimeout(timer));
    if (code !== 0) throw new Error(`the ${label} window ${code === -1 ? 'did not finish in time' : `failed (exit ${code})`}; see ${ARTIFACTS}`);
    log(`${label} window done in ${((now() - t0) / 1000).toFixed(1)} s`);
    return watchRow ? await page.evaluate(() => (globalThis as unknown as { __sbxRowMarks: DomMark[] }).__sbxRowMarks) : undefined;
  } finally {
    await page.close().catch(() => undefined);
    consoleLog.end();
  }
}

/**
 * Runs in the page before the workbench: records (epoch ms, aria-label) whenever the tree row of VM
 * `name` changes. A MutationObserver's callback runs before the next paint.
 */
function rowObserver(name: string): void {
  const marks: DomMark[] = [];
  (globalThis as unknown as { __sbxRowMarks: DomMark[] }).__sbxRowMarks = marks;
  const selector = `.monaco-list-row[aria-label^="${name},"]`;
  new MutationObserver((records) => {
    const t = performance.timeOrigin + performance.now();
    for (const r of records) {
      const el = r.target.nodeType === 1 ? (r.target as Element) : r.target.parentElement;
      const row = el?.closest(selector) ?? (el?.matches?.('.monaco-list-rows') ? el.querySelector(selector) : null);
      const label = row?.getAttribute('aria-label');
      if (!label || marks.at(-1)?.label === label) continue;
      marks.push({ t, label });
      if (marks.length > 10_000) marks.splice(0, 5000);
    }
  }).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ['aria-label'], characterData: true });
}

/** Per event sample: t=0 to the first DOM change of the row showing the new state (undefined: not seen). */
function domTimes(events: EventSample[], marks: DomMark[]): (number | undefined)[] {
  const word: Record<string, string> = { paused: 'Paused', running: 'Running' };
  return events.map((e) => {
    const m = marks.find((k) => k.t >= e.epoch0 && k.label.includes(`, ${word[e.state]} `));
    return m && m.t - e.epoch0;
  });
}

function report(activations: ActivationSample[], r: MainResults, dom: (number | undefined)[]): void {
  const drawn = dom.filter((d): d is number => d !== undefined);
  if (drawn.length < dom.length / 2) throw new Error(`the page saw the VM's row change for only ${drawn.length} of ${dom.length} state changes`);
  const line = (metric: string, unit: string, value: number, peer: string, peerValue: number) => emit({ bench: BENCH, metric, unit, value, peer, peer_value: peerValue });
  const ours = activations.map((a) => a.ours);
  const peer = activations.map((a) => a.peer);
  log(describe('activation (command to activate() returned), Sandbox VMs', ours.map((a) => a.commandToActivated)));
  log(describe('  of which loading the bundle', ours.map((a) => a.load)));
  log(describe('  of which activate()', ours.map((a) => a.activate)));
  log(describe('activation, empty extension', peer.map((a) => a.commandToActivated)));
  log(describe('  its activate()', peer.map((a) => a.activate)));

  const ev = r.events;
  log(describe('state change to the event at a bare subscriber', ev.map((e) => e.subscriber)));
  log(describe('state change to the event in the extension model', ev.map((e) => e.model)));
  log(describe('state change to onDidChangeTreeData', ev.map((e) => e.fired)));
  log(describe('state change to the item rendered (getTreeItem)', ev.map((e) => e.item)));
  log(describe('event in the model to the item rendered', ev.map((e) => e.item - e.model)));
  log(describe(`state change to the row changed in the page's DOM (${drawn.length} of ${dom.length} seen)`, drawn));
  log(`tree calls per change: getChildren ${median(ev.map((e) => e.getChildren))}, getTreeItem ${median(ev.map((e) => e.getTreeItem))} (median)`);

  log(describe('terminal round trip, extension Pseudoterminal', r.rtt.extension));
  log(describe('terminal round trip, sandboxvm shell (node-pty)', r.rtt.cli));
  log(describe('terminal round trip, SessionClient', r.rtt.session));
  log(describe('create to prompt, extension commands', r.createToPrompt.extension));
  log(describe('create to prompt, CLI', r.createToPrompt.cli));

  line('activation_ms', 'ms', median(ours.map((a) => a.commandToActivated)), 'empty-extension', median(peer.map((a) => a.commandToActivated)));
  line('activate_call_ms', 'ms', median(ours.map((a) => a.activate)), 'empty-extension', median(peer.map((a) => a.activate)));
  line('event_to_view_ms', 'ms', median(drawn), 'service-subscriber', median(ev.map((e) => e.subscriber)));
  line('event_to_tree_item_ms', 'ms', median(ev.map((e) => e.item)), 'service-subscriber', median(ev.map((e) => e.subscriber)));
  line('terminal_rtt_ms', 'ms', median(r.rtt.extension), 'cli-shell', median(r.rtt.cli));
  line('terminal_rtt_p99_ms', 'ms', p99(r.rtt.extension), 'cli-shell', p99(r.rtt.cli));
  line('terminal_rtt_ms', 'ms', median(r.rtt.extension), 'session-client', median(r.rtt.session));
  line('terminal_rtt_p99_ms', 'ms', p99(r.rtt.extension), 'session-client', p99(r.rtt.session));
  line('create_to_prompt_ms', 'ms', median(r.createToPrompt.extension), 'cli', median(r.createToPrompt.cli));
}

/** Bundles the extension-host entries (vscode and native modules external). */
async function buildSuites(outdir: string): Promise<string> {
  const dir = path.join(__dirname, 'vscode');
  await build({
    entryPoints: [path.join(dir, 'activationSuite.ts'), path.join(dir, 'mainSuite.ts')],
    bundle: true, platform: 'node', target: 'node20', format: 'cjs', outdir,
    external: ['vscode', 'koffi', 'node-pty'], sourcemap: 'inline', logLevel: 'warning',
  });
  return outdir;
}

/** An extension with one command and an activate() that registers it, in `extensions`; returns its main. */
function writeEmptyExtension(extensions: string, ext: { id: string; command: string }): string {
  const [publisher, name] = ext.id.split('.');
  const dir = path.join(extensions, `${ext.id}-0.0.1`);
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({
    name, publisher, version: '0.0.1', engines: { vscode: '^1.100.0' }, main: './extension.js',
    contributes: { commands: [{ command: ext.command, title: `Bench: ${name}` }] },
  }, null, 1));
  fs.writeFileSync(path.join(dir, 'extension.js'), `const vscode = require('vscode');\nexports.activate = (context) => { context.subscriptions.push(vscode.commands.registerCommand(${JSON.stringify(ext.command)}, () => undefined)); };\n`);
  return path.join(dir, 'extension.js');
}

/** Copies the suites' progress lines to stderr as they come (polled: display only). */
function tailProgress(file: string): { stop(): void } {
  let offset = 0;
  const pump = () => {
    let text = '';
    try {
      const fd = fs.openSync(file, 'r');
      try {
        const size = fs.fstatSync(fd).size;
        if (size > offset) {
          const buf = Buffer.alloc(size - offset);
          fs.readSync(fd, buf, 0, buf.length, offset);
          offset = size;
          text = buf.toString('utf8');
        }
      } finally {
        fs.closeSync(fd);
      }
    } catch {
      return;
    }
    for (const l of text.split('\n')) if (l) log(`  vscode: ${l}`);
  };
  const timer = setInterval(pump, 500);
  return { stop: () => { clearInterval(timer); pump(); } };
}
