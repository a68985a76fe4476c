/**
 * `npm run bench -- boot`: how long until a VM's guest agent answers, through the runtime versus
 * raw QEMU started by hand with the same kernel, initrd, base image and flags.
 *
 *   create_start_to_agent_ms  ServiceClient create + start of a new VM (512 MiB) until start()
 *                             resolves; peer: qemu-img overlay + spawn until the agent answers hello
 *   restore_to_agent_ms       ServiceClient start of a saved VM; peer: spawn with -incoming, cont,
 *                             until the agent answers hello
 *   save_ms                   ServiceClient save of a running VM; peer: stop, migrate to a file, quit
 *
 * One temporary home and service for the whole benchmark (its start is not timed); an untimed
 * warm-up create makes sure the image cache is warm. Runs alternate which side goes first (ABBA)
 * so drift in the host's load hits both alike; only one VM runs at any time.
 */
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import type { ServiceClient } from '../runtime/client/serviceClient';
import type { VmConfig } from '../runtime/common/config';
import type { VmInfo } from '../runtime/common/status';
import { probeAccelerator } from '../runtime/accel/probe';
import type { Accelerator } from '../runtime/qemu/argv';
import { locateQemu, type QemuInstall } from '../runtime/qemu/locate';
import type { BenchOptions } from './lib/options';
import { throwIfAborting } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import { describe, emit, log } from './lib/output';
import { RawQemu, rawArgv, specFromConfig, type RawQemuSpec } from './lib/rawQemu';
import { connectService, readVmConfig, removeVm, trackVm } from './lib/runtime';
import { median, now } from './lib/stats';

export const summary = 'create+start and restore until the guest agent answers (and save), runtime vs raw QEMU';

const BENCH = 'boot';
const PEER = 'raw-qemu';
const MEMORY_MIB = 512;
const BOOT_TIMEOUT_MS = 180_000;

interface Sample {
  boot: number;
  save: number;
  restore: number;
}

interface Context {
  client: ServiceClient;
  home: string;
  qemu: QemuInstall;
  accel: Accelerator;
  /** The configuration the runtime gives a new VM: the peer copies its image and flags. */
  template: VmConfig;
}

export async function run({ runs }: BenchOptions): Promise<void> {
  const qemu = await locateQemu();
  const accel = probeAccelerator();
  log(`QEMU ${qemu.version} (${qemu.system}), accelerator ${accel.accel}: ${accel.reason}`);
  log(`host: ${hostLine()}`);
  warnOfOtherQemus();

  const home = await tempHome();
  log(`home ${home}; starting the service from dist/`);
  const client = await connectService(home);

  // Untimed warm-up: builds the base image if the cache is cold, and shows what a new VM gets.
  const t0 = now();
  const warm = await client.create({ name: 'warmup', memoryMiB: MEMORY_MIB });
  const template = readVmConfig(warm);
  await client.remove(warm.name, true);
  const warmMs = now() - t0;
  log(`warm-up create took ${warmMs.toFixed(0)} ms${warmMs > 20_000 ? ' (the image was built: the cache was cold)' : ''}; image ${template.image.hash}: ${path.dirname(template.image.disk)}`);
  log(`VM shape: ${template.cpus} cpu, ${template.memoryMiB} MiB, ${template.diskGiB} GiB disk, network ${template.network}`);

  const ctx: Context = { client, home, qemu, accel: accel.accel, template };
  const runtime: Sample[] = [];
  const raw: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    const order = i % 2 === 0 ? (['runtime', 'raw'] as const) : (['raw', 'runtime'] as const);
    for (const side of order) {
      throwIfAborting();
      if (side === 'runtime') runtime.push(await runtimeRun(ctx, i, runs));
      else raw.push(await rawRun(ctx, i, runs));
    }
  }

  for (const [label, key] of [['create+start to agent', 'boot'], ['restore to agent', 'restore'], ['save', 'save']] as const) {
    log(describe(`${label}, runtime`, runtime.map((s) => s[key])));
    log(describe(`${label}, ${PEER}`, raw.map((s) => s[key])));
  }
  const line = (metric: string, key: keyof Sample) =>
    emit({ bench: BENCH, metric, unit: 'ms', value: median(runtime.map((s) => s[key])), peer: PEER, peer_value: median(raw.map((s) => s[key])) });
  line('create_start_to_agent_ms', 'boot');
  line('restore_to_agent_ms', 'restore');
  line('save_ms', 'save');
}

/** The runtime: create + start (timed together), save, start again (a restore), remove. */
async function runtimeRun(ctx: Context, i: number, runs: number): Promise<Sample> {
  const { client } = ctx;
  const name = `b${i}`;
  const tag = `run ${i + 1}/${runs} runtime`;
  let info: VmInfo;
  try {
    const t0 = now();
    await client.create({ name, memoryMiB: MEMORY_MIB });
    const tCreated = now();
    info = await client.start(name, undefined, BOOT_TIMEOUT_MS);
    const boot = now() - t0;
    trackVm(info);
    checkStarted(ctx, info, 'boot');
    checkSameArgv(ctx, info, false);
    log(`${tag}: create+start ${boot.toFixed(0)} ms (create ${(tCreated - t0).toFixed(0)}, worker spawn to agent ${info.runtime!.boot!.readyMs})`);

    let t = now();
    info = await client.save(name);
    const save = now() - t;
    if (info.state !== 'saved') throw new Error(`${name} is ${info.state} after save`);

    t = now();
    info = await client.start(name, undefined, BOOT_TIMEOUT_MS);
    const restore = now() - t;
    trackVm(info);
    checkStarted(ctx, info, 'restore');
    checkSameArgv(ctx, info, true);
    log(`${tag}: save ${save.toFixed(0)} ms, restore ${restore.toFixed(0)} ms (worker spawn to agent ${info.runtime!.boot!.readyMs})`);
    await removeRuntimeVm(client, name);
    return { boot, save, restore };
  } catch (err) {
    // The VM goes either way; a failure to remove it must not hide why the run failed.
    await removeRuntimeVm(client, name).catch((e: Error) => log(`removing ${name} after a failure: ${e.message}`));
    throw err;
  }
}

/** Removes a VM of the runtime (if it exists) and waits until its worker and QEMU are gone. */
async function removeRuntimeVm(client: ServiceClient, name: string): Promise<void> {
  const current = await client.info(name).catch(() => undefined);
  if (!current) return;
  trackVm(current);
  await removeVm(client, current);
}

/** The peer: qemu-img overlay + spawn (timed together), save over QMP, spawn with -incoming, kill. */
async function rawRun(ctx: Context, i: number, runs: number): Promise<Sample> {
  const { template } = ctx;
  const tag = `run ${i + 1}/${runs} ${PEER}`;
  const dir = path.join(ctx.home, `raw${i}`);
  await fsp.mkdir(dir);
  const vm = new RawQemu(peerSpec(ctx, dir, `r${i}`));
  try {
    const t0 = now();
    await vm.createOverlay();
    const tOverlay = now();
    vm.spawn(false);
    await vm.waitAgent(BOOT_TIMEOUT_MS);
    const boot = now() - t0;
    log(`${tag}: overlay+boot ${boot.toFixed(0)} ms (overlay ${(tOverlay - t0).toFixed(0)}, spawn to agent ${(now() - tOverlay).toFixed(0)})`);

    let t = now();
    await vm.save();
    const save = now() - t;

    t = now();
    vm.spawn(true);
    await vm.waitRestoredAgent(BOOT_TIMEOUT_MS);
    const restore = now() - t;
    log(`${tag}: save ${save.toFixed(0)} ms, restore ${restore.toFixed(0)} ms`);
    return { boot, save, restore };
  } finally {
    await vm.dispose();
    await fsp.rm(dir, { recursive: true, force: true });
  }
}

function checkStarted(ctx: Context, info: VmInfo, kind: 'boot' | 'restore'): void {
  const rt = info.runtime;
  if (info.state !== 'running' || !rt?.agent.connected) throw new Error(`${info.name} is ${info.state} (agent connected: ${rt?.agent.connected}) after start`);
  if (rt.boot?.kind !== kind) throw new Error(`${info.name} started by ${rt.boot?.kind}, expected ${kind}`);
  if (rt.accel !== ctx.accel) throw new Error(`the runtime uses ${rt.accel} but the peer would use ${ctx.accel}: not comparable`);
}

/** The peer's VM: the image and shape the runtime gives a new VM (read from its vm.json). */
function peerSpec(ctx: Context, dir: string, hostname: string): RawQemuSpec {
  return specFromConfig(ctx.qemu, ctx.accel, ctx.template, ctx.template.image.disk, dir, hostname);
}

/**
 * The peer must run the same QEMU command line as the worker. The worker logs it ("spawning ...");
 * built for the runtime VM's own directory and hostname, the peer's argv must match it exactly.
 */
function checkSameArgv(ctx: Context, info: VmInfo, restore: boolean): void {
  const expected = `spawning ${ctx.qemu.system} ${rawArgv(peerSpec(ctx, info.paths.dir, info.name), restore, 'listening').join(' ')}`;
  const lines = readFileSync(info.paths.workerLog, 'utf8').split('\n').filter((l) => l.includes('spawning '));
  const last = lines[lines.length - 1] ?? '';
  if (!last.endsWith(expected)) {
    log(`warning: the worker's QEMU command line differs from the peer's:\n  worker: ${last}\n  peer:   ${expected}`);
  }
}
