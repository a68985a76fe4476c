/**
 * One activation sample, inside a fresh extension host: the Sandbox VMs extension and an empty
 * extension (the peer: one command, nothing else) are each activated by executing one of their
 * commands, in the order given. The extension is not changed for this: the suite wraps Node's
 * Module._load (VS Code requires an extension's main through it) for the two mains only, timing
 * the require and wrapping `activate` to time the call.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { Command, EXTENSION_ID } from '../../extension/ids';
import type { ActivationSample, ActivationTimes, BenchConfig } from './shared';

interface Target {
  id: string;
  main: string;
  command: string;
}

interface Marks {
  loadStart?: number;
  loadEnd?: number;
  activateStart?: number;
  activateEnd?: number;
  activated?: () => void;
}

type Loader = (request: string, parent: unknown, isMain: boolean) => unknown;

const now = () => performance.now();
/** Quiet before each timed activation: the window starts its own extensions (git, ...) as it opens, and commands draw things. */
const SETTLE_MS = 2000;
const stripJs = (p: string) => path.resolve(p).replace(/\.js$/, '');

/** Wraps Module._load for the given mains; returns the marks per main and an undo. */
function hookLoads(targets: Target[]): { marks: Map<string, Marks>; undo: () => void } {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const Module = require('node:module') as { _load: Loader };
  const original = Module._load;
  const marks = new Map<string, Marks>(targets.map((t) => [stripJs(t.main), {}]));
  Module._load = function (this: unknown, request: string, parent: unknown, isMain: boolean) {
    const m = typeof request === 'string' && path.isAbsolute(request) ? marks.get(stripJs(request)) : undefined;
    if (!m || m.loadStart !== undefined) return original.call(this, request, parent, isMain);
    m.loadStart = now();
    const exports = original.call(this, request, parent, isMain) as { activate?: (...a: unknown[]) => unknown; deactivate?: () => unknown };
    m.loadEnd = now();
    if (typeof exports?.activate !== 'function') return exports;
    const activate = exports.activate;
    return {
      ...exports,
      activate: async (...args: unknown[]) => {
        m.activateStart = now();
        try {
          return await activate(...args);
        } finally {
          m.activateEnd = now();
          m.activated?.();
        }
      },
      deactivate: exports.deactivate,
    };
  } as Loader;
  return { marks, undo: () => void (Module._load = original) };
}

async function activateOne(target: Target, m: Marks): Promise<ActivationTimes> {
  const ext = vscode.extensions.getExtension(target.id);
  if (!ext) throw new Error(`extension ${target.id} is not loaded (loaded: ${vscode.extensions.all.filter((e) => !e.id.startsWith('vscode.')).map((e) => `${e.id} at ${e.extensionPath}`).join(', ')})`);
  if (ext.isActive) throw new Error(`extension ${target.id} was active before the measurement (something activated it early)`);
  const activated = new Promise<void>((resolve) => (m.activated = resolve));
  const t0 = now();
  const command = vscode.commands.executeCommand(target.command);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([activated, new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`${target.id} did not activate within 60 s`)), 60_000)))]).finally(() => clearTimeout(timer));
  await command;
  if (m.loadStart === undefined || m.activateStart === undefined || m.activateEnd === undefined) {
    throw new Error(`${target.id} activated without going through Module._load (${target.main}): cannot time it`);
  }
  return { commandToActivated: m.activateEnd - t0, load: m.loadEnd! - m.loadStart, activate: m.activateEnd - m.activateStart };
}

/**
 * Activates ours and the peer (order: `first`), each from its command, after the extension host has
 * had a moment to finish its own start-up and an untimed warm-up activation.
 */
export async function activationSample(config: BenchConfig, first: 'ours' | 'peer'): Promise<ActivationSample> {
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  await vscode.commands.executeCommand(config.warmupExtension.command);
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  if (!vscode.extensions.getExtension(config.warmupExtension.id)?.isActive) throw new Error(`the warm-up extension ${config.warmupExtension.id} did not activate`);
  const ours: Target = { id: EXTENSION_ID, main: path.join(config.repo, 'dist', 'extension.js'), command: Command.showServiceLog };
  const peer: Target = config.peerExtension;
  const { marks, undo } = hookLoads([ours, peer]);
  try {
    const order = first === 'ours' ? [ours, peer] : [peer, ours];
    const times = new Map<Target, ActivationTimes>();
    for (const t of order) {
      times.set(t, await activateOne(t, marks.get(stripJs(t.main))!));
      // Ours opens a log editor; the workbench draws it while the other's activation would wait on it.
      await new Promise((r) => setTimeout(r, SETTLE_MS));
    }
    return { first, ours: times.get(ours)!, peer: times.get(peer)! };
  } finally {
    undo();
  }
}
