/**
 * Templates for instant create: a VM booted fresh from a base image, its agent ready and the guest
 * settled, then saved. A new VM with the same configuration starts by restoring that state (its
 * disk an overlay on the template's, its saved.state a hard link of the template's memory) and
 * then takes its own identity (identity.json, vmRunner.ts), instead of booting.
 *
 * Layout, under the image cache (shared by every data home of the user):
 *
 *   templates/<hash16>-<fp16>-<rand>/   one published template, read-only once there
 *     template.json                     TemplateRecord: the base image it sits on, the configuration
 *     disk.qcow2                        the template's disk: an overlay on baseImage.disk (0444)
 *     memory.state                      its saved state: the devices only (QEMU migration stream with
 *                                       x-ignore-shared, a few hundred KB, 0444)
 *     ram                               its guest RAM (the VM ran with it mapped shared); VMs made
 *                                       from it map it copy-on-write (never written)
 *   templates/.b<rand>/                 a template being built (published by one rename)
 *
 * A template is in use while any VM's vm.json names its folder (`template`): VMs' disks back onto
 * its disk.qcow2. A template whose template.json does not match the base image or configuration
 * asked for is stale: it is never used again and never touched here (disk hygiene removes unused
 * ones); a new one is built beside it. The key folds in the base image's hash, so a new image
 * means a new template.
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { existsSync, promises as fs, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import * as path from 'node:path';
import { DEFAULTS, type NetworkPolicy, type VmConfig } from '../common/config';
import { writeJsonAtomic } from '../common/atomicWrite';
import { VM_FILES } from '../common/paths';
import { KERNEL_FLAGS, TCG_KERNEL_FLAGS } from '../qemu/argv';
import { WorkerHandle, readWorkerRecord } from './workerHandle';
import { killIfProcessOf } from './processes';
import { SessionClient } from '../client/sessionClient';

export const TEMPLATE_FILES = { record: 'template.json', disk: 'disk.qcow2', memory: 'memory.state', ram: 'ram' } as const;

/** Bumped when what a template holds or how it is restored changes: older ones are stale. */
const TEMPLATE_FORMAT = 3;

/** What must match between a template and a VM restored from it. */
export interface TemplateSpec {
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  network: NetworkPolicy;
}

/** template.json. */
export interface TemplateRecord {
  format: number;
  /** The base image this template's disk is an overlay on (what disk hygiene keeps alive for it). */
  baseImage: { hash: string; disk: string; kernel: string; initrd: string };
  fingerprint: string;
  spec: TemplateSpec;
  accel: string;
  qemuVersion: string;
  createdAt: string;
  /** Ms from the worker's spawn to the agent's answer when the template was booted. */
  bootMs?: number;
}

export interface Template {
  dir: string;
  disk: string;
  memory: string;
  ram: string;
  record: TemplateRecord;
}

function at(dir: string, record: TemplateRecord): Template {
  return { dir, disk: path.join(dir, TEMPLATE_FILES.disk), memory: path.join(dir, TEMPLATE_FILES.memory), ram: path.join(dir, TEMPLATE_FILES.ram), record };
}

/** How long after its agent answers the template's guest runs before the save (the agent loads koffi 2 s after start; clones should not each pay for it). */
const SETTLE_MS = 3000;

/**
 * Whether a VM of `spec` is made from a template: the default configuration only (one template
 * per base image; other sizes boot), and not when SANDBOXVM_TEMPLATES=0.
 */
export function templatesWanted(spec: TemplateSpec, env: NodeJS.ProcessEnv = process.env): boolean {
  if (env.SANDBOXVM_TEMPLATES === '0') return false;
  return spec.cpus === DEFAULTS.cpus && spec.memoryMiB === DEFAULTS.memoryMiB && spec.diskGiB === DEFAULTS.diskGiB && spec.network === DEFAULTS.network;
}

/** The fingerprint of what a restore needs to match: configuration, accelerator, QEMU, kernel flags. */
export function templateFingerprint(spec: TemplateSpec, accel: string, qemuVersion: string): string {
  const flags = [...KERNEL_FLAGS, ...(accel === 'tcg' ? TCG_KERNEL_FLAGS : [])];
  const basis = { format: TEMPLATE_FORMAT, cpus: spec.cpus, memoryMiB: spec.memoryMiB, diskGiB: spec.diskGiB, network: spec.network, accel, qemuVersion, flags };
  return createHash('sha256').update(JSON.stringify(basis)).digest('hex');
}

/** The prefix of the folders of templates for this base image and fingerprint. */
export function templatePrefix(imageHash: string, fingerprint: string): string {
  return `${imageHash.slice(0, 16)}-${fingerprint.slice(0, 16)}-`;
}

/** Why `record` cannot serve `image` with `fingerprint`, or undefined when it can. */
export function staleReason(record: TemplateRecord, image: VmConfig['image'], fingerprint: string): string | undefined {
  if (record.format !== TEMPLATE_FORMAT) return `format ${record.format}, not ${TEMPLATE_FORMAT}`;
  if (record.baseImage?.hash !== image.hash || record.baseImage?.disk !== image.disk) return `made for base image ${String(record.baseImage?.hash).slice(0, 16)}, not ${image.hash.slice(0, 16)}`;
  if (record.fingerprint !== fingerprint) return 'made for another configuration';
  return undefined;
}

/** A build folder older than this was left by a service that died mid-build. */
const ABANDONED_BUILD_MS = 15 * 60_000;

export class Templates {
  private building?: Promise<Template | undefined>;
  /** The worker of the build under way (stopped when the service shuts down). */
  private buildWorker?: WorkerHandle;

  constructor(
    private readonly cacheDir: string,
    private readonly qemuImg: () => Promise<string>,
    private readonly host: () => Promise<{ accel: string; qemuVersion: string }>,
    private readonly log: (m: string) => void,
  ) {}

  get dir(): string {
    return path.join(this.cacheDir, 'templates');
  }

  /** A published template for `image` and `spec` whose files are all there (the newest), or undefined. Logs stale ones it passes over. */
  async ready(image: VmConfig['image'], spec: TemplateSpec): Promise<Template | undefined> {
    const { accel, qemuVersion } = await this.host();
    const fingerprint = templateFingerprint(spec, accel, qemuVersion);
    const prefix = templatePrefix(image.hash, fingerprint);
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.startsWith(prefix));
    } catch {
      return undefined;
    }
    const found: Template[] = [];
    for (const name of names) {
      const dir = path.join(this.dir, name);
      let record: TemplateRecord;
      try {
        record = JSON.parse(readFileSync(path.join(dir, TEMPLATE_FILES.record), 'utf8'));
      } catch {
        continue;
      }
      const stale = staleReason(record, image, fingerprint);
      if (stale) {
        this.log(`template ${dir} is stale (${stale}); not used`);
        continue;
      }
      const t = at(dir, record);
      if (existsSync(t.disk) && existsSync(t.memory) && existsSync(t.ram)) found.push(t);
    }
    return found.sort((a, b) => b.record.createdAt.localeCompare(a.record.createdAt))[0];
  }

  /** Kills a build under way (the service is shutting down); its folder goes at a later sweep. */
  dispose(): void {
    const w = this.buildWorker;
    if (!w) return;
    // Synchronous: the service exits right after.
    for (const pid of [w.record.qemuPid, w.record.passtPid, w.record.workerPid]) {
      try {
        if (pid) process.kill(pid, 'SIGKILL');
      } catch {
        // gone already
      }
    }
  }

  /**
   * Removes build folders a dead service left (older than ABANDONED_BUILD_MS; a younger one may be
   * another service's build under way), killing their QEMU and worker if they still run. Logs, never throws.
   */
  sweep(): void {
    let names: string[];
    try {
      names = readdirSync(this.dir).filter((n) => n.startsWith('.b'));
    } catch {
      return;
    }
    for (const name of names) {
      const staging = path.join(this.dir, name);
      try {
        if (Date.now() - statSync(staging).mtimeMs < ABANDONED_BUILD_MS) continue;
        const vmDir = path.join(staging, 'template');
        const record = readWorkerRecord(vmDir);
        if (record) {
          killIfProcessOf(record.workerPid, [vmDir]);
          killIfProcessOf(record.qemuPid, [path.join(vmDir, VM_FILES.consoleLog)]);
          if (record.passtPid) killIfProcessOf(record.passtPid, ['passt', path.join(vmDir, VM_FILES.passtLog)]);
        }
        rmSync(staging, { recursive: true, force: true });
        this.log(`removed ${staging}: a template build a service left unfinished`);
      } catch (err) {
        this.log(`cannot remove ${staging}: ${(err as Error).message}`);
      }
    }
  }

  /** Builds a template for `image` and `spec` unless one is ready or being built; never throws (failures are logged). */
  ensureInBackground(image: VmConfig['image'], spec: TemplateSpec): Promise<Template | undefined> {
    this.building ??= (async () => (await this.ready(image, spec)) ?? (await this.build(image, spec)))()
      .catch((err) => {
        this.log(`building a template failed: ${(err as Error).message}`);
        return undefined;
      })
      .finally(() => (this.building = undefined));
    return this.building;
  }

  /** Boots a VM from `image` in a hidden folder, lets it settle, saves it, and publishes the result. */
  private async build(image: VmConfig['image'], spec: TemplateSpec): Promise<Template> {
    const t0 = Date.now();
    const { accel, qemuVersion } = await this.host();
    const fingerprint = templateFingerprint(spec, accel, qemuVersion);
    await fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const staging = path.join(this.dir, `.b${randomBytes(4).toString('hex')}`);
    // The worker wants a folder named as its VM.
    const vmDir = path.join(staging, 'template');
    await fs.mkdir(vmDir, { recursive: true, mode: 0o700 });
    this.log(`building a template for base image ${image.hash.slice(0, 16)} (${spec.cpus} CPU, ${spec.memoryMiB} MiB, ${spec.diskGiB} GiB, ${spec.network}) in ${staging}`);
    let worker: WorkerHandle | undefined;
    try {
      await img(await this.qemuImg(), ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', image.disk, path.join(vmDir, VM_FILES.disk), `${spec.diskGiB}G`]);
      const config: VmConfig = { id: randomUUID(), name: 'template', ...spec, image, createdAt: new Date().toISOString(), ports: { auto: false, forwards: [] } };
      await writeJsonAtomic(path.join(vmDir, VM_FILES.config), config);
      await writeJsonAtomic(path.join(vmDir, VM_FILES.memoryFile), { path: path.join(vmDir, TEMPLATE_FILES.ram), share: true });
      // The identity call and an exec run once before the save, so the guest's code for them is
      // compiled and its files cached in every VM made from the template (a restored QEMU still
      // translates afresh what the guest runs).
      await writeJsonAtomic(path.join(vmDir, VM_FILES.identity), { hostname: 'template', machineId: randomBytes(16).toString('hex') });
      worker = await WorkerHandle.spawn(vmDir, false, () => undefined, 120_000);
      this.buildWorker = worker;
      const bootMs = worker.status.boot?.readyMs;
      const sessions = await SessionClient.connect(worker.record.socket);
      try {
        const exec = await sessions.open({ kind: 'exec', argv: ['true'] }, { onData: () => undefined, onExit: () => undefined });
        await exec.exited;
      } finally {
        sessions.dispose();
      }
      await delay(SETTLE_MS);
      const closed = worker.waitClosed();
      await worker.call('worker.save');
      await closed;
      worker.dispose();
      this.buildWorker = undefined;
      await fs.rename(path.join(vmDir, VM_FILES.disk), path.join(staging, TEMPLATE_FILES.disk));
      await fs.rename(path.join(vmDir, VM_FILES.savedState), path.join(staging, TEMPLATE_FILES.memory));
      await fs.rename(path.join(vmDir, TEMPLATE_FILES.ram), path.join(staging, TEMPLATE_FILES.ram));
      await fs.rm(vmDir, { recursive: true, force: true });
      for (const f of [TEMPLATE_FILES.disk, TEMPLATE_FILES.memory]) await fs.chmod(path.join(staging, f), 0o444);
      const record: TemplateRecord = { format: TEMPLATE_FORMAT, baseImage: { hash: image.hash, disk: image.disk, kernel: image.kernel, initrd: image.initrd }, fingerprint, spec, accel, qemuVersion, createdAt: new Date().toISOString(), bootMs };
      await writeJsonAtomic(path.join(staging, TEMPLATE_FILES.record), record);
      const dir = path.join(this.dir, templatePrefix(image.hash, fingerprint) + randomBytes(3).toString('hex'));
      await fs.rename(staging, dir);
      this.log(`template ${dir} published (${Date.now() - t0} ms)`);
      return at(dir, record);
    } catch (err) {
      this.buildWorker = undefined;
      if (worker && !worker.isClosed) {
        const closed = worker.waitClosed();
        await worker.call('worker.stop', { force: true }).catch(() => undefined);
        await closed;
      }
      worker?.dispose();
      await fs.rm(staging, { recursive: true, force: true }).catch(() => undefined);
      throw err;
    }
  }
}

function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

function img(qemuImg: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) =>
    execFile(qemuImg, args, { timeout: 60_000 }, (err, _out, stderr) => (err ? reject(new Error(`qemu-img ${args[0]} failed: ${stderr.trim() || err.message}`)) : resolve())),
  );
}
