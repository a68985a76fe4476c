/**
 * `npm run bench -- checkpoints`: checkpoint create and apply, running and stopped, and undo
 * points, through the runtime versus QEMU's own internal snapshots on the same image and shape.
 *
 *   checkpoint_create_running_ms   ServiceClient createCheckpoint of a running VM (disk + memory);
 *                                  peer: HMP `savevm` through QMP `human-monitor-command`
 *   checkpoint_pause_running_ms    how long the guest's vCPUs were stopped for it (the worker's
 *                                  figure); peer: savevm, which holds the guest paused throughout
 *   checkpoint_size_running_bytes  the checkpoint's files on the host; peer: the overlay's growth
 *   checkpoint_apply_running_ms    applyCheckpoint (discarding the current state) of a running
 *                                  checkpoint until it runs with its agent; peer: HMP `loadvm`
 *   checkpoint_create_stopped_ms   of a stopped VM (disk only); peer: `qemu-img snapshot -c`
 *   checkpoint_apply_stopped_ms    of a stopped checkpoint; peer: `qemu-img snapshot -a`
 *   undo_point_ms / undo_ms        an undo point (a running checkpoint, pruned by count) and
 *                                  `undo`; peer: savevm / loadvm
 *
 * One temporary home and service, one runtime VM and one raw QEMU (512 MiB each, never both
 * running at once while a side is timed: the raw QEMU is paused while the runtime is measured and
 * the other way round would need a second boot; runs alternate which side goes first).
 */
import { execFile } from 'node:child_process';
import { promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import type { ServiceClient } from '../runtime/client/serviceClient';
import { probeAccelerator } from '../runtime/accel/probe';
import { locateQemu } from '../runtime/qemu/locate';
import type { BenchOptions } from './lib/options';
import { throwIfAborting } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import { describe, emit, log } from './lib/output';
import { RawQemu, specFromConfig } from './lib/rawQemu';
import { connectService, readVmConfig, trackVm } from './lib/runtime';
import { median, now } from './lib/stats';
import * as createBench from './create';

export const summary = 'checkpoint create/apply (running, stopped), undo points: runtime vs QEMU savevm/loadvm';

const BENCH = 'checkpoints';
const MEMORY_MIB = 512;
const VM = 'ck';

type Key = 'createRunning' | 'pauseRunning' | 'sizeRunning' | 'applyRunning' | 'createStopped' | 'applyStopped' | 'undoPoint' | 'undo';
type Sample = Record<Key, number>;

export async function run({ runs }: BenchOptions): Promise<void> {
  const qemu = await locateQemu();
  const accel = probeAccelerator();
  log(`QEMU ${qemu.version}, accelerator ${accel.accel}; host: ${hostLine()}`);
  warnOfOtherQemus();
  const home = await tempHome();
  const client = await connectService(home);
  let info = await client.create({ name: VM, memoryMiB: MEMORY_MIB });
  const config = readVmConfig(info);
  info = await client.start(VM, undefined, 180_000);
  trackVm(info);

  const ours: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    throwIfAborting();
    ours.push(await runtimeRun(client, i));
    log(`run ${i + 1}/${runs} runtime: ${JSON.stringify(ours[i])}`);
  }
  await client.remove(VM, true);

  const dir = path.join(home, 'raw');
  await fsp.mkdir(dir);
  const raw = new RawQemu(specFromConfig(qemu, accel.accel, config, config.image.disk, dir, 'raw'));
  const theirs: Sample[] = [];
  try {
    await raw.createOverlay();
    raw.spawn(false);
    await raw.waitAgent(180_000);
    for (let i = 0; i < runs; i++) {
      throwIfAborting();
      theirs.push(await rawRun(raw, qemu.img, i));
      log(`run ${i + 1}/${runs} savevm: ${JSON.stringify(theirs[i])}`);
    }
  } finally {
    await raw.dispose();
  }

  const metrics: [string, Key, string][] = [
    ['checkpoint_create_running_ms', 'createRunning', 'ms'],
    ['checkpoint_pause_running_ms', 'pauseRunning', 'ms'],
    ['checkpoint_size_running_bytes', 'sizeRunning', 'bytes'],
    ['checkpoint_apply_running_ms', 'applyRunning', 'ms'],
    ['checkpoint_create_stopped_ms', 'createStopped', 'ms'],
    ['checkpoint_apply_stopped_ms', 'applyStopped', 'ms'],
    ['undo_point_ms', 'undoPoint', 'ms'],
    ['undo_ms', 'undo', 'ms'],
  ];
  for (const [metric, key, unit] of metrics) {
    log(describe(`${metric}, runtime`, ours.map((s) => s[key])));
    log(describe(`${metric}, qemu-internal-snapshot`, theirs.map((s) => s[key])));
    emit({ bench: BENCH, metric, unit, value: median(ours.map((s) => s[key])), peer: 'qemu-internal-snapshot', peer_value: median(theirs.map((s) => s[key])) });
  }
  // The checkpoint figures include new VMs from the template and clones (bench/create.ts).
  await createBench.run({ runs });
}

async function runtimeRun(client: ServiceClient, i: number): Promise<Sample> {
  let t = now();
  const running = await client.createCheckpoint(VM, `run-${i}`);
  const createRunning = now() - t;
  t = now();
  const applied = await client.applyCheckpoint(VM, running.id, { discardCurrent: true });
  const applyRunning = now() - t;
  if (applied.info.state !== 'running') throw new Error(`${VM} is ${applied.info.state} after applying a running checkpoint`);
  trackVm(applied.info);

  t = now();
  await client.createCheckpoint(VM, undefined, { undo: true });
  const undoPoint = now() - t;
  t = now();
  const undone = await client.undo(VM);
  const undo = now() - t;
  trackVm(undone.info);

  await client.stop(VM, true);
  t = now();
  const stopped = await client.createCheckpoint(VM, `stop-${i}`);
  const createStopped = now() - t;
  t = now();
  await client.applyCheckpoint(VM, stopped.id, { discardCurrent: true });
  const applyStopped = now() - t;
  trackVm(await client.start(VM, undefined, 180_000));
  return { createRunning, pauseRunning: running.pausedMs ?? NaN, sizeRunning: running.sizeBytes, applyRunning, createStopped, applyStopped, undoPoint, undo };
}

/** savevm / loadvm on a running raw QEMU; qemu-img snapshot -c / -a once it has quit. */
async function rawRun(raw: RawQemu, qemuImg: string, i: number): Promise<Sample> {
  const hmp = async (command: string) => {
    const out = await raw.qmp!.execute<string>('human-monitor-command', { 'command-line': command });
    if (out.trim()) throw new Error(`${command}: ${out.trim()}`);
  };
  const size0 = statSync(raw.disk).blocks * 512;
  let t = now();
  await hmp(`savevm run-${i}`);
  const createRunning = now() - t;
  const sizeRunning = statSync(raw.disk).blocks * 512 - size0;
  t = now();
  await hmp(`loadvm run-${i}`);
  const applyRunning = now() - t;
  t = now();
  await hmp(`savevm undo-${i}`);
  const undoPoint = now() - t;
  t = now();
  await hmp(`loadvm undo-${i}`);
  const undo = now() - t;

  await raw.qmp!.execute('quit').catch(() => undefined);
  await raw.kill();
  t = now();
  await img(qemuImg, ['snapshot', '-c', `stop-${i}`, raw.disk]);
  const createStopped = now() - t;
  t = now();
  await img(qemuImg, ['snapshot', '-a', `stop-${i}`, raw.disk]);
  const applyStopped = now() - t;
  raw.spawn(false);
  await raw.waitAgent(180_000);
  return { createRunning, pauseRunning: createRunning, sizeRunning, applyRunning, createStopped, applyStopped, undoPoint, undo };
}

function img(qemuImg: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile(qemuImg, args, (err, _o, stderr) => (err ? reject(new Error(`qemu-img ${args.join(' ')}: ${stderr || err.message}`)) : resolve())));
}
