/**
 * `npm run bench -- <name> [--runs N]`: runs one benchmark. Results go to stdout as JSON lines
 * ({"bench","metric","unit","value","peer","peer_value","ratio"}), progress to stderr.
 *
 * To add a benchmark: write bench/<name>.ts exporting `summary` and `run(options)` (BenchModule in
 * lib/options.ts) and add it to BENCHMARKS below.
 */
import * as agent from './agent';
import * as boot from './boot';
import * as checkpoints from './checkpoints';
import * as create from './create';
import * as extension from './extension';
import * as exportBench from './export';
import * as network from './network';
import * as sync from './sync';
import * as ports from './ports';
import * as workspace from './workspace';
import { cleanupAll, installSignalHandlers } from './lib/cleanup';
import type { BenchModule, BenchOptions } from './lib/options';
import { log } from './lib/output';

const BENCHMARKS: Record<string, BenchModule> = {
  boot,
  agent,
  extension,
  network,
  sync,
  ports,
  checkpoints,
  create,
  workspace,
  export: exportBench,
};

const DEFAULT_RUNS = 5;

function usage(): string {
  const names = Object.entries(BENCHMARKS).map(([name, m]) => `  ${name.padEnd(10)} ${m.summary}`);
  return [
    'usage: npm run bench -- <benchmark> [--runs N]',
    '',
    'benchmarks:',
    ...names,
    '',
    'options:',
    `  --runs N   samples per metric; each result is their median (default ${DEFAULT_RUNS})`,
    '',
    'Results: one JSON object per line on stdout; progress on stderr. Needs `npm run build` first.',
  ].join('\n');
}

function fail(message: string): never {
  process.stderr.write(`${message}\n\n${usage()}\n`);
  process.exit(2);
}

function parseOptions(args: string[]): BenchOptions {
  const options: BenchOptions = { runs: DEFAULT_RUNS };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i];
    const m = /^--runs(?:=(.*))?$/.exec(arg);
    if (m) {
      const value = m[1] ?? args[++i];
      const n = Number(value);
      if (!Number.isInteger(n) || n < 1) fail(`--runs needs a positive integer, not ${JSON.stringify(value ?? '')}`);
      options.runs = n;
    } else {
      fail(`unknown argument ${JSON.stringify(arg)}`);
    }
  }
  return options;
}

async function main(): Promise<void> {
  const [name, ...rest] = process.argv.slice(2);
  if (name === '--help' || name === '-h') {
    process.stdout.write(usage() + '\n');
    return;
  }
  if (name === undefined) fail('which benchmark?');
  if (!Object.hasOwn(BENCHMARKS, name)) fail(`unknown benchmark ${JSON.stringify(name)}`);
  const options = parseOptions(rest);

  installSignalHandlers();
  let code = 0;
  try {
    log(`${name}: ${options.runs} run(s)`);
    await BENCHMARKS[name].run(options);
  } catch (err) {
    log(`${name} failed: ${(err as Error).stack ?? err}`);
    code = 1;
  } finally {
    await cleanupAll();
  }
  process.exit(code);
}

void main();
