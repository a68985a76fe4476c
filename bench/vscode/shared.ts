/**
 * What bench/extension.ts (the driver, plain Node) and the bench suites it runs inside VS Code's
 * extension host share: the configuration file the driver writes (named by
 * $SANDBOXVM_BENCH_CONFIG, which code-server's extension hosts inherit) and the results files the
 * suites write back. Samples are raw milliseconds; the driver computes medians and prints.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

export const CONFIG_ENV = 'SANDBOXVM_BENCH_CONFIG';

export interface BenchConfig {
  /** Where the suites write results and progress.log. */
  out: string;
  repo: string;
  /** bin/sandboxvm */
  cli: string;
  /** The SANDBOXVM_HOME the extension, the service and the CLI use. */
  home: string;
  /** The running VM the event and terminal measurements use (one of the registered VMs). */
  vm: string;
  /** How many VMs the service has registered when the view is measured (vm included). */
  registered: number;
  /** The empty extension installed beside ours (the activation peer). */
  peerExtension: { id: string; main: string; command: string };
  /** Another empty extension, activated first and untimed: the window's first activation pays for more. */
  warmupExtension: { id: string; main: string; command: string };
  counts: { events: number; rtt: number; createRuns: number };
}

export interface ActivationSample {
  /** Which went first in this window. */
  first: 'ours' | 'peer';
  ours: ActivationTimes;
  peer: ActivationTimes;
}

export interface ActivationTimes {
  /** executeCommand (the activating command) until activate() returned. */
  commandToActivated: number;
  /** The module's require (bundle load and evaluation). */
  load: number;
  /** activate() itself. */
  activate: number;
}

export interface EventSample {
  state: string;
  /** t=0 as epoch milliseconds (performance.timeOrigin + now()), to line up with the browser's marks. */
  epoch0: number;
  /** From the pause/resume call (t=0) to: a bare ServiceClient subscriber hearing the event. */
  subscriber: number;
  /** ...the event reaching the extension's model (its ServiceClient's notification). */
  model: number;
  /** ...the tree's onDidChangeTreeData firing for the VM. */
  fired: number;
  /** ...getTreeItem returning the VM's item in its new state (VS Code rendering the change). */
  item: number;
  /** getChildren calls / getTreeItem calls during the sample (a one-item refresh: 0 and 1). */
  getChildren: number;
  getTreeItem: number;
}

/** The VM's row in the workbench's DOM changing its aria-label (recorded in the page by the driver). */
export interface DomMark {
  /** Epoch milliseconds (performance.timeOrigin + now() in the page). */
  t: number;
  label: string;
}

export interface MainResults {
  activation: ActivationSample;
  events: EventSample[];
  rtt: { extension: number[]; cli: number[]; session: number[] };
  createToPrompt: { extension: number[]; cli: number[] };
}

export function readConfig(): BenchConfig {
  const file = process.env[CONFIG_ENV];
  if (!file) throw new Error(`${CONFIG_ENV} is not set: this suite runs under \`npm run bench -- extension\``);
  return JSON.parse(fs.readFileSync(file, 'utf8')) as BenchConfig;
}

/** Writes `value` as JSON to `<out>/<name>` atomically (the driver reads it once the window exits). */
export function writeResult(config: BenchConfig, name: string, value: unknown): void {
  const file = path.join(config.out, name);
  fs.writeFileSync(`${file}.tmp`, JSON.stringify(value, null, 1));
  fs.renameSync(`${file}.tmp`, file);
}

/** A progress line the driver copies to its stderr. */
export function progress(config: BenchConfig, message: string): void {
  fs.appendFileSync(path.join(config.out, 'progress.log'), `${message}\n`);
}
