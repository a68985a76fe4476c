/**
 * The `identity` call: a guest restored from another VM's memory (a clone, a VM made from a
 * template) becomes a machine of its own. Sets the hostname (kernel, /etc/hostname, /etc/hosts),
 * /etc/machine-id, eth0's MAC address (virtio-net passes it to QEMU through its control queue),
 * and mixes the host's seed into the kernel's RNG and reseeds it, so the clones' /dev/urandom
 * streams part at once (RNDRESEEDCRNG, done by the relay binary: Node has no ioctl).
 * The clock is the hello's business (agent.ts); the new epoch is the host's.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, promises as fs } from 'node:fs';
import * as path from 'node:path';

export interface IdentityParams {
  hostname: string;
  machineId: string;
  mac?: string;
  /** Hex, 32-256 bytes from the host's RNG. */
  seed: string;
}

export interface IdentityResult {
  hostname: string;
  machineId: string;
  mac: string | null;
  reseeded: boolean;
}

const HOSTNAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;
const MACHINE_ID = /^[0-9a-f]{32}$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const SEED = /^(?:[0-9a-f]{2}){32,256}$/;

/** The relay binary beside the agent; run with --reseed it feeds stdin to the RNG and reseeds it. */
const RELAY = path.join(__dirname, 'bin', 'sandboxvm-relay');

export function parseIdentity(p: Record<string, unknown>): IdentityParams {
  const { hostname, machineId, mac, seed } = p;
  if (typeof hostname !== 'string' || !HOSTNAME.test(hostname)) throw new Error('identity: bad hostname');
  if (typeof machineId !== 'string' || !MACHINE_ID.test(machineId)) throw new Error('identity: bad machineId');
  if (mac !== undefined && (typeof mac !== 'string' || !MAC.test(mac))) throw new Error('identity: bad mac');
  if (typeof seed !== 'string' || !SEED.test(seed)) throw new Error('identity: bad seed');
  return { hostname, machineId, mac: mac as string | undefined, seed };
}

export async function applyIdentity(raw: Record<string, unknown>): Promise<IdentityResult> {
  const p = parseIdentity(raw);
  const mac = p.mac && existsSync('/sys/class/net/eth0') ? p.mac : undefined;
  const seed = Buffer.from(p.seed, 'hex');
  // One short C process does it all (a spawn from Node costs tens of ms under TCG); without the
  // relay binary (an image from before it), Node and `ip` do it.
  let reseeded = existsSync(RELAY) && (await spawnWithInput(RELAY, ['--identity', p.hostname, p.machineId, ...(mac ? [mac] : [])], seed)) === 0;
  if (!reseeded) {
    await fs.writeFile('/dev/urandom', seed);
    await fs.writeFile('/proc/sys/kernel/hostname', p.hostname);
    await replaceFile('/etc/hostname', `${p.hostname}\n`);
    const hosts = await fs.readFile('/etc/hosts', 'utf8').catch(() => '127.0.0.1 localhost\n');
    const lines = hosts.split('\n').filter((l) => !/^127\.0\.1\.1\s/.test(l));
    lines.splice(1, 0, `127.0.1.1 ${p.hostname}`);
    await replaceFile('/etc/hosts', lines.join('\n'));
    await replaceFile('/etc/machine-id', `${p.machineId}\n`, 0o444);
    if (mac) await run('ip', ['link', 'set', 'dev', 'eth0', 'address', mac]);
    reseeded = false;
  }
  const got = mac ? (await fs.readFile('/sys/class/net/eth0/address', 'utf8')).trim() : null;
  return { hostname: p.hostname, machineId: p.machineId, mac: got, reseeded };
}

async function replaceFile(file: string, text: string, mode = 0o644): Promise<void> {
  const tmp = `${file}.sandboxvm-${process.pid}`;
  await fs.writeFile(tmp, text, { mode });
  await fs.rename(tmp, file);
}

/** Runs `file` with `input` on stdin; resolves with its exit code (-1 when it could not run). */
function spawnWithInput(file: string, args: string[], input: Buffer): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(file, args, { stdio: ['pipe', 'ignore', 'ignore'] });
    child.on('error', () => resolve(-1));
    child.on('exit', (code) => resolve(code ?? -1));
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
  });
}

function run(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(file, args, { timeout: 10_000 }, (err, _out, stderr) => (err ? reject(new Error(`${file} ${args.join(' ')}: ${stderr.trim() || err.message}`)) : resolve())),
  );
}
