/**
 * `npm run bench -- create`: a new VM to a working exec, from the template (instant create) versus
 * a cold boot and versus raw QEMU restoring the same template state; and clone times.
 *
 *   create_start_exec_ms   client create + start + SessionClient exec of `true` succeeding, the
 *                          default configuration (1 CPU, 1 GiB), restored from the template;
 *                          peers: the same with a cold boot (the VM's saved state discarded), and
 *                          raw QEMU (`-incoming exec:cat <template memory>` on an overlay of the
 *                          template's disk) until its agent's hello
 *   template_restore_phases  where the restore's time goes (stderr only): service create, worker
 *                          spawn, QMP greeting, state loaded, agent answer, identity, first exec
 *   clone_linked_ms        clone of a running VM (live checkpoint + overlay); peer: `qemu-img create`
 *                          of an overlay
 *   clone_full_ms          clone --full of a stopped VM (qemu-img convert); peer: `qemu-img convert`
 *                          of the same disk by hand
 *
 * One temporary home and service. The template (shared image cache) is built first if missing.
 */
import { execFile, spawn } from 'node:child_process';
import type { Socket } from 'node:net';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { probeAccelerator } from '../runtime/accel/probe';
import type { ServiceClient } from '../runtime/client/serviceClient';
import { VM_FILES } from '../runtime/common/paths';
import { locateQemu } from '../runtime/qemu/locate';
import type { BenchOptions } from './lib/options';
import { throwIfAborting } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import { describe, emit, log } from './lib/output';
import { RawChannel } from './lib/channel';
import { watchPid } from './lib/cleanup';
import type { VmConfig } from '../runtime/common/config';
import { buildQemuArgv, shellQuote, type Accelerator } from '../runtime/qemu/argv';
import type { QemuInstall } from '../runtime/qemu/locate';
import { QmpClient } from '../runtime/qemu/qmp';
import { connectService, readVmConfig, trackVm } from './lib/runtime';
import { median, now } from './lib/stats';

export const summary = 'create + start to a working exec from the template vs cold boot vs raw QEMU restore; linked and full clone';

const BENCH = 'create';

export async function run({ runs }: BenchOptions): Promise<void> {
  const qemu = await locateQemu();
  const accel = probeAccelerator();
  log(`QEMU ${qemu.version}, accelerator ${accel.accel}; host: ${hostLine()}`);
  warnOfOtherQemus();
  const home = await tempHome();
  const client = await connectService(home);
  const template = await client.ensureTemplate();
  if (!template) throw new Error('no template could be built; see the service log');
  log(`template ${template.dir} (booted in ${template.bootMs} ms when built)`);

  const instant: number[] = [];
  const cold: number[] = [];
  const phases: Record<string, number>[] = [];
  let config;
  for (let i = 0; i < runs; i++) {
    throwIfAborting();
    const name = `t${i}`;
    const r = await createStartExec(client, name);
    if (r.kind !== 'restore' || !r.newIdentity) throw new Error(`${name} was not made from the template (boot ${r.kind}); is the template stale? see the service log`);
    instant.push(r.total);
    phases.push(r.phases);
    config ??= r.config;
    await client.remove(name, true);
    const c = await createStartExec(client, `c${i}`, true);
    cold.push(c.total);
    await client.remove(`c${i}`, true);
    log(`run ${i + 1}/${runs}: template ${instant[i].toFixed(0)} ms (${Object.entries(phases[i]).map(([k, v]) => `${k} ${v.toFixed(0)}`).join(', ')}), cold ${cold[i].toFixed(0)} ms`);
  }

  const raw: number[] = [];
  for (let i = 0; i < runs; i++) {
    throwIfAborting();
    const dir = path.join(home, `raw${i}`);
    await fsp.mkdir(dir);
    raw.push(await rawTemplateRestore(qemu, accel.accel, config!, template.dir, dir));
  }
  log(describe('create_start_exec_ms, template', instant));
  log(describe('create_start_exec_ms, cold boot', cold));
  log(describe('create_start_exec_ms, raw QEMU restore of the template (spawn to the agent\'s hello; no create, identity or exec)', raw));
  for (const k of Object.keys(phases[0] ?? {})) log(describe(`  phase ${k} (ms after create began)`, phases.map((p) => p[k])));
  emit({ bench: BENCH, metric: 'create_start_exec_ms', unit: 'ms', value: median(instant), peer: 'cold-boot', peer_value: median(cold) });
  emit({ bench: BENCH, metric: 'create_start_exec_ms', unit: 'ms', value: median(instant), peer: 'raw-qemu-restore', peer_value: median(raw) });

  // Clones of a running VM (linked) and a stopped one (full).
  let info = await client.create({ name: 'src', memoryMiB: 512 });
  info = await client.start('src', undefined, 180_000);
  trackVm(info);
  const linked: number[] = [];
  const overlay: number[] = [];
  for (let i = 0; i < runs; i++) {
    let t = now();
    await client.clone({ name: 'src', newName: `l${i}` });
    linked.push(now() - t);
    const layer = path.join(home, `overlay${i}.qcow2`);
    t = now();
    await img(qemu.img, ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', info.paths.disk, layer]);
    overlay.push(now() - t);
  }
  await client.stop('src', true);
  for (let i = 0; i < runs; i++) await client.remove(`l${i}`, true);
  const full: number[] = [];
  const convert: number[] = [];
  const disk = (await client.info('src')).paths.disk;
  for (let i = 0; i < Math.min(runs, 3); i++) {
    let t = now();
    await client.clone({ name: 'src', newName: `f${i}`, full: true });
    full.push(now() - t);
    await client.remove(`f${i}`, true);
    t = now();
    const out = path.join(home, `convert${i}.qcow2`);
    await img(qemu.img, ['convert', '-f', 'qcow2', '-O', 'qcow2', disk, out]);
    convert.push(now() - t);
    await fsp.rm(out);
  }
  log(describe('clone_linked_ms (running source)', linked));
  log(describe('clone_full_ms (stopped source)', full));
  emit({ bench: BENCH, metric: 'clone_linked_ms', unit: 'ms', value: median(linked), peer: 'qemu-img-create', peer_value: median(overlay) });
  emit({ bench: BENCH, metric: 'clone_full_ms', unit: 'ms', value: median(full), peer: 'qemu-img-convert', peer_value: median(convert) });
}

interface CreateRun {
  total: number;
  kind: string;
  newIdentity: boolean;
  phases: Record<string, number>;
  config: ReturnType<typeof readVmConfig>;
}

/** create + start + exec `true`; `cold` discards the template's state first (so it boots). */
async function createStartExec(client: ServiceClient, name: string, cold = false): Promise<CreateRun> {
  if (cold) {
    await client.create({ name });
    await client.stop(name, false).catch(() => undefined);
  }
  const t0 = now();
  let info = cold ? undefined : await client.create({ name });
  const created = now() - t0;
  info = await client.start(name, undefined, 180_000);
  trackVm(info);
  const started = now() - t0;
  const sessions = await client.attach(name);
  try {
    const session = await sessions.open({ kind: 'exec', argv: ['true'] }, { onData: () => undefined, onExit: () => undefined });
    const r = await session.exited;
    if (r.code !== 0) throw new Error(`exec true in ${name}: ${r.error ?? `exit ${r.code}`}`);
  } finally {
    sessions.dispose();
  }
  const total = now() - t0;
  const boot = info.runtime?.boot;
  // Phases after the spawn are the worker's (ms after QEMU's spawn); the spawn itself is start's time minus the worker's readyMs.
  const spawnAt = started - (boot?.readyMs ?? 0);
  const phases: Record<string, number> = { create: created, workerSpawn: spawnAt };
  for (const [k, v] of Object.entries(boot?.phases ?? {})) phases[k] = spawnAt + v;
  phases.started = started;
  phases.exec = total;
  return { total, kind: boot?.kind ?? '?', newIdentity: !!boot?.newIdentity, phases, config: readVmConfig(info) };
}

function img(qemuImg: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile(qemuImg, args, (err, _o, stderr) => (err ? reject(new Error(`qemu-img ${args[0]}: ${stderr || err.message}`)) : resolve())));
}

/**
 * The peer: QEMU spawned by hand on an overlay of the template's disk, with the template's RAM file
 * mapped privately and its devices-only state loaded (x-ignore-shared), as the worker does; timed
 * from the spawn to the agent's hello. No worker, no service, no new identity.
 */
async function rawTemplateRestore(qemu: QemuInstall, accel: Accelerator, config: VmConfig, templateDir: string, dir: string): Promise<number> {
  await img(qemu.img, ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', path.join(templateDir, 'disk.qcow2'), path.join(dir, VM_FILES.disk), `${config.diskGiB}G`]);
  const argv = buildQemuArgv({
    accel,
    cpus: config.cpus,
    memoryMiB: config.memoryMiB,
    kernel: config.image.kernel,
    initrd: config.image.initrd,
    disk: path.join(dir, VM_FILES.disk),
    consoleLog: path.join(dir, VM_FILES.consoleLog),
    hostname: 'raw',
    network: 'host',
    channelFd: 3,
    qmpFd: 4,
    fdSockets: 'connected',
    memoryFile: { path: path.join(templateDir, 'ram'), share: false },
    incomingDefer: true,
  });
  const t = now();
  const proc = spawn(qemu.system, argv, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'] });
  watchPid(proc.pid, 'qemu-system');
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const exited = new Promise<never>((_, reject) => proc.once('exit', (code) => reject(new Error(`raw QEMU exited (${code}): ${stderr.trim()}`))));
  exited.catch(() => undefined);
  const channel = new RawChannel(proc.stdio[3] as Socket);
  const qmp = new QmpClient(proc.stdio[4] as Socket);
  try {
    const hello = channel.greet(exited);
    hello.catch(() => undefined);
    await Promise.race([qmp.ready, exited]);
    await qmp.execute('migrate-set-capabilities', { capabilities: [{ capability: 'x-ignore-shared', state: true }] });
    await qmp.execute('migrate-incoming', { uri: `exec:cat ${shellQuote(path.join(templateDir, 'memory.state'))}` });
    for (;;) {
      const st = await Promise.race([qmp.execute<{ status: string }>('query-status'), exited]);
      if (st.status === 'running') break;
      if (st.status === 'paused' || st.status === 'postmigrate') {
        await qmp.execute('cont');
        break;
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await hello;
    return now() - t;
  } finally {
    proc.kill('SIGKILL');
    await exited.catch(() => undefined);
  }
}
