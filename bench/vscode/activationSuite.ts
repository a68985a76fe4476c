/**
 * The extension-host entry of an activation-only window (extensionTestsPath): one activation sample,
 * written to <out>/activation-<n>.json. Windows alternate which extension goes first.
 */
import * as fs from 'node:fs';
import { activationSample } from './activation';
import { progress, readConfig, writeResult, type BenchConfig } from './shared';

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
  const n = fs.readdirSync(config.out).filter((f) => /^activation-\d+\.json$/.test(f)).length;
  const sample = await activationSample(config, n % 2 === 0 ? 'ours' : 'peer');
  progress(config, `window ${n + 1}: activation ${sample.ours.commandToActivated.toFixed(1)} ms (load ${sample.ours.load.toFixed(1)}, activate() ${sample.ours.activate.toFixed(1)}); empty extension ${sample.peer.commandToActivated.toFixed(1)} ms`);
  writeResult(config, `activation-${n}.json`, sample);
}
