/**
 * `npm run bench -- export`: export and import of a default VM (1 CPU, 1 GiB, 10 GiB disk, 64 MiB
 * of random data written in the guest), stopped and saved, against what a user does by hand:
 * `qemu-img convert` of the VM's disk chain into one standalone qcow2, then `tar -cf` of that with
 * vm.json (and saved.state when saved); import by hand is `tar -xf`.
 *
 *   export_stopped_ms / export_saved_ms          vm.export to a file (hash pass + write pass, fsync)
 *   archive_stopped_bytes / archive_saved_bytes  the archive's size (base image included, as the peer's flattened disk includes it)
 *   import_portable_ms                           vm.import into a service whose image cache is empty (the base image is kept in the VM)
 *   import_reused_ms                             vm.import where the local cache has the base image (hashed, not kept)
 *   import_saved_ms                              a saved VM's archive, local image reused
 *
 * One home and service for the VM (its image cache the shared one) and a second home whose service
 * has an empty image cache; archives under the first home's folder, on the same filesystem as the
 * peer's files.
 */
import { execFile } from 'node:child_process';
import { promises as fsp, statSync } from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../runtime/client/serviceClient';
import type { BenchOptions } from './lib/options';
import { onCleanup, throwIfAborting } from './lib/cleanup';
import { tempHome } from './lib/home';
import { hostLine, warnOfOtherQemus } from './lib/host';
import { describe, emit, log } from './lib/output';
import { connectService, requireDist, trackVm } from './lib/runtime';
import { median, now } from './lib/stats';
import { locateQemu } from '../runtime/qemu/locate';

export const summary = 'export/import time and archive size of a default VM, stopped and saved: runtime vs qemu-img convert + tar';

const BENCH = 'export';
const VM = 'ex';

type Key = 'exportStopped' | 'sizeStopped' | 'importPortable' | 'importReused' | 'exportSaved' | 'sizeSaved' | 'importSaved';
type Sample = Record<Key, number>;

export async function run({ runs }: BenchOptions): Promise<void> {
  const qemu = await locateQemu();
  log(`QEMU ${qemu.version}; host: ${hostLine()}`);
  warnOfOtherQemus();
  const home = await tempHome();
  const client = await connectService(home);
  const portableHome = await tempHome();
  const emptyCache = await tempHome('/tmp/sbxb-cache-');
  const portable = await ServiceClient.connect({ home: portableHome, serviceScript: requireDist(), env: { SANDBOXVM_IMAGE_CACHE: emptyCache } });
  onCleanup(`shutting down the service of ${portableHome}`, async () => {
    for (const vm of await portable.list()) await portable.remove(vm.name, true).catch(() => undefined);
    await portable.shutdownService().catch(() => undefined);
    portable.dispose();
  });

  await client.create({ name: VM });
  trackVm(await client.start(VM, undefined, 180_000));
  const session = await client.attach(VM);
  await new Promise<void>((resolve, reject) =>
    void session
      .open({ kind: 'exec', argv: ['sh', '-c', 'head -c 67108864 /dev/urandom > /root/data && sync'] }, { onData: () => undefined, onExit: (r) => (r.code === 0 ? resolve() : reject(new Error(`writing data exited ${r.code}`))) })
      .catch(reject),
  );
  session.dispose();
  const dir = (await client.info(VM)).paths.dir;
  const archives = path.join(home, 'archives');
  await fsp.mkdir(archives);

  const ours: Sample[] = [];
  const theirs: Sample[] = [];
  for (let i = 0; i < runs; i++) {
    throwIfAborting();
    // Stopped: `stop` also discards the previous run's saved state.
    await client.stop(VM);
    const peerStopped = await peerRun(qemu.img, dir, archives, 'stopped');
    const o: Partial<Sample> = {};
    const stoppedTar = path.join(archives, `stopped-${i}.tar`);
    let t = now();
    const e = await client.exportVm(VM, { path: stoppedTar });
    o.exportStopped = now() - t;
    o.sizeStopped = e.bytes;
    t = now();
    await portable.importVm({ path: stoppedTar }, `p${i}`);
    o.importPortable = now() - t;
    t = now();
    await client.importVm({ path: stoppedTar }, `r${i}`);
    o.importReused = now() - t;
    await portable.remove(`p${i}`, true);
    await client.remove(`r${i}`, true);
    await fsp.rm(stoppedTar);

    trackVm(await client.start(VM, undefined, 180_000));
    await client.save(VM);
    const peerSaved = await peerRun(qemu.img, dir, archives, 'saved');
    const savedTar = path.join(archives, `saved-${i}.tar`);
    t = now();
    const s = await client.exportVm(VM, { path: savedTar });
    o.exportSaved = now() - t;
    o.sizeSaved = s.bytes;
    t = now();
    await client.importVm({ path: savedTar }, `s${i}`);
    o.importSaved = now() - t;
    await client.remove(`s${i}`, true);
    await fsp.rm(savedTar);
    ours.push(o as Sample);
    theirs.push({ ...peerStopped, exportSaved: peerSaved.exportStopped, sizeSaved: peerSaved.sizeStopped, importSaved: peerSaved.importPortable });
    log(`run ${i + 1}/${runs} runtime: ${JSON.stringify(ours[i])}`);
    log(`run ${i + 1}/${runs} by hand: ${JSON.stringify(theirs[i])}`);
  }

  const metrics: [string, Key, string][] = [
    ['export_stopped_ms', 'exportStopped', 'ms'],
    ['archive_stopped_bytes', 'sizeStopped', 'bytes'],
    ['import_portable_ms', 'importPortable', 'ms'],
    ['import_reused_ms', 'importReused', 'ms'],
    ['export_saved_ms', 'exportSaved', 'ms'],
    ['archive_saved_bytes', 'sizeSaved', 'bytes'],
    ['import_saved_ms', 'importSaved', 'ms'],
  ];
  for (const [metric, key, unit] of metrics) {
    log(describe(`${metric}, runtime`, ours.map((s) => s[key]), unit));
    log(describe(`${metric}, qemu-img-convert+tar`, theirs.map((s) => s[key]), unit));
    emit({ bench: BENCH, metric, unit, value: median(ours.map((s) => s[key])), peer: 'qemu-img-convert+tar', peer_value: median(theirs.map((s) => s[key])) });
  }
}

/**
 * By hand: flatten the VM's active disk chain into one qcow2 (`qemu-img convert -O qcow2`), tar it
 * with vm.json (and saved.state), then untar it elsewhere. The import half is the same for every
 * import figure (tar -xf): it has no checks and no image reuse.
 */
async function peerRun(qemuImg: string, dir: string, archives: string, state: 'stopped' | 'saved'): Promise<Sample> {
  const stage = path.join(archives, 'peer');
  await fsp.rm(stage, { recursive: true, force: true });
  await fsp.mkdir(stage);
  const tar = path.join(archives, 'peer.tar');
  const top = JSON.parse(await fsp.readFile(path.join(dir, 'checkpoints.json'), 'utf8').catch(() => '{}')).top ?? 'disk.qcow2';
  let t = now();
  await sh(qemuImg, ['convert', '-O', 'qcow2', path.join(dir, top), path.join(stage, 'disk.qcow2')]);
  await fsp.copyFile(path.join(dir, 'vm.json'), path.join(stage, 'vm.json'));
  const files = ['vm.json', 'disk.qcow2'];
  if (state === 'saved') {
    await fsp.link(path.join(dir, 'saved.state'), path.join(stage, 'saved.state'));
    files.push('saved.state');
  }
  await sh('tar', ['-cf', tar, '-C', stage, ...files]);
  await sh('sync', ['-f', tar]);
  const exportMs = now() - t;
  const size = statSync(tar).size;
  const out = path.join(archives, 'peer-out');
  await fsp.rm(out, { recursive: true, force: true });
  await fsp.mkdir(out);
  t = now();
  await sh('tar', ['-xf', tar, '-C', out]);
  await sh('sync', ['-f', path.join(out, 'disk.qcow2')]);
  const importMs = now() - t;
  await fsp.rm(stage, { recursive: true, force: true });
  await fsp.rm(out, { recursive: true, force: true });
  await fsp.rm(tar, { force: true });
  return { exportStopped: exportMs, sizeStopped: size, importPortable: importMs, importReused: importMs, exportSaved: NaN, sizeSaved: NaN, importSaved: NaN };
}

function sh(file: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => execFile(file, args, { timeout: 600_000 }, (err, _o, stderr) => (err ? reject(new Error(`${file} ${args.join(' ')}: ${stderr || err.message}`)) : resolve())));
}
