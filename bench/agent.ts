/**
 * `npm run bench -- agent`: what working in a running VM costs through the runtime (worker, channel,
 * guest agent) versus what users reach for without it: ssh, scp and qemu-guest-agent.
 *
 *   terminal_rtt_ms / terminal_rtt_p99_ms  one byte written to a raw-mode pty running `cat` and its
 *       echo read back: a SessionClient pty session vs an `ssh -tt` session (median / p99)
 *   exec_true_ms       SessionClient exec of `true` until its exit arrives; peers: `ssh true` over a
 *       ControlMaster connection, and qemu-guest-agent guest-exec /bin/true + guest-exec-status
 *   cli_exec_true_ms   `sandboxvm exec <vm> -- true` (a new CLI process each time); peers: `ssh true`
 *       over a ControlMaster connection, and on a new connection
 *   file_write_MBps / file_read_MBps  100 MiB of random bytes host -> guest /tmp and back:
 *       `sandboxvm cp` vs scp (new connection each time), and vs qemu-guest-agent
 *       guest-file-write/-read (base64 in JSON; capped at 10 MiB, it runs at ~3 MB/s). MB = 10^6 bytes;
 *       for these two, a ratio above 1 means the runtime is faster.
 *   Each of terminal_rtt and file_* is also reported against the raw channel (peer "raw-channel"):
 *       bench/guest/chanbench.c, static, on a virtio-serial port of its own in the peer VM, moving
 *       bytes only (a 1-byte echo; 100 MiB each way in 32 KiB writes): the ceiling under this QEMU.
 *
 * Setup: a temporary home and service started with SANDBOXVM_EXTRA_PACKAGES="openssh-server
 * qemu-guest-agent", so the image (cached apart from the default one: the extras are part of its
 * hash) has sshd and qemu-ga, which the guest init starts when installed. One runtime VM is created
 * and a throwaway ssh key put into its /root/.ssh/authorized_keys through the runtime's exec.
 * The peers cannot reach the runtime's VM (the worker's QEMU has no port forward and no QGA port),
 * so they run against QEMU started by hand with the worker's own command line plus a hostfwd to
 * port 22 and a second virtio-serial port for QGA (lib/peerQemu.ts), booting an overlay of the
 * runtime VM's disk: same image, kernel, memory and cpus. Only one VM runs at a time. Order: runtime
 * (first half of its samples), peers (all), runtime again after a fresh boot (second half), so
 * drift in the host's load hits both sides alike.
 *
 * --runs N scales the sample counts (N=5, the default: 200 round trips, 20 execs, 3 transfers each
 * way per side; never fewer).
 */
import { createHash, randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ServiceClient } from '../runtime/client/serviceClient';
import type { Session, SessionClient } from '../runtime/client/sessionClient';
import type { VmConfig } from '../runtime/common/config';
import type { VmInfo } from '../runtime/common/status';
import { probeAccelerator } from '../runtime/accel/probe';
import type { Accelerator } from '../runtime/qemu/argv';
import { locateQemu, type QemuInstall } from '../runtime/qemu/locate';
import { throwIfAborting, waitGone } from './lib/cleanup';
import { EchoProbe, ECHO_COMMAND } from './lib/echo';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import type { BenchOptions } from './lib/options';
import { describe, emit, log } from './lib/output';
import { PeerQemu, freePort, peerArgv, type PeerQemuSpec } from './lib/peerQemu';
import { delay, runProc, type ProcResult } from './lib/proc';
import { QgaClient } from './lib/qga';
import { CHANBENCH_GUEST_PATH, RAW_PORT_NAME, buildChanbench } from './lib/rawPort';
import { rawArgv, specFromConfig } from './lib/rawQemu';
import { CLI, connectService, readVmConfig, trackVm } from './lib/runtime';
import { makeKey, Ssh, TARGET } from './lib/ssh';
import { median, now, p99, summarize } from './lib/stats';

export const summary = 'terminal round trip, exec and 100 MiB copies through the runtime vs ssh, scp and qemu-guest-agent';

const BENCH = 'agent';
const VM = 'agent';
const EXTRA_PACKAGES = 'openssh-server qemu-guest-agent';
const BOOT_TIMEOUT_MS = 180_000;
/** Time for the guest to go quiet after it answers (sshd, qemu-ga and the agent starting). */
const SETTLE_MS = 5000;
const FILE_BYTES = 100 * 2 ** 20;
const QGA_FILE_BYTES = 10 * 2 ** 20;
/** Bytes per guest-file-write / guest-file-read request. */
const QGA_CHUNK = 1 << 20;
const GUEST_FILE = '/tmp/sandboxvm-bench.bin';
const QGA_GUEST_FILE = '/tmp/sandboxvm-bench-qga.bin';

interface Counts {
  rtt: number;
  exec: number;
  files: number;
}

interface RuntimeSamples {
  rtt: number[];
  exec: number[];
  cliExec: number[];
  /** MB/s */
  write: number[];
  read: number[];
}

interface PeerSamples {
  /** The raw channel (bench/guest/chanbench.c on a port of its own): 1-byte echo ms, MB/s each way. */
  rawRtt: number[];
  rawWrite: number[];
  rawRead: number[];
  sshRtt: number[];
  sshMuxExec: number[];
  sshNewExec: number[];
  qgaExec: number[];
  scpWrite: number[];
  scpRead: number[];
  qgaWrite: number[];
  qgaRead: number[];
}

type CopyMode = 'cp' | 'exec-stdin';

interface Context {
  client: ServiceClient;
  home: string;
  qemu: QemuInstall;
  accel: Accelerator;
  template: VmConfig;
  vmDisk: string;
  vmDir: string;
  workerLog: string;
  key: string;
  source: string;
  sourceHash: string;
  copyMode: CopyMode;
  cliEnv: NodeJS.ProcessEnv;
}

export async function run({ runs }: BenchOptions): Promise<void> {
  const scale = runs / 5;
  const counts: Counts = {
    rtt: Math.max(200, Math.round(200 * scale)),
    exec: Math.max(20, Math.round(20 * scale)),
    files: Math.max(3, Math.round(3 * scale)),
  };
  const qemu = await locateQemu();
  const accel = probeAccelerator();
  log(`QEMU ${qemu.version} (${qemu.system}), accelerator ${accel.accel}: ${accel.reason}`);
  log(`host: ${hostLine()}`);
  warnOfOtherQemus();
  log(`samples per side: ${counts.rtt} round trips, ${counts.exec} execs, ${counts.files} transfers each way`);

  const home = await tempHome();
  // The service builds (or finds) the image with sshd and qemu-ga; the variable is part of the image's hash.
  process.env.SANDBOXVM_EXTRA_PACKAGES = EXTRA_PACKAGES;
  log(`home ${home}; starting the service from dist/ with SANDBOXVM_EXTRA_PACKAGES="${EXTRA_PACKAGES}"`);
  const client = await connectService(home);
  const cliEnv = { ...process.env, SANDBOXVM_HOME: home };

  const { key, publicKey } = await makeKey(home);
  const source = path.join(home, 'source.bin');
  const sourceHash = await writeRandomFile(source, FILE_BYTES);

  let t = now();
  let info = await client.create({ name: VM }, (step, total, message) => log(`image: step ${step}/${total}: ${message}`));
  const template = readVmConfig(info);
  log(`created ${VM} in ${(now() - t).toFixed(0)} ms${now() - t > 20_000 ? ' (the image was built)' : ''}; image ${template.image.hash.slice(0, 16)}: ${path.dirname(template.image.disk)}`);
  log(`VM shape: ${template.cpus} cpu, ${template.memoryMiB} MiB, ${template.diskGiB} GiB disk, network ${template.network}`);

  info = await startVm(client, accel.accel);
  let sessions = await client.attach(VM);
  try {
    const check = await guestRun(sessions, ['sh', '-c', 'test -x /usr/sbin/sshd && test -x /usr/sbin/qemu-ga && echo ok']);
    if (check.stdout.trim() !== 'ok') {
      throw new Error(`the VM's image has no sshd or qemu-ga: SANDBOXVM_EXTRA_PACKAGES was not honoured (is dist/ older than runtime/image/baseImage.ts? run \`npm run build\`)`);
    }
    const put = await guestRun(sessions, ['sh', '-c', 'umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys && sync'], publicKey + '\n');
    if (put.code !== 0) throw new Error(`installing the ssh key failed: ${put.stderr}`);
    log('installed a throwaway ssh key in the guest (/root/.ssh/authorized_keys) through the runtime exec');
  } finally {
    sessions.dispose();
  }
  const probe = path.join(home, 'chanbench');
  await buildChanbench(path.join(__dirname, 'guest', 'chanbench.c'), probe);
  const cp = await runProc(CLI, ['cp', '-q', probe, `${VM}:${CHANBENCH_GUEST_PATH}`], { env: cliEnv, match: 'sandboxvm' });
  if (cp.code !== 0) throw new Error(`copying the raw-channel probe into the guest failed: ${cp.stderr.trim()}`);
  sessions = await client.attach(VM);
  try {
    const made = await guestRun(sessions, ['sh', '-c', `chmod 755 ${CHANBENCH_GUEST_PATH} && sync`]);
    if (made.code !== 0) throw new Error(`chmod of the raw-channel probe failed: ${made.stderr}`);
  } finally {
    sessions.dispose();
  }
  log(`installed the raw-channel probe in the guest (${CHANBENCH_GUEST_PATH}, bench/guest/chanbench.c)`);

  const copyMode = await detectCopyMode(cliEnv);
  const ctx: Context = { client, home, qemu, accel: accel.accel, template, vmDisk: info.paths.disk, vmDir: info.paths.dir, workerLog: info.paths.workerLog, key, source, sourceHash, copyMode, cliEnv };

  const half = (n: number): [number, number] => [Math.ceil(n / 2), n - Math.ceil(n / 2)];
  const [r1, r2] = [half(counts.rtt), half(counts.exec), half(counts.files)].reduce<[Counts, Counts]>(
    (acc, [a, b], i) => {
      const k = (['rtt', 'exec', 'files'] as const)[i];
      acc[0][k] = a;
      acc[1][k] = b;
      return acc;
    },
    [{ rtt: 0, exec: 0, files: 0 }, { rtt: 0, exec: 0, files: 0 }],
  );

  const first = await runtimePhase(ctx, r1, 'runtime (1/2)');
  await stopVm(client, info);

  throwIfAborting();
  const peer = await peerPhase(ctx, counts);

  throwIfAborting();
  info = await startVm(client, accel.accel);
  const second = await runtimePhase(ctx, r2, 'runtime (2/2)');
  await stopVm(client, info);

  const rt: RuntimeSamples = {
    rtt: [...first.rtt, ...second.rtt],
    exec: [...first.exec, ...second.exec],
    cliExec: [...first.cliExec, ...second.cliExec],
    write: [...first.write, ...second.write],
    read: [...first.read, ...second.read],
  };

  const cpLabel = copyMode === 'cp' ? 'sandboxvm cp' : 'sandboxvm exec + stdin/stdout (no cp)';
  log(describe('terminal round trip, runtime pty session', rt.rtt));
  log(describe('terminal round trip, ssh -tt', peer.sshRtt));
  log(describe('exec true, runtime SessionClient', rt.exec));
  log(describe('exec true, sandboxvm exec (CLI)', rt.cliExec));
  log(describe('exec true, ssh over a ControlMaster', peer.sshMuxExec));
  log(describe('exec true, ssh on a new connection', peer.sshNewExec));
  log(describe('exec true, qemu-guest-agent guest-exec + status', peer.qgaExec));
  log(describeRate(`write 100 MiB, ${cpLabel}`, rt.write));
  log(describeRate('write 100 MiB, scp', peer.scpWrite));
  log(describeRate('write 10 MiB, qemu-guest-agent guest-file-write', peer.qgaWrite));
  log(describeRate(`read 100 MiB, ${cpLabel}`, rt.read));
  log(describeRate('read 100 MiB, scp', peer.scpRead));
  log(describeRate('read 10 MiB, qemu-guest-agent guest-file-read', peer.qgaRead));
  if (copyMode !== 'cp') log('NOTE: the file metrics were measured with `sandboxvm exec` and stdin/stdout, not `sandboxvm cp` (not available)');

  const line = (metric: string, unit: string, value: number, peerName: string, peerValue: number) =>
    emit({ bench: BENCH, metric, unit, value, peer: peerName, peer_value: peerValue });
  line('terminal_rtt_ms', 'ms', median(rt.rtt), 'ssh', median(peer.sshRtt));
  line('terminal_rtt_p99_ms', 'ms', p99(rt.rtt), 'ssh', p99(peer.sshRtt));
  line('terminal_rtt_ms', 'ms', median(rt.rtt), 'raw-channel', median(peer.rawRtt));
  line('terminal_rtt_p99_ms', 'ms', p99(rt.rtt), 'raw-channel', p99(peer.rawRtt));
  line('exec_true_ms', 'ms', median(rt.exec), 'ssh-controlmaster', median(peer.sshMuxExec));
  line('exec_true_ms', 'ms', median(rt.exec), 'qemu-guest-agent', median(peer.qgaExec));
  line('cli_exec_true_ms', 'ms', median(rt.cliExec), 'ssh-controlmaster', median(peer.sshMuxExec));
  line('cli_exec_true_ms', 'ms', median(rt.cliExec), 'ssh', median(peer.sshNewExec));
  line('file_write_MBps', 'MB/s', median(rt.write), 'scp', median(peer.scpWrite));
  line('file_write_MBps', 'MB/s', median(rt.write), 'qemu-guest-agent', median(peer.qgaWrite));
  line('file_read_MBps', 'MB/s', median(rt.read), 'scp', median(peer.scpRead));
  line('file_read_MBps', 'MB/s', median(rt.read), 'qemu-guest-agent', median(peer.qgaRead));
  line('file_write_MBps', 'MB/s', median(rt.write), 'raw-channel', median(peer.rawWrite));
  line('file_read_MBps', 'MB/s', median(rt.read), 'raw-channel', median(peer.rawRead));
}

// ---------------------------------------------------------------------------------------------
// The runtime's side

async function startVm(client: ServiceClient, accel: Accelerator): Promise<VmInfo> {
  const t = now();
  const info = await client.start(VM, undefined, BOOT_TIMEOUT_MS);
  trackVm(info);
  const rt = info.runtime;
  if (info.state !== 'running' || !rt?.agent.connected) throw new Error(`${VM} is ${info.state} (agent connected: ${rt?.agent.connected}) after start`);
  if (rt.accel !== accel) throw new Error(`the runtime uses ${rt.accel} but the peer would use ${accel}: not comparable`);
  log(`runtime VM ${VM} started in ${(now() - t).toFixed(0)} ms (${rt.boot?.kind}, worker spawn to agent ${rt.boot?.readyMs} ms)`);
  return info;
}

/** Stops the runtime VM (gracefully: its disk is then complete for the peer's overlay) and waits until its processes are gone. */
async function stopVm(client: ServiceClient, info: VmInfo): Promise<void> {
  const pids: [number, string][] = [];
  if (info.runtime?.workerPid) pids.push([info.runtime.workerPid, 'worker.js']);
  if (info.runtime?.qemuPid) pids.push([info.runtime.qemuPid, 'qemu-system']);
  const stopped = await client.stop(VM);
  if (stopped.state !== 'stopped') throw new Error(`${VM} is ${stopped.state} after stop`);
  const alive = await waitGone(pids, 15_000);
  if (alive.length > 0) throw new Error(`${VM} stopped but pid(s) ${alive.join(', ')} are still alive`);
}

interface GuestRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** Runs argv in the guest through a SessionClient exec session, feeding it `stdin` (then EOF) if given. */
async function guestRun(sessions: SessionClient, argv: string[], stdin?: string): Promise<GuestRun> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  const t0 = now();
  const session = await sessions.open({ kind: 'exec', argv }, { onData: (s, d) => void (s === 2 ? err : out).push(d), onExit: () => undefined });
  if (stdin !== undefined) {
    await session.write(stdin);
    await session.eof();
  }
  const r = await withTimeout(session.exited, 120_000, `exec ${argv.join(' ')}`);
  const ms = now() - t0;
  if (r.error) throw new Error(`exec ${argv.join(' ')}: ${r.error}`);
  return { code: r.code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms };
}

async function runtimePhase(ctx: Context, counts: Counts, tag: string): Promise<RuntimeSamples> {
  const samples: RuntimeSamples = { rtt: [], exec: [], cliExec: [], write: [], read: [] };
  const sessions = await ctx.client.attach(VM);
  try {
    await delay(SETTLE_MS);

    // Terminal round trips through a pty session.
    if (counts.rtt > 0) {
      let session: Session | undefined;
      const probe = new EchoProbe((d) => session!.write(d));
      session = await sessions.open(
        { kind: 'pty', argv: ['/bin/sh', '-c', ECHO_COMMAND], cols: 80, rows: 24, env: { TERM: 'xterm-256color' } },
        { onData: (_s, d) => probe.feed(d), onExit: () => undefined },
      );
      await probe.waitFor('READY', 30_000, 'runtime pty session');
      samples.rtt = await probe.samples(counts.rtt);
      await session.close().catch(() => undefined);
      await withTimeout(session.exited, 10_000, 'closing the pty session').catch((e: Error) => log(`${tag}: ${e.message}`));
      log(`${tag}: ${describe('terminal round trip', samples.rtt)}`);
    }

    // exec `true` through the typed client (one attached SessionClient), then through the CLI.
    if (counts.exec > 0) {
      for (let i = 0; i < 3; i++) await mustExecTrue(sessions);
      for (let i = 0; i < counts.exec; i++) samples.exec.push(await mustExecTrue(sessions));
      log(`${tag}: ${describe('exec true (SessionClient)', samples.exec)}`);
      for (let i = 0; i < 2; i++) await mustCli(ctx, ['exec', VM, '--', 'true']);
      for (let i = 0; i < counts.exec; i++) samples.cliExec.push((await mustCli(ctx, ['exec', VM, '--', 'true'])).ms);
      log(`${tag}: ${describe('exec true (sandboxvm exec)', samples.cliExec)}`);
    }

    // 100 MiB host -> guest, then guest -> host.
    const back = path.join(ctx.home, 'back.bin');
    for (let i = 0; i < counts.files; i++) {
      await guestRun(sessions, ['rm', '-f', GUEST_FILE]);
      const r = await copyIn(ctx);
      samples.write.push(mbps(FILE_BYTES, r.ms));
      if (i === 0) await verifyGuestFile(sessions, ctx.sourceHash);
    }
    if (counts.files > 0) log(`${tag}: ${describeRate(`write 100 MiB (${ctx.copyMode})`, samples.write)}`);
    for (let i = 0; i < counts.files; i++) {
      await fsp.rm(back, { force: true });
      const r = await copyOut(ctx, back);
      samples.read.push(mbps(FILE_BYTES, r.ms));
      if (i === 0) await verifyHostFile(back, ctx.sourceHash, `${tag} read`);
    }
    await fsp.rm(back, { force: true });
    if (counts.files > 0) log(`${tag}: ${describeRate(`read 100 MiB (${ctx.copyMode})`, samples.read)}`);
    await guestRun(sessions, ['rm', '-f', GUEST_FILE]);
  } finally {
    sessions.dispose();
  }
  return samples;
}

async function mustExecTrue(sessions: SessionClient): Promise<number> {
  const r = await guestRun(sessions, ['true']);
  if (r.code !== 0) throw new Error(`exec true exited with ${r.code}`);
  return r.ms;
}

async function mustCli(ctx: Context, args: string[], options: { stdinFile?: string; stdoutFile?: string } = {}): Promise<ProcResult> {
  const r = await runProc(CLI, args, { ...options, env: ctx.cliEnv, timeoutMs: 300_000, match: 'sandboxvm' });
  if (r.code !== 0) throw new Error(`sandboxvm ${args.join(' ')} exited with ${r.signal ?? r.code}: ${r.stderr.trim()}`);
  return r;
}

/** `sandboxvm cp` when the CLI has it (it is being added), else `exec -- sh -c 'cat > FILE'` with stdin. */
async function detectCopyMode(env: NodeJS.ProcessEnv): Promise<CopyMode> {
  const help = await runProc(CLI, ['--help'], { env, match: 'sandboxvm' });
  const has = /^\s*sandboxvm cp\b/m.test(help.stdout + help.stderr);
  log(has ? 'file copies: `sandboxvm cp`' : 'file copies: `sandboxvm cp` is not there; using `sandboxvm exec` with stdin / stdout instead');
  return has ? 'cp' : 'exec-stdin';
}

function copyIn(ctx: Context): Promise<ProcResult> {
  return ctx.copyMode === 'cp'
    ? mustCli(ctx, ['cp', '-q', ctx.source, `${VM}:${GUEST_FILE}`])
    : mustCli(ctx, ['exec', VM, '--', 'sh', '-c', `cat > ${GUEST_FILE}`], { stdinFile: ctx.source });
}

function copyOut(ctx: Context, dst: string): Promise<ProcResult> {
  return ctx.copyMode === 'cp' ? mustCli(ctx, ['cp', '-q', `${VM}:${GUEST_FILE}`, dst]) : mustCli(ctx, ['exec', VM, '--', 'cat', GUEST_FILE], { stdoutFile: dst });
}

async function verifyGuestFile(sessions: SessionClient, hash: string): Promise<void> {
  const r = await guestRun(sessions, ['sha256sum', GUEST_FILE]);
  const got = r.stdout.split(/\s/)[0];
  if (got !== hash) throw new Error(`the guest's copy differs from the source (sha256 ${got || r.stderr.trim()} vs ${hash})`);
}

// ---------------------------------------------------------------------------------------------
// The peers' side

async function peerPhase(ctx: Context, counts: Counts): Promise<PeerSamples> {
  const samples: PeerSamples = { rawRtt: [], rawWrite: [], rawRead: [], sshRtt: [], sshMuxExec: [], sshNewExec: [], qgaExec: [], scpWrite: [], scpRead: [], qgaWrite: [], qgaRead: [] };
  const t = ctx.template;
  const dir = path.join(ctx.home, 'peer');
  await fsp.mkdir(dir);
  const sshPort = await freePort();
  const spec: PeerQemuSpec = { ...specFromConfig(ctx.qemu, ctx.accel, t, ctx.vmDisk, dir, VM), sshPort };
  checkPeerArgv(ctx, spec);
  const vm = new PeerQemu(spec);
  const base = rawArgv(spec, false);
  const argv = peerArgv(spec);
  log(`peer QEMU: the worker's argv with -netdev ${argv.find((a) => a.includes('hostfwd'))} and ${argv.slice(base.length).join(' ')}`);
  const ssh = new Ssh(ctx.key, sshPort, dir);
  try {
    await vm.createOverlay();
    const t0 = now();
    vm.spawn();
    await vm.waitAgent(BOOT_TIMEOUT_MS);
    const tAgent = now() - t0;
    await vm.waitQga(60_000);
    const tQga = now() - t0;
    const died = vm.died('waiting for sshd');
    died.catch(() => undefined);
    const tries = await ssh.waitReady(120_000, died);
    log(`peer QEMU (pid ${vm.pid}, ssh on 127.0.0.1:${sshPort}): sandboxvm agent ${tAgent.toFixed(0)} ms, qemu-guest-agent ${tQga.toFixed(0)} ms, ssh ${(now() - t0).toFixed(0)} ms after spawn (${tries} ssh attempt(s))`);
    await ssh.startMaster();
    await delay(SETTLE_MS);
    const qga = vm.qga!;

    // The raw channel: the probe on its own port, started over ssh, bytes only.
    const raw = vm.raw!;
    const startProbe = (args: string) => ssh.mustRunMux(`setsid ${CHANBENCH_GUEST_PATH} ${RAW_PORT_NAME} ${args} </dev/null >/dev/null 2>&1 &`);
    await startProbe('echo');
    await raw.ready();
    samples.rawRtt = await raw.echo(counts.rtt);
    log(`peer: ${describe('1-byte echo, raw channel', samples.rawRtt)}`);
    for (let i = 0; i < counts.files; i++) {
      await startProbe(`sink ${FILE_BYTES}`);
      await raw.ready();
      samples.rawWrite.push(await raw.sink(FILE_BYTES));
      await startProbe(`source ${FILE_BYTES}`);
      await raw.ready();
      samples.rawRead.push(await raw.source(FILE_BYTES));
    }
    log(`peer: ${describeRate('100 MiB host to guest, raw channel', samples.rawWrite)}`);
    log(`peer: ${describeRate('100 MiB guest to host, raw channel', samples.rawRead)}`);

    // Terminal round trips over ssh -tt.
    const echo = await ssh.openEcho();
    try {
      samples.sshRtt = await echo.probe.samples(counts.rtt);
    } finally {
      await echo.close();
    }
    log(`peer: ${describe('terminal round trip, ssh -tt', samples.sshRtt)}`);

    // exec true: ssh over the ControlMaster, ssh on a new connection, qemu-guest-agent.
    const sshTrue = async (mux: boolean) => {
      const r = mux ? await ssh.runMux('true', { match: 'ssh' }) : await ssh.run('true', { match: 'ssh' });
      if (r.code !== 0) throw new Error(`ssh true exited with ${r.signal ?? r.code}: ${r.stderr.trim()}`);
      return r.ms;
    };
    for (let i = 0; i < 2; i++) await sshTrue(true);
    for (let i = 0; i < counts.exec; i++) samples.sshMuxExec.push(await sshTrue(true));
    log(`peer: ${describe('exec true, ssh over a ControlMaster', samples.sshMuxExec)}`);
    for (let i = 0; i < counts.exec; i++) samples.sshNewExec.push(await sshTrue(false));
    log(`peer: ${describe('exec true, ssh on a new connection', samples.sshNewExec)}`);
    const qgaTrue = async () => {
      const t1 = now();
      const code = await qga.exec('/bin/true');
      if (code !== 0) throw new Error(`qemu-guest-agent: /bin/true exited with ${code}`);
      return now() - t1;
    };
    for (let i = 0; i < 2; i++) await qgaTrue();
    for (let i = 0; i < counts.exec; i++) samples.qgaExec.push(await qgaTrue());
    log(`peer: ${describe('exec true, qemu-guest-agent', samples.qgaExec)}`);

    // 100 MiB with scp, each way.
    const back = path.join(ctx.home, 'back.bin');
    for (let i = 0; i < counts.files; i++) {
      await ssh.mustRunMux(`rm -f ${GUEST_FILE}`);
      const r = await ssh.scp(ctx.source, `${TARGET}:${GUEST_FILE}`);
      if (r.code !== 0) throw new Error(`scp to the guest failed: ${r.stderr.trim()}`);
      samples.scpWrite.push(mbps(FILE_BYTES, r.ms));
      if (i === 0) {
        const sum = (await ssh.mustRunMux(`sha256sum ${GUEST_FILE}`)).stdout.split(/\s/)[0];
        if (sum !== ctx.sourceHash) throw new Error(`scp: the guest's copy differs from the source (${sum} vs ${ctx.sourceHash})`);
      }
    }
    log(`peer: ${describeRate('write 100 MiB, scp', samples.scpWrite)}`);
    for (let i = 0; i < counts.files; i++) {
      await fsp.rm(back, { force: true });
      const r = await ssh.scp(`${TARGET}:${GUEST_FILE}`, back);
      if (r.code !== 0) throw new Error(`scp from the guest failed: ${r.stderr.trim()}`);
      samples.scpRead.push(mbps(FILE_BYTES, r.ms));
      if (i === 0) await verifyHostFile(back, ctx.sourceHash, 'scp read');
    }
    await fsp.rm(back, { force: true });
    await ssh.mustRunMux(`rm -f ${GUEST_FILE}`);
    log(`peer: ${describeRate('read 100 MiB, scp', samples.scpRead)}`);

    // 10 MiB with qemu-guest-agent's file calls, each way.
    await qgaFiles(ctx, qga, ssh, counts.files, samples);
    log(`peer: ${describeRate(`write ${QGA_FILE_BYTES / 2 ** 20} MiB, qemu-guest-agent (${QGA_CHUNK / 1024} KiB per call)`, samples.qgaWrite)}`);
    log(`peer: ${describeRate(`read ${QGA_FILE_BYTES / 2 ** 20} MiB, qemu-guest-agent (${QGA_CHUNK / 1024} KiB per call)`, samples.qgaRead)}`);
  } finally {
    await ssh.stopMaster();
    await vm.dispose();
    await fsp.rm(dir, { recursive: true, force: true });
  }
  return samples;
}

/**
 * The peer must run the worker's QEMU command line (plus its additions). The worker logs it
 * ("spawning ..."); rawArgv for the runtime VM's own directory must match it exactly.
 */
function checkPeerArgv(ctx: Context, spec: PeerQemuSpec): void {
  const expected = `spawning ${spec.qemu} ${rawArgv({ ...spec, dir: ctx.vmDir }, false, 'listening').join(' ')}`;
  const lines = readFileSync(ctx.workerLog, 'utf8').split('\n').filter((l) => l.includes('spawning '));
  const last = lines[lines.length - 1] ?? '';
  if (!last.endsWith(expected)) log(`warning: the worker's QEMU command line differs from the peer's:\n  worker: ${last}\n  peer:   ${expected}`);
}

async function qgaFiles(ctx: Context, qga: QgaClient, ssh: Ssh, n: number, samples: PeerSamples): Promise<void> {
  const data = Buffer.alloc(QGA_FILE_BYTES);
  const fd = fs.openSync(ctx.source, 'r');
  try {
    fs.readSync(fd, data, 0, QGA_FILE_BYTES, 0);
  } finally {
    fs.closeSync(fd);
  }
  const hash = sha256(data);
  for (let i = 0; i < n; i++) {
    await ssh.mustRunMux(`rm -f ${QGA_GUEST_FILE}`);
    const t0 = now();
    await qga.writeFile(QGA_GUEST_FILE, data, QGA_CHUNK);
    samples.qgaWrite.push(mbps(QGA_FILE_BYTES, now() - t0));
    if (i === 0) {
      const sum = (await ssh.mustRunMux(`sha256sum ${QGA_GUEST_FILE}`)).stdout.split(/\s/)[0];
      if (sum !== hash) throw new Error(`qemu-guest-agent: the guest's copy differs from the source (${sum} vs ${hash})`);
    }
  }
  for (let i = 0; i < n; i++) {
    const t0 = now();
    const got = await qga.readFile(QGA_GUEST_FILE, QGA_CHUNK);
    samples.qgaRead.push(mbps(QGA_FILE_BYTES, now() - t0));
    if (sha256(got) !== hash) throw new Error(`qemu-guest-agent: read ${got.length} bytes that differ from what was written`);
  }
  await ssh.mustRunMux(`rm -f ${QGA_GUEST_FILE}`);
}

// ---------------------------------------------------------------------------------------------
// Helpers

/** describe() for MB/s figures, with one decimal. */
function describeRate(label: string, samples: readonly number[]): string {
  if (samples.length === 0) return `${label}: no samples`;
  const s = summarize(samples);
  const f = (x: number) => x.toFixed(1);
  return `${label}: n=${s.n} min ${f(s.min)} median ${f(s.median)} max ${f(s.max)} MB/s`;
}

function mbps(bytes: number, ms: number): number {
  return bytes / 1e6 / (ms / 1000);
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of fs.createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
}

async function verifyHostFile(file: string, hash: string, what: string): Promise<void> {
  const got = await sha256File(file);
  if (got !== hash) throw new Error(`${what}: the host's copy differs from the source (sha256 ${got} vs ${hash})`);
}

/** Writes `bytes` random bytes (incompressible) to `file`; returns their sha256. */
async function writeRandomFile(file: string, bytes: number): Promise<string> {
  const h = createHash('sha256');
  const out = await fsp.open(file, 'w', 0o600);
  try {
    for (let left = bytes; left > 0; ) {
      const chunk = randomBytes(Math.min(left, 4 << 20));
      h.update(chunk);
      await out.write(chunk);
      left -= chunk.length;
    }
  } finally {
    await out.close();
  }
  return h.digest('hex');
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}
