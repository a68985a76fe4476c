/**
 * `npm run bench -- ports`: a forwarded port, through the runtime's channel forward (the worker's
 * listener, a `connect` session, the guest relay) versus QEMU user networking's hostfwd (added at
 * run time with QMP `human-monitor-command` `hostfwd_add`) and `ssh -L`, all to the same guest
 * server: bench/guest/tcpbench.c, static, 8 pre-forked processes, so the guest side costs the same
 * for every path.
 *
 *   port_connect_ms / port_connect_p95_ms  a new connection: connect, one byte sent, its echo read
 *       back (the first byte is the server's mode), close; median and p95
 *   port_up_MiBps / port_down_MiBps  64 MiB host -> guest (the server counts it and answers the
 *       count) and guest -> host (the server writes it), MiB/s; for these a ratio above 1 means the
 *       runtime is faster
 *
 * Setup: a temporary home and service with SANDBOXVM_EXTRA_PACKAGES="openssh-server
 * qemu-guest-agent" (the agent bench's image, so the two share it). The runtime VM gets a throwaway
 * ssh key and tcpbench, starts tcpbench on GUEST_PORT, and the runtime forwards it automatically.
 * The peers run on QEMU started by hand with the worker's own command line (lib/peerQemu.ts: an
 * overlay of the runtime VM's disk, hostfwd for ssh); only one VM runs at a time. Order: runtime,
 * peers, runtime again (half of the samples each), so drift in the host's load hits both sides.
 */
import { promises as fsp } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import type { ServiceClient } from '../runtime/client/serviceClient';
import type { VmInfo } from '../runtime/common/status';
import { probeAccelerator } from '../runtime/accel/probe';
import { locateQemu } from '../runtime/qemu/locate';
import { isAlive, onCleanup, throwIfAborting, waitGone, watchPid } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import type { BenchOptions } from './lib/options';
import { describe, emit, log } from './lib/output';
import { PeerQemu, freePort, type PeerQemuSpec } from './lib/peerQemu';
import { delay, runProc } from './lib/proc';
import { buildChanbench } from './lib/rawPort';
import { specFromConfig } from './lib/rawQemu';
import { CLI, connectService, readVmConfig, trackVm } from './lib/runtime';
import { makeKey, Ssh, TARGET } from './lib/ssh';
import { median, now, percentile } from './lib/stats';

export const summary = 'a forwarded port: connect latency and MiB/s each way, channel forward vs QEMU hostfwd vs ssh -L';

const BENCH = 'ports';
const VM = 'ports';
const EXTRA_PACKAGES = 'openssh-server qemu-guest-agent';
const BOOT_TIMEOUT_MS = 180_000;
const SETTLE_MS = 5000;
const GUEST_PORT = 7100;
const TCPBENCH_GUEST_PATH = '/root/tcpbench';
const MiB = 2 ** 20;
const BULK_BYTES = 64 * MiB;

interface Samples {
  connect: number[];
  up: number[];
  down: number[];
}

const empty = (): Samples => ({ connect: [], up: [], down: [] });

export async function run({ runs }: BenchOptions): Promise<void> {
  const counts = { connect: Math.max(50, Math.round(50 * (runs / 5))), bulk: Math.max(2, Math.round(2 * (runs / 5))) };
  const qemu = await locateQemu();
  const accel = probeAccelerator();
  log(`QEMU ${qemu.version}, accelerator ${accel.accel}: ${accel.reason}; host: ${hostLine()}`);
  warnOfOtherQemus();
  log(`samples per path: ${counts.connect} connections, ${counts.bulk} x ${BULK_BYTES / MiB} MiB each way`);

  const home = await tempHome();
  process.env.SANDBOXVM_EXTRA_PACKAGES = EXTRA_PACKAGES;
  const client = await connectService(home);
  const cliEnv = { ...process.env, SANDBOXVM_HOME: home };
  const { key, publicKey } = await makeKey(home);
  const tcpbench = path.join(home, 'tcpbench');
  await buildChanbench(path.join(__dirname, 'guest', 'tcpbench.c'), tcpbench);

  let info = await client.create({ name: VM }, (step, total, message) => log(`image: step ${step}/${total}: ${message}`));
  const template = readVmConfig(info);
  info = await startVm(client);
  const cp = await runProc(CLI, ['cp', '-q', tcpbench, `${VM}:${TCPBENCH_GUEST_PATH}`], { env: cliEnv, match: 'sandboxvm' });
  if (cp.code !== 0) throw new Error(`copying tcpbench into the guest failed: ${cp.stderr.trim()}`);
  await guestSh(cliEnv, `umask 077 && mkdir -p /root/.ssh && echo '${publicKey}' > /root/.ssh/authorized_keys && chmod 755 ${TCPBENCH_GUEST_PATH} && sync`);

  const runtime = empty();
  const [first, second] = [Math.ceil(counts.connect / 2), Math.floor(counts.connect / 2)];
  const [bulk1, bulk2] = [Math.ceil(counts.bulk / 2), Math.floor(counts.bulk / 2)];
  await runtimePhase(client, cliEnv, runtime, first, bulk1);
  await stopVm(client, info);

  throwIfAborting();
  const peers = await peerPhase(specFromConfig(qemu, accel.accel, template, info.paths.disk, path.join(home, 'peer'), VM), key, counts.connect, counts.bulk);

  throwIfAborting();
  info = await startVm(client);
  await runtimePhase(client, cliEnv, runtime, second, bulk2);
  await stopVm(client, info);

  for (const [peer, s] of Object.entries(peers)) {
    emit({ bench: BENCH, metric: 'port_connect_ms', unit: 'ms', value: median(runtime.connect), peer, peer_value: median(s.connect) });
    emit({ bench: BENCH, metric: 'port_connect_p95_ms', unit: 'ms', value: percentile(runtime.connect, 95), peer, peer_value: percentile(s.connect, 95) });
    emit({ bench: BENCH, metric: 'port_up_MiBps', unit: 'MiB/s', value: median(runtime.up), peer, peer_value: median(s.up) });
    emit({ bench: BENCH, metric: 'port_down_MiBps', unit: 'MiB/s', value: median(runtime.down), peer, peer_value: median(s.down) });
  }
}

async function startVm(client: ServiceClient): Promise<VmInfo> {
  const t = now();
  const info = await client.start(VM, undefined, BOOT_TIMEOUT_MS);
  trackVm(info);
  if (info.state !== 'running' || !info.runtime?.agent.connected) throw new Error(`${VM} is ${info.state} after start`);
  log(`runtime VM started in ${(now() - t).toFixed(0)} ms`);
  return info;
}

async function stopVm(client: ServiceClient, info: VmInfo): Promise<void> {
  const pids: [number, string][] = [];
  if (info.runtime?.workerPid) pids.push([info.runtime.workerPid, 'worker.js']);
  if (info.runtime?.qemuPid) pids.push([info.runtime.qemuPid, 'qemu-system']);
  const stopped = await client.stop(VM);
  if (stopped.state !== 'stopped') throw new Error(`${VM} is ${stopped.state} after stop`);
  const alive = await waitGone(pids, 15_000);
  if (alive.length > 0) throw new Error(`pid(s) ${alive.join(', ')} still alive after stop`);
}

async function guestSh(env: NodeJS.ProcessEnv, script: string): Promise<void> {
  const r = await runProc(CLI, ['exec', VM, '--', 'sh', '-c', script], { env, match: 'sandboxvm' });
  if (r.code !== 0) throw new Error(`guest: ${script}: exit ${r.code}: ${r.stderr.trim()}`);
}

/** Starts tcpbench in the runtime VM and measures through the port the runtime forwards automatically. */
async function runtimePhase(client: ServiceClient, env: NodeJS.ProcessEnv, into: Samples, connects: number, bulks: number): Promise<void> {
  await guestSh(env, `setsid ${TCPBENCH_GUEST_PATH} ${GUEST_PORT} </dev/null >/dev/null 2>&1 &`);
  const deadline = Date.now() + 60_000;
  let hostPort: number | undefined;
  while (hostPort === undefined) {
    const [list] = await client.listPorts(VM);
    hostPort = list.forwards.find((f) => f.guestPort === GUEST_PORT && f.state === 'active')?.hostPort;
    if (hostPort === undefined) {
      if (Date.now() > deadline) throw new Error(`guest port ${GUEST_PORT} was not forwarded within 60 s: ${JSON.stringify(list)}`);
      await delay(250);
    }
  }
  await delay(SETTLE_MS);
  log(`runtime: tcpbench forwarded automatically to 127.0.0.1:${hostPort}`);
  await measure('channel forward', hostPort, into, connects, bulks);
}

async function peerPhase(raw: ReturnType<typeof specFromConfig>, key: string, connects: number, bulks: number): Promise<Record<string, Samples>> {
  await fsp.mkdir(raw.dir);
  const sshPort = await freePort();
  const spec: PeerQemuSpec = { ...raw, sshPort };
  const vm = new PeerQemu(spec);
  const ssh = new Ssh(key, sshPort, raw.dir);
  const out: Record<string, Samples> = { 'qemu-hostfwd': empty(), 'ssh-L': empty() };
  try {
    await vm.createOverlay();
    vm.spawn();
    await vm.waitAgent(BOOT_TIMEOUT_MS);
    const died = vm.died('waiting for sshd');
    died.catch(() => undefined);
    await ssh.waitReady(120_000, died);
    const started = await ssh.run(`setsid ${TCPBENCH_GUEST_PATH} ${GUEST_PORT} </dev/null >/dev/null 2>&1 &`, { match: 'ssh' });
    if (started.code !== 0) throw new Error(`starting tcpbench over ssh failed: ${started.stderr.trim()}`);

    // hostfwd added at run time, as the runtime could do through its QMP connection.
    const fwdPort = await freePort();
    const answer = await vm.qmp!.execute<string>('human-monitor-command', { 'command-line': `hostfwd_add net0 tcp:127.0.0.1:${fwdPort}-:${GUEST_PORT}` });
    if (typeof answer === 'string' && answer.trim()) throw new Error(`hostfwd_add: ${answer.trim()}`);
    await delay(SETTLE_MS);
    await measure('QEMU hostfwd', fwdPort, out['qemu-hostfwd'], connects, bulks);

    const lPort = await freePort();
    const tunnel = spawn('ssh', [...ssh.sshArgs(['-N', '-o', 'ExitOnForwardFailure=yes', '-L', `127.0.0.1:${lPort}:127.0.0.1:${GUEST_PORT}`]), TARGET], { stdio: 'ignore' });
    watchPid(tunnel.pid, 'ssh');
    const closeTunnel = async () => {
      if (tunnel.exitCode === null && tunnel.signalCode === null) tunnel.kill('SIGTERM');
      for (let i = 0; i < 100 && tunnel.pid && isAlive(tunnel.pid, 'ssh'); i++) await delay(20);
    };
    const unregister = onCleanup('closing the ssh -L tunnel', closeTunnel);
    try {
      await waitListening(lPort, 60_000);
      await delay(SETTLE_MS);
      await measure('ssh -L', lPort, out['ssh-L'], connects, bulks);
    } finally {
      await closeTunnel();
      unregister();
    }
  } finally {
    await vm.dispose();
  }
  return out;
}

async function measure(label: string, port: number, into: Samples, connects: number, bulks: number): Promise<void> {
  const c: number[] = [];
  for (let i = 0; i < connects; i++) c.push(await connectEcho(port));
  into.connect.push(...c);
  log(`${label}: ${describe('connect + 1-byte echo', c)}, p95 ${percentile(c, 95).toFixed(2)} ms`);
  for (let i = 0; i < bulks; i++) {
    const up = await sink(port, BULK_BYTES);
    const down = await source(port, BULK_BYTES);
    into.up.push(up);
    into.down.push(down);
    log(`${label}: ${BULK_BYTES / MiB} MiB up ${up.toFixed(1)} MiB/s, down ${down.toFixed(1)} MiB/s`);
  }
}

function open(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true, noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** ms from connect() to the echo of one byte (mode 'e'). */
async function connectEcho(port: number): Promise<number> {
  const t0 = now();
  const s = await open(port);
  const echoed = new Promise<void>((resolve, reject) => {
    s.once('data', () => resolve());
    s.once('close', () => reject(new Error(`the connection to ${port} closed before the echo`)));
  });
  s.write('ex');
  await echoed;
  const ms = now() - t0;
  s.destroy();
  return ms;
}

/** Host -> guest: MiB/s until the server's byte count arrives. */
async function sink(port: number, bytes: number): Promise<number> {
  const s = await open(port);
  const chunk = Buffer.alloc(256 * 1024, 7);
  const t0 = now();
  const counted = new Promise<bigint>((resolve, reject) => {
    const got: Buffer[] = [];
    s.on('data', (d: Buffer) => got.push(d));
    s.once('close', () => {
      const all = Buffer.concat(got);
      if (all.length === 8) resolve(all.readBigUInt64BE(0));
      else reject(new Error(`sink on ${port}: the server answered ${all.length} bytes`));
    });
  });
  s.write('s');
  let sent = 0;
  while (sent < bytes) {
    const n = Math.min(chunk.length, bytes - sent);
    sent += n;
    if (!s.write(n === chunk.length ? chunk : chunk.subarray(0, n))) await new Promise((r) => s.once('drain', r));
  }
  s.end();
  const n = await counted;
  if (n !== BigInt(bytes)) throw new Error(`sink on ${port}: the server counted ${n} of ${bytes} bytes`);
  return bytes / MiB / ((now() - t0) / 1000);
}

/** Guest -> host: MiB/s until the server closes after `bytes`. */
async function source(port: number, bytes: number): Promise<number> {
  const s = await open(port);
  const t0 = now();
  const request = Buffer.alloc(9);
  request.write('r');
  request.writeBigUInt64BE(BigInt(bytes), 1);
  let got = 0;
  const done = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => (got += d.length));
    s.once('close', () => resolve());
  });
  s.end(request);
  await done;
  if (got !== bytes) throw new Error(`source on ${port}: received ${got} of ${bytes} bytes`);
  return bytes / MiB / ((now() - t0) / 1000);
}

async function waitListening(port: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const ok = await open(port).then(
      (s) => (s.destroy(), true),
      () => false,
    );
    if (ok) return;
    if (Date.now() > deadline) throw new Error(`nothing listened on 127.0.0.1:${port} within ${timeoutMs} ms`);
    await delay(200);
  }
}
