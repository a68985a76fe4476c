/**
 * `npm run bench -- sync`: workspace sync, host to guest (runtime/sync), against what users reach
 * for without it, on the same guest:
 *   first_sync_s          a generated 5,000-file, ~100 MB tree (bench/lib/syncTree.ts: many small
 *                         files, some medium, a few large) into an empty guest folder, from
 *                         `sync.add` until the guest has applied the last file; peers: `rsync -a`
 *                         over ssh, and `tar c | ssh tar x`
 *   change_visible_ms     one file changed on the host until the guest has renamed it into place
 *   change_visible_p95_ms (the guest's ack reaches the host right after the rename); median and
 *                         p95; peer: `rsync -a` of the tree over ssh (a new connection each time)
 * Setup, as bench/agent.ts: a temporary home and service, an image with sshd and rsync
 * (SANDBOXVM_EXTRA_PACKAGES), the runtime's VM measured first; then it is stopped and a peer QEMU
 * boots an overlay of its disk with the worker's command line plus an ssh port forward, and the
 * peers run there into fresh folders. The first syncs are one sample each (they take tens of
 * seconds under TCG); the change latencies take 4 x --runs samples (at least 20).
 * vCPUs: the VM has SANDBOXVM_BENCH_SYNC_CPUS of them (default 2: the guest's native writer runs
 * one writer thread per vCPU, and QEMU's MTTCG gives each vCPU a host thread); the peers' QEMU has
 * the same. Stated in the results as `first_sync_vcpus`, and the first sync's phases (the sync's
 * own timings: connect and host scan side by side, the guest's manifest, the copy) as
 * `first_sync_<phase>_ms` with the whole first sync as their peer (ratio: the share of it).
 */
import { promises as fsp } from 'node:fs';
import * as fs from 'node:fs';
import { loadavg } from 'node:os';
import * as path from 'node:path';
import { probeAccelerator } from '../runtime/accel/probe';
import { locateQemu } from '../runtime/qemu/locate';
import { SyncClient } from '../runtime/client/syncClient';
import type { SyncStatus } from '../runtime/sync/types';
import { throwIfAborting, waitGone } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import type { BenchOptions } from './lib/options';
import { describe, emit, log } from './lib/output';
import { PeerQemu, freePort, type PeerQemuSpec } from './lib/peerQemu';
import { delay, mustRun, runProc } from './lib/proc';
import { specFromConfig } from './lib/rawQemu';
import { connectService, readVmConfig, runCli, trackVm } from './lib/runtime';
import { makeKey, Ssh, TARGET } from './lib/ssh';
import { median, now, percentile } from './lib/stats';
import { generateTree } from './lib/syncTree';

export const summary = 'workspace sync: first sync of a 5,000-file ~100 MB tree and one change visible in the guest, vs rsync and tar over ssh';

const VM = 'syncbench';
const EXTRA_PACKAGES = 'openssh-server qemu-guest-agent rsync';
const FILES = 5000;
const BYTES = 100_000_000;
const GUEST_SYNC = '/root/synced';
const GUEST_RSYNC = '/root/rsync-tree';
const GUEST_TAR = '/root/tar-tree';
const BOOT_TIMEOUT_MS = 180_000;
const CPUS = Number(process.env.SANDBOXVM_BENCH_SYNC_CPUS ?? 2);

/** What bench/workspace.ts adds to this benchmark's run, on the same guests. */
export interface SyncBenchHooks {
  /** The name in the result lines (default 'sync'). */
  bench?: string;
  /** Guest packages (default: sshd, qemu-guest-agent, rsync). */
  extraPackages?: string;
  /**
   * After the change latencies, the VM running: changes the host tree and returns a guest shell
   * command (run in the synced folder) and the output it gives once the sync has caught up.
   */
  afterChanges?(tree: string): Promise<{ command: string; expect: string }>;
  /** Paths (relative to the tree) the rsync and tar peers leave out, so they copy what the first sync copied. */
  peerExcludes?: string[];
  /** More QEMU arguments for the peer VM (made in its directory `dir`). */
  peerArgs?(dir: string, tree: string, memoryMiB: number): Promise<string[]>;
  /** On the peer VM, after the sync figures: `guestTree` is the runtime's synced copy (the peer boots an overlay of its disk). */
  onPeer?(ctx: { ssh: Ssh; tree: string; guestTree: string; dir: string; results: SyncFigures }): Promise<void>;
}

export interface SyncFigures {
  firstSync: number;
  rsyncFirst: number;
  tarFirst: number;
  latencies: number[];
  rsyncChanges: number[];
}

export async function run({ runs }: BenchOptions, hooks: SyncBenchHooks = {}): Promise<void> {
  const benchName = hooks.bench ?? 'sync';
  const excludes = (hooks.peerExcludes ?? []).map((p) => `--exclude='${p.replace(/'/g, '')}'`).join(' ');
  const changes = Math.max(20, runs * 4);
  const qemu = await locateQemu();
  const accel = probeAccelerator();
  log(`QEMU ${qemu.version}, accelerator ${accel.accel}; host: ${hostLine()}`);
  warnOfOtherQemus();

  const home = await tempHome();
  process.env.SANDBOXVM_EXTRA_PACKAGES = hooks.extraPackages ?? EXTRA_PACKAGES;
  const client = await connectService(home);
  const tree = path.join(home, 'tree');
  const hashes = generateTree(tree, { files: FILES, bytes: BYTES, seed: 1 });
  const bytes = [...hashes.keys()].reduce((n, rel) => n + fs.statSync(path.join(tree, rel)).size, 0);
  log(`generated ${hashes.size} files, ${(bytes / 1e6).toFixed(1)} MB in ${tree}`);
  const { key, publicKey } = await makeKey(home);

  let info = await client.create({ name: VM, memoryMiB: 1024, cpus: CPUS }, (s, t, m) => log(`image: ${s}/${t} ${m}`));
  const template = readVmConfig(info);
  info = await client.start(VM, undefined, BOOT_TIMEOUT_MS);
  trackVm(info);
  const put = await runCli(['exec', VM, '--', 'sh', '-c', 'umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys && test -x /usr/bin/rsync && sync'], home, { input: `${publicKey}\n`, timeoutMs: 120_000 });
  if (put.code !== 0) throw new Error(`preparing the guest failed (no rsync in the image? SANDBOXVM_EXTRA_PACKAGES): ${put.stderr}`);

  // ---- the runtime
  const syncs = new SyncClient(client);
  let latest: SyncStatus | undefined;
  let wake: (() => void) | undefined;
  await syncs.onStatus((s) => {
    if (s.vm !== VM) return;
    latest = s;
    wake?.();
  });
  const until = async (what: string, ok: (s: SyncStatus) => boolean, timeoutMs: number): Promise<SyncStatus> => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (latest && ok(latest)) return latest;
      if (latest?.state === 'error') log(`sync: ${latest.message}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last status: ${latest?.message})`);
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, 1000);
      });
    }
  };
  const t0 = now();
  const added = await syncs.add(VM, { hostDir: tree, guestPath: GUEST_SYNC });
  await until('the first sync', (s) => s.id === added.id && s.state === 'in-sync' && s.lastSyncAt !== undefined, 900_000);
  const firstSync = (now() - t0) / 1000;
  const phases = latest!.phases;
  log(`runtime: first sync ${firstSync.toFixed(2)} s (${latest!.files} files, ${(latest!.bytes / 1e6).toFixed(1)} MB, ${CPUS} vCPU(s)); phases: ${JSON.stringify(phases)}; host load ${loadavg()[0].toFixed(2)}`);
  const check = await runCli(['exec', VM, '--', 'sh', '-c', `find ${GUEST_SYNC} -type f | wc -l`], home, { timeoutMs: 120_000 });
  if (Number(check.stdout.trim()) !== FILES) throw new Error(`the guest has ${check.stdout.trim()} files after the sync, not ${FILES}`);

  const files = [...hashes.keys()].filter((p) => p.endsWith('.ts'));
  const latencies: number[] = [];
  for (let i = 0; i < changes; i++) {
    throwIfAborting();
    await delay(300);
    const rel = files[i % files.length];
    const before = latest?.lastSyncAt ?? 0;
    const t = now();
    const wall = Date.now();
    fs.appendFileSync(path.join(tree, rel), `// change ${i}\n`);
    await until('a change in the guest', (s) => s.state === 'in-sync' && (s.lastSyncAt ?? 0) > before && (s.lastSyncAt ?? 0) >= wall, 60_000);
    latencies.push(now() - t);
  }
  log(`runtime: ${describe('one change visible in the guest', latencies)}`);
  if (hooks.afterChanges) {
    const { command, expect } = await hooks.afterChanges(tree);
    const deadline = Date.now() + 900_000;
    for (let said = ''; said !== expect; ) {
      if (Date.now() > deadline) throw new Error(`the guest never caught up with the host's changes: ${command} says ${said}, not ${expect}`);
      await delay(2000);
      const r = await runCli(['exec', VM, '--', 'sh', '-c', `cd ${GUEST_SYNC} && ${command}`], home, { timeoutMs: 120_000 });
      said = r.stdout.trim();
      log(`guest: ${command} says ${said || r.stderr.trim()} (the host: ${expect})`);
    }
  }
  await syncs.remove(VM);
  const pids: [number, string][] = [];
  if (info.runtime?.workerPid) pids.push([info.runtime.workerPid, 'worker.js']);
  if (info.runtime?.qemuPid) pids.push([info.runtime.qemuPid, 'qemu-system']);
  await client.stop(VM);
  await waitGone(pids, 15_000);

  // ---- the peers, on an overlay of the same disk
  throwIfAborting();
  const dir = path.join(home, 'peer');
  await fsp.mkdir(dir);
  const sshPort = await freePort();
  const base = specFromConfig(qemu, accel.accel, template, info.paths.disk, dir, VM);
  const spec: PeerQemuSpec = { ...base, sshPort, extraArgs: hooks.peerArgs ? await hooks.peerArgs(dir, tree, base.memoryMiB) : [] };
  const vm = new PeerQemu(spec);
  const ssh = new Ssh(key, sshPort, dir);
  const sshCommand = ['ssh', ...ssh.options(), '-p', String(sshPort)].join(' ');
  try {
    await vm.createOverlay();
    vm.spawn();
    await vm.waitAgent(BOOT_TIMEOUT_MS);
    const died = vm.died('waiting for sshd');
    died.catch(() => undefined);
    await ssh.waitReady(180_000, died);
    await delay(3000);
    const rsyncExcludes = (hooks.peerExcludes ?? []).map((p) => `--exclude=${p}`);
    const rsync = () => runProc('rsync', ['-a', '--delete', ...rsyncExcludes, '-e', sshCommand, `${tree}/`, `${TARGET}:${GUEST_RSYNC}/`], { timeoutMs: 900_000, match: 'rsync' });
    const first = await rsync();
    if (first.code !== 0) throw new Error(`rsync failed: ${first.stderr.trim()}`);
    log(`peer: rsync -a over ssh, first sync ${(first.ms / 1000).toFixed(2)} s`);
    const tar = await runProc('sh', ['-c', `tar -C '${tree}' ${excludes} -cf - . | ${sshCommand} ${TARGET} 'mkdir -p ${GUEST_TAR} && tar -C ${GUEST_TAR} -xf -'`], { timeoutMs: 900_000, match: 'sh' });
    if (tar.code !== 0) throw new Error(`tar over ssh failed: ${tar.stderr.trim()}`);
    log(`peer: tar | ssh tar x, first sync ${(tar.ms / 1000).toFixed(2)} s`);
    const rsyncChanges: number[] = [];
    for (let i = 0; i < Math.max(5, Math.ceil(changes / 2)); i++) {
      throwIfAborting();
      fs.appendFileSync(path.join(tree, files[i % files.length]), `// peer change ${i}\n`);
      const r = await rsync();
      if (r.code !== 0) throw new Error(`rsync failed: ${r.stderr.trim()}`);
      rsyncChanges.push(r.ms);
    }
    log(`peer: ${describe('one change, rsync -a over ssh', rsyncChanges)}`);
    const count = await mustRun('ssh', [...ssh.sshArgs(), TARGET, `find ${GUEST_RSYNC} -type f | wc -l`]);
    if (Number(count.stdout.trim()) !== FILES) throw new Error(`rsync left ${count.stdout.trim()} files, not ${FILES}`);

    emit({ bench: benchName, metric: 'first_sync_s', unit: 's', value: firstSync, peer: 'rsync-ssh', peer_value: first.ms / 1000 });
    emit({ bench: benchName, metric: 'first_sync_s', unit: 's', value: firstSync, peer: 'tar-ssh', peer_value: tar.ms / 1000 });
    emit({ bench: benchName, metric: 'first_sync_vcpus', unit: 'count', value: CPUS, peer: 'rsync-ssh, tar-ssh (same guest)', peer_value: CPUS });
    if (phases) {
      const total = firstSync * 1000;
      emit({ bench: benchName, metric: 'first_sync_connect_ms', unit: 'ms', value: phases.connectMs, peer: 'first_sync_ms', peer_value: total });
      emit({ bench: benchName, metric: 'first_sync_scan_ms', unit: 'ms', value: phases.scanMs, peer: 'first_sync_ms', peer_value: total });
      emit({ bench: benchName, metric: 'first_sync_manifest_ms', unit: 'ms', value: phases.manifestMs, peer: 'first_sync_ms', peer_value: total });
      emit({ bench: benchName, metric: `first_sync_copy_${phases.writer}_ms`, unit: 'ms', value: phases.pushMs, peer: 'first_sync_ms', peer_value: total });
    }
    emit({ bench: benchName, metric: 'change_visible_ms', unit: 'ms', value: median(latencies), peer: 'rsync-ssh', peer_value: median(rsyncChanges) });
    emit({ bench: benchName, metric: 'change_visible_p95_ms', unit: 'ms', value: percentile(latencies, 95), peer: 'rsync-ssh', peer_value: percentile(rsyncChanges, 95) });
    await hooks.onPeer?.({ ssh, tree, guestTree: GUEST_SYNC, dir, results: { firstSync, rsyncFirst: first.ms / 1000, tarFirst: tar.ms / 1000, latencies, rsyncChanges } });
  } finally {
    await vm.dispose();
  }
}
