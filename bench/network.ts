/**
 * `npm run bench -- network`: what the `internet` policy's back end (passt) costs against QEMU's
 * user networking (the `host` policy), on one VM whose policy is switched while it is stopped.
 *
 *   boot_to_agent_ms      start of a stopped VM until the agent answers (passt is spawned beside QEMU)
 *   guest_to_host_mib_s   64 MiB from a guest `node` to a listener on the host's own non-loopback
 *                         address (the one path both policies allow), measured on the host from the
 *                         first byte to the last
 *
 * value: internet (passt); peer: host (user networking). Runs alternate which policy goes first
 * (ABBA) so drift in the host's load hits both alike.
 */
import * as net from 'node:net';
import * as os from 'node:os';
import type { BenchOptions } from './lib/options';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import { describe, emit, log } from './lib/output';
import { connectService, runCli, trackVm } from './lib/runtime';
import { median } from './lib/stats';

export const summary = 'boot time and guest-to-host TCP throughput: internet (passt) vs host (QEMU user networking)';

const BENCH = 'network';
const PEER = 'user-networking';
const BYTES = 64 * 1024 * 1024;
const VM = 'netbench';

/** The guest side: connects and writes BYTES in 64 KiB writes. */
const SENDER = `
const net = require('net');
const [host, port, total] = process.argv.slice(1).map((v, i) => (i ? Number(v) : v));
const chunk = Buffer.alloc(65536, 120);
const s = net.connect({ host, port });
let sent = 0;
const pump = () => { while (sent < total) { sent += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); };
s.on('connect', pump);
s.on('error', (e) => { console.error(e.message); process.exit(1); });
`;

/** A listener that counts bytes and resolves with MiB/s from the first byte to the end. */
function receiveOnce(address: string): Promise<{ port: number; result: Promise<number> }> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    const result = new Promise<number>((done, fail) => {
      server.once('connection', (socket) => {
        let bytes = 0;
        let t0 = 0;
        socket.on('data', (d: Buffer) => {
          if (bytes === 0) t0 = performance.now();
          bytes += d.length;
        });
        socket.on('end', () => {
          server.close();
          if (bytes !== BYTES) return fail(new Error(`received ${bytes} bytes of ${BYTES}`));
          done(bytes / 1048576 / ((performance.now() - t0) / 1000));
        });
        socket.on('error', fail);
      });
    });
    server.once('error', reject);
    server.listen(0, address, () => resolve({ port: (server.address() as net.AddressInfo).port, result }));
  });
}

function hostAddress(): string {
  const a = Object.values(os.networkInterfaces())
    .flat()
    .find((i) => i && i.family === 'IPv4' && !i.internal);
  if (!a) throw new Error('the host has no non-loopback IPv4 address: nothing both policies can reach');
  return a.address;
}

/** Runs the CLI; a guest too starved to answer its heartbeat (a loaded host) gets up to five more tries. */
async function cli(home: string, args: string[]): Promise<string> {
  for (let attempt = 0; ; attempt++) {
    const r = await runCli(args, home, { timeoutMs: 300_000 });
    if (r.code === 0) return r.stdout;
    if (attempt < 5 && /agent is not responding/.test(r.stderr)) {
      log(`the agent is not responding yet (a loaded host); trying again in 2 s`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
      continue;
    }
    throw new Error(`sandboxvm ${args[0]} exited ${r.code}: ${r.stderr}`);
  }
}

export async function run({ runs }: BenchOptions): Promise<void> {
  log(`host: ${hostLine()}`);
  warnOfOtherQemus();
  const home = await tempHome();
  const client = await connectService(home);
  const address = hostAddress();
  await client.create({ name: VM, memoryMiB: 512 });
  const samples: Record<'internet' | 'host', { boot: number[]; mibs: number[] }> = { internet: { boot: [], mibs: [] }, host: { boot: [], mibs: [] } };
  for (let i = 0; i < runs; i++) {
    const order: ('internet' | 'host')[] = i % 2 === 0 ? ['internet', 'host'] : ['host', 'internet'];
    for (const policy of order) {
      await client.set({ name: VM, network: policy });
      const t0 = performance.now();
      const info = await client.start(VM);
      samples[policy].boot.push(performance.now() - t0);
      trackVm(info);
      const rx = await receiveOnce(address);
      await cli(home, ['exec', VM, '--', 'node', '-e', SENDER, address, String(rx.port), String(BYTES)]);
      samples[policy].mibs.push(await rx.result);
      await client.stop(VM);
      log(`run ${i + 1} ${policy}: boot ${samples[policy].boot.at(-1)!.toFixed(0)} ms, ${samples[policy].mibs.at(-1)!.toFixed(1)} MiB/s`);
    }
  }
  for (const policy of ['internet', 'host'] as const) {
    log(describe(`${policy} boot`, samples[policy].boot));
    log(describe(`${policy} guest->host`, samples[policy].mibs, 'MiB/s'));
  }
  emit({ bench: BENCH, metric: 'boot_to_agent_ms', unit: 'ms', value: median(samples.internet.boot), peer: PEER, peer_value: median(samples.host.boot) });
  emit({ bench: BENCH, metric: 'guest_to_host_mib_s', unit: 'MiB/s', value: median(samples.internet.mibs), peer: PEER, peer_value: median(samples.host.mibs) });
}
