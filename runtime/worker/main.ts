/**
 * The worker: one process per running VM (Hyper-V's VMWP). Started detached by the service with
 * `worker.js --dir <vm dir> [--restore | --adopt <qemu pid>]`; outlives the service. It boots (or
 * restores) QEMU, or takes over the QEMU of a worker that died (--adopt), holds the QMP and channel
 * connections, serves its VM's RPC socket (worker.sock), records itself in worker.json, and exits
 * when QEMU does.
 *
 * fd 3, when present, is the spawner's readiness pipe: one JSON line, {"ok":true} once the agent
 * answers or {"error":{code,message}} when the VM could not start.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { parseVmConfig } from '../common/config';
import { asSandboxError } from '../common/errors';
import { VM_FILES } from '../common/paths';
import { activeDisk } from '../common/activeDisk';
import { serveSocket, type RpcPeer } from '../common/rpc';
import type { WorkerRecord } from '../common/status';
import { writeJsonAtomic } from '../common/atomicWrite';
import { probeAccelerator } from '../accel/probe';
import { reportReadiness } from '../common/readiness';
import { probeTransport } from '../accel/transport';
import { locateQemu } from '../qemu/locate';
import { VmRunner } from './vmRunner';
import { attachDataChannel, sessionHandlers } from './sessionRelay';
import { DataChannel, looksLikeFrame } from './dataChannel';
import { MetricsSampler, metricsHandlers } from './metrics';
import { PortForwarder } from './portForwarder';
import { portHandlers } from './portHandlers';

function parseArgs(argv: string[]): { dir: string; restore: boolean; adopt?: number; bootTimeoutMs: number } {
  const dirIndex = argv.indexOf('--dir');
  if (dirIndex < 0 || !argv[dirIndex + 1]) throw new Error('usage: worker --dir <vm dir> [--restore | --adopt <qemu pid>]');
  const timeoutIndex = argv.indexOf('--boot-timeout-ms');
  const adoptIndex = argv.indexOf('--adopt');
  const adopt = adoptIndex >= 0 ? Number(argv[adoptIndex + 1]) : undefined;
  if (adopt !== undefined && !(Number.isInteger(adopt) && adopt > 1)) throw new Error('--adopt needs the QEMU pid');
  return {
    dir: path.resolve(argv[dirIndex + 1]),
    restore: argv.includes('--restore'),
    adopt,
    bootTimeoutMs: timeoutIndex >= 0 ? Number(argv[timeoutIndex + 1]) : 180_000,
  };
}

/** The epoch the dead worker recorded, for its successor to greet the agent with. */
function previousEpoch(recordFile: string): string | undefined {
  try {
    const epoch = JSON.parse(fs.readFileSync(recordFile, 'utf8')).epoch;
    return typeof epoch === 'string' && /^[0-9a-f-]{36}$/.test(epoch) ? epoch : undefined;
  } catch {
    return undefined;
  }
}

/** The passt the dead worker recorded (checked by command line before it is ever killed). */
function previousPasst(recordFile: string): number | undefined {
  try {
    const pid = JSON.parse(fs.readFileSync(recordFile, 'utf8')).passtPid;
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} worker[${process.pid}] ${message}\n`);
}

/** How long an exiting worker waits for its clients to take the session output it sent them. */
const EXIT_FLUSH_MS = 3000;

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const name = path.basename(args.dir);
  const file = (f: keyof typeof VM_FILES) => path.join(args.dir, VM_FILES[f]);
  const report = reportReadiness;
  process.on('SIGPIPE', () => undefined);

  let runner: VmRunner | undefined;
  let forwarder: PortForwarder | undefined;
  const peers = new Set<RpcPeer>();
  const dataChannels = new Set<DataChannel>();
  const server = net.createServer();
  try {
    const config = parseVmConfig(fs.readFileSync(file('config'), 'utf8'), name);
    // QEMU's --version runs while the accelerator is probed (both sit between the worker's start and QEMU's).
    const located = locateQemu();
    located.catch(() => undefined);
    const accel = probeAccelerator();
    const qemu = await located;
    log(`${args.adopt !== undefined ? `taking over QEMU ${args.adopt} of` : 'starting'} ${name}: accelerator ${accel.accel} (${accel.reason}), QEMU ${qemu.version}${args.restore ? ', restoring saved state' : ''}`);
    const transport = probeTransport();
    log(`agent channel: ${transport.transport} (${transport.reason})`);
    const vm = new VmRunner(args.dir, config, qemu, accel, log, transport);
    runner = vm;
    const status = () => ({ ...vm.status(), ports: forwarder?.status() });
    const publish = () => {
      const s = status();
      for (const peer of peers) peer.notify('worker.status', s);
    };
    vm.onDidChangeStatus(() => {
      forwarder?.vmStateChanged(vm.status().state);
      publish();
    });

    fs.rmSync(file('workerSocket'), { force: true });
    const handlers = {
      'worker.status': () => status(),
      'worker.identify': () => ({ vmId: config.id, name, workerPid: process.pid }),
      'worker.pause': () => vm.pause(),
      'worker.resume': () => vm.resume(),
      'worker.save': () => vm.save(),
      'worker.checkpoint': (p: { top: string; memory: string; epochFile: string }) => vm.checkpoint(p),
      'worker.idle': () => vm.idle(),
      'worker.activeDisk': () => vm.activeDisk(),
      'worker.stop': (p: { force?: boolean; stepMs?: number }) => vm.stop(!!p.force, p.stepMs),
      ...sessionHandlers(() => vm.agent),
      ...portHandlers(() => forwarder),
      ...metricsHandlers(new MetricsSampler({ qemuPid: () => vm.qemuPid, state: () => vm.status().state, agent: () => vm.agent, get diskFile() {
          return activeDisk(args.dir); // moves with each checkpoint
        }, log })),
    };
    server.on('connection', (socket) => {
      // The first bytes tell a data channel (a frame) from a JSON-RPC connection.
      socket.once('data', (first: Buffer) => {
        if (looksLikeFrame(first)) {
          const channel = new DataChannel(socket, (token, ch) => attachDataChannel(token, ch, () => vm.agent), log);
          dataChannels.add(channel);
          channel.onClose(() => dataChannels.delete(channel));
          channel.receive(first);
          return;
        }
        socket.unshift(first);
        const peer = serveSocket(socket, handlers, log);
        peers.add(peer);
        peer.onClose(() => peers.delete(peer));
      });
      socket.on('error', () => undefined);
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file('workerSocket'), () => resolve());
    });
    fs.chmodSync(file('workerSocket'), 0o600);

    const startedAt = new Date().toISOString();
    let recordedEpoch: string | undefined;
    const recordWorker = async () => {
      recordedEpoch = vm.agent?.currentEpoch;
      const record: WorkerRecord = { vmId: config.id, workerPid: process.pid, qemuPid: vm.qemuPid!, passtPid: vm.passt, socket: file('workerSocket'), startedAt, epoch: recordedEpoch };
      await writeJsonAtomic(file('worker'), record);
    };
    // A new handshake (after a channel reset) changes the epoch a successor must greet with.
    vm.onDidChangeStatus(() => {
      if (recordedEpoch !== undefined && vm.agent?.currentEpoch !== recordedEpoch && fs.existsSync(file('worker'))) {
        recordWorker().catch((err) => log(`updating ${VM_FILES.worker} failed: ${(err as Error).message}`));
      }
    });
    if (args.adopt !== undefined) await vm.adopt(args.adopt, Math.min(args.bootTimeoutMs, 30_000), previousEpoch(file('worker')), previousPasst(file('worker')));
    else await vm.start(args.restore, args.bootTimeoutMs);
    await recordWorker();
    forwarder = new PortForwarder(config.ports!, { agent: () => vm.agent, state: () => vm.status().state, vmName: name, log });
    forwarder.onDidChange(publish);
    await forwarder.start();
    // The saved state is consumed: the disk moves on from here, so it can never be restored again.
    if (args.restore) for (const f of ['savedState', 'savedEpoch'] as const) fs.rmSync(file(f), { force: true });
    report({ ok: true, status: status() });
  } catch (err) {
    const e = asSandboxError(err);
    log(`failed to start: ${e.message}`);
    report({ error: e.toWire() });
    cleanup();
    process.exitCode = 1;
    setTimeout(() => process.exit(1), 200).unref();
    return;
  }

  const exit = await runner.waitExit();
  forwarder?.dispose();
  if (exit.error) log(exit.error);
  const final = { ...runner.status(), ports: [], exitError: exit.error };
  for (const peer of peers) peer.notify('worker.exit', final);
  cleanup();
  // Session output already acknowledged to the guest (a save) must reach its clients first.
  await Promise.race([Promise.all([...dataChannels].map((c) => c.end())), new Promise((r) => setTimeout(r, EXIT_FLUSH_MS))]);
  setTimeout(() => process.exit(0), 100);

  function cleanup(): void {
    server.close();
    fs.rmSync(file('workerSocket'), { force: true });
    fs.rmSync(file('worker'), { force: true });
  }
}

// A stray rejection is a bug to log, never a reason to take every VM's management down.
process.on('unhandledRejection', (err) => log(`unhandled rejection: ${(err as Error)?.stack ?? err}`));

main().catch((err) => {
  log(`fatal: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
