/**
 * The service: one per user (Hyper-V's VMMS). Started detached on demand by a client; owns every
 * VM's configuration and lifecycle; serves JSON-RPC on an owner-only socket; adopts the workers a
 * previous service left running. Killing it stops no VM.
 *
 * fd 3, when present, is the spawner's readiness pipe: {"ok":true} once the socket listens.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { SERVICE_FILES, dataHome, imageCacheDir } from '../common/paths';
import { serveSocket, type RpcPeer } from '../common/rpc';
import { ensureBaseImage } from '../image/baseImage';
import { apiHandlers } from './api';
import type { ImageRecipe } from './hostStatus';
import { imageHandlers } from './imageApi';
import { reportReadiness } from '../common/readiness';
import { VmManager, type ImageProvider } from './vmManager';
import { MetricsHub } from './metricsHub';
import { SyncManager } from './syncManager';
import { serviceIdentity } from '../common/version';
import { collectAfterBuild, imageGcHandlers } from './imageGcApi';
import { registerHome } from '../image/imageGc';

const home = dataHome();
const socketPath = path.join(home, SERVICE_FILES.socket);

function log(message: string): void {
  process.stdout.write(`${new Date().toISOString()} service[${process.pid}] ${message}\n`);
}

/** True when another service already answers on the socket. */
function answering(): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    s.once('connect', () => (s.destroy(), resolve(true)));
    s.once('error', () => resolve(false));
  });
}

const imageRecipe = (): ImageRecipe => ({ cacheDir: imageCacheDir(), agentDir: path.join(__dirname, 'guest-agent'), nodeBinary: guestNodeBinary() });

const images: ImageProvider = async (progress, signal) => {
  const image = await ensureBaseImage({ ...imageRecipe(), onProgress: (p) => progress(p.step, p.total, p.message), signal });
  if (image.built) collectAfterBuild(imageCacheDir(), image, home, log);
  return { hash: image.hash, kernel: image.kernel, initrd: image.initrd, disk: image.disk };
};

/** The guest runs the host's own Node when it is a plain Linux x64 node (checked in RECIPES.md). */
function guestNodeBinary(): string {
  return process.env.SANDBOXVM_GUEST_NODE ?? process.execPath;
}

async function main(): Promise<void> {
  fs.mkdirSync(home, { recursive: true, mode: 0o700 });
  fs.chmodSync(home, 0o700);
  if (await answering()) {
    log('another service is already running; exiting');
    reportReadiness({ ok: true, existing: true });
    return;
  }
  fs.rmSync(socketPath, { force: true });

  await registerHome(imageCacheDir(), home);
  const manager = new VmManager(home, images, log);
  await manager.load();
  const subscribers = new Set<RpcPeer>();
  manager.onDidChangeVm((info) => subscribers.forEach((p) => p.notify('vm.status', info)));
  manager.onDidRemoveVm((name) => subscribers.forEach((p) => p.notify('vm.removed', { name })));
  manager.checkpoints.onDidChange((name) => subscribers.forEach((p) => p.notify('vm.checkpoints', { name })));

  const server = net.createServer();
  const shutdown = () => {
    log('shutting down (VMs keep running)');
    server.close();
    fs.rmSync(socketPath, { force: true });
    fs.rmSync(path.join(home, SERVICE_FILES.pid), { force: true });
    manager.dispose();
    void syncs.dispose();
    setTimeout(() => process.exit(0), 50);
  };
  const metrics = new MetricsHub(manager, log);
  const syncs = new SyncManager(home, manager, subscribers, log);
  await syncs.load();
  const handlers = { ...apiHandlers(manager, subscribers, () => serviceIdentity(home), shutdown), ...metrics.handlers(), ...syncs.handlers(), ...imageHandlers(imageRecipe, images), ...imageGcHandlers(imageRecipe, home, log) };
  server.on('connection', (socket) => serveSocket(socket, handlers, log));
  const oldUmask = process.umask(0o177);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  process.umask(oldUmask);
  fs.chmodSync(socketPath, 0o600);
  fs.writeFileSync(path.join(home, SERVICE_FILES.pid), `${process.pid}\n`);
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
  const identity = serviceIdentity(home);
  log(`listening on ${socketPath} (version ${identity.version}, protocol ${identity.protocol})`);
  reportReadiness({ ok: true });
}

// A stray rejection is a bug to log, never a reason to take every VM's management down.
process.on('unhandledRejection', (err) => log(`unhandled rejection: ${(err as Error)?.stack ?? err}`));

main().catch((err) => {
  log(`fatal: ${(err as Error).stack ?? err}`);
  reportReadiness({ error: { code: 'ServiceUnavailable', message: `the service failed to start: ${(err as Error).message}; see ${path.join(home, SERVICE_FILES.log)}` } });
  process.exit(1);
});
