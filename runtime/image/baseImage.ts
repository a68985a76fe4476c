/**
 * The default base image: built locally from Debian packages, cached by a hash of its recipe.
 *
 * Two stages, each cached in its own directory of the image cache (imageCacheDir()):
 *   stage1-<hash16>/  build-rootfs.sh: vmlinuz, initrd.img, rootfs.tar, stage1.json   (slow, ~30 s-3 min)
 *   base-<hash16>/    assemble-image.sh: base.qcow2, vmlinuz, initrd.img, manifest.json (fast, ~5-10 s)
 * plus build-<hash16>.log (the last build's full output) and build.lock (held while building).
 *
 * Stage 1's hash covers build-rootfs.sh, the initramfs init, the package list (plus
 * SANDBOXVM_EXTRA_PACKAGES when set) and the kernel package's version; stage 2's covers stage 1's
 * hash, assemble-image.sh, the rootfs scripts, the guest's node binary and every file of the agent
 * directory. A stage is built into a temporary directory and renamed into place, so the cache
 * never holds a half-written stage; a published base directory is never modified or deleted here
 * (VM overlays reference its base.qcow2). Who builds (root, or a normal user through fakechroot or
 * unshare and fakeroot: prerequisites.ts) is in neither hash: both give the same image.
 */
import { spawn, execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, promises as fs } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCode, SandboxError, asSandboxError } from '../common/errors';
import { writeJsonAtomic } from '../common/atomicWrite';
import { checkImageBuildPrerequisites, toolPath, type RootfsMode } from './prerequisites';

export { REQUIRED_TOOLS, findExecutable, imageBuildPrerequisites, toolPath, type HostTool, type ImageBuildPrerequisites } from './prerequisites';

export interface BaseImage {
  /** The stage-2 recipe hash (full sha256 hex); the directory is named after its first 16 chars. */
  hash: string;
  /** The stage-1 recipe hash (full sha256 hex). */
  stage1?: string;
  /** Set when this call built it (the service then collects images nothing uses: imageGc.ts). */
  built?: boolean;
  dir: string;
  kernel: string;
  initrd: string;
  disk: string;
}

export interface ImageProgress {
  step: number;
  total: number;
  message: string;
}

export interface EnsureImageOptions {
  cacheDir: string;
  agentDir: string;
  nodeBinary: string;
  onProgress?: (p: ImageProgress) => void;
  signal?: AbortSignal;
}

export interface RecipeOptions {
  agentDir: string;
  nodeBinary: string;
  /** Where the scripts are (default imageAssetsDir()). */
  assetsDir?: string;
  /** The kernel package and version (default: resolved with apt-cache). */
  kernel?: KernelPackage;
}

export interface KernelPackage {
  name: string;
  version: string;
}

/** Number of `STEP` lines each script prints (they print `STEP n TOTAL msg` with these totals). */
export const STAGE1_STEPS = 5;
export const STAGE2_STEPS = 4;

/** Files (relative to imageAssetsDir()) that make up each stage's recipe. */
export const STAGE1_ASSETS = ['build-rootfs.sh', 'rootfs-packages.txt', 'guest/initramfs-init'] as const;
export const STAGE2_ASSETS = ['assemble-image.sh', 'guest/sandboxvm-init', 'guest/agent-loop', 'guest/poweroff', 'guest/reboot'] as const;

/** Environment overrides the scripts honour that change what they build (so they are part of the hash). */
const STAGE1_ENV = ['SANDBOXVM_SUITE', 'SANDBOXVM_INITRD_COMPRESSION'] as const;
const STAGE2_ENV = ['SANDBOXVM_DISK_SIZE'] as const;

const KERNEL_META_PACKAGE = 'linux-image-cloud-amd64';
const LOCK_FILE = 'build.lock';

/**
 * The directory holding build-rootfs.sh, assemble-image.sh and guest/. Bundled code runs from
 * dist/*.js, so the scripts are at dist/../runtime/image; from source (tsx) they sit next to this file.
 */
export function imageAssetsDir(): string {
  const candidates = [path.join(__dirname, '..', 'runtime', 'image'), __dirname];
  for (const dir of candidates) {
    if (existsSync(path.join(dir, 'build-rootfs.sh'))) return dir;
  }
  throw new SandboxError(ErrorCode.Internal, `the image build scripts are missing (looked in ${candidates.join(' and ')})`);
}

// ---------------------------------------------------------------------------------------------
// Progress lines

/** Parses a script's `STEP <n> <total> <message>` line; anything else gives undefined. */
export function parseProgressLine(line: string): ImageProgress | undefined {
  const m = /^STEP (\d+) (\d+) (.*)$/.exec(line.replace(/\r$/, ''));
  if (!m) return undefined;
  const step = Number(m[1]);
  const total = Number(m[2]);
  if (!(step >= 1 && total >= 1 && step <= total)) return undefined;
  return { step, total, message: m[3].trim() };
}

// ---------------------------------------------------------------------------------------------
// Kernel package

/** From `apt-cache depends linux-image-cloud-amd64`: the versioned package it depends on. */
export function parseKernelDepends(output: string): string | undefined {
  const m = /Depends:\s*(linux-image-\d[^\s]*)/.exec(output);
  return m?.[1];
}

/** From `apt-cache policy PKG`: the candidate version. */
export function parseCandidate(output: string): string | undefined {
  const m = /Candidate:\s*(\S+)/.exec(output);
  return m && m[1] !== '(none)' ? m[1] : undefined;
}

function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(cmd, args, { env: { ...process.env, PATH: toolPath(), LC_ALL: 'C' }, maxBuffer: 4 << 20 }, (err, stdout) => {
      if (err) reject(err);
      else resolve(stdout);
    });
  });
}

/** apt-cache costs ~1.4 s; the service asks once per 10 minutes (a later apt-get update is noticed then). */
const KERNEL_MEMO_MS = 10 * 60 * 1000;
let kernelMemo: { at: number; value: Promise<KernelPackage> } | undefined;

export function resolveKernelPackage(): Promise<KernelPackage> {
  if (kernelMemo && Date.now() - kernelMemo.at < KERNEL_MEMO_MS) return kernelMemo.value;
  const value = queryKernelPackage();
  kernelMemo = { at: Date.now(), value };
  value.catch(() => (kernelMemo = undefined));
  return value;
}

async function queryKernelPackage(): Promise<KernelPackage> {
  const fail = (why: string, cause?: unknown) =>
    new SandboxError(ErrorCode.ImageBuildFailed, `cannot resolve the guest kernel package (${KERNEL_META_PACKAGE}): ${why}; run 'sudo apt-get update' and try again`, { cause });
  let name: string | undefined;
  try {
    name = parseKernelDepends(await run('apt-cache', ['depends', KERNEL_META_PACKAGE]));
  } catch (err) {
    throw fail('apt-cache failed', err);
  }
  if (!name) throw fail('apt knows no such package');
  let version: string | undefined;
  try {
    version = parseCandidate(await run('apt-cache', ['policy', name]));
  } catch (err) {
    throw fail(`apt-cache policy ${name} failed`, err);
  }
  if (!version) throw fail(`${name} has no installable version`);
  return { name, version };
}

// ---------------------------------------------------------------------------------------------
// Hashes

/** File hashes by identity (dev, inode, size, mtime), so the guest's ~100 MB node is hashed once per process. */
const fileHashes = new Map<string, string>();

async function sha256File(file: string): Promise<string> {
  const st = await fs.stat(file);
  const key = `${file}\0${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}:${st.ctimeMs}`;
  const known = fileHashes.get(key);
  if (known) return known;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  const hex = hash.digest('hex');
  if (fileHashes.size > 10_000) fileHashes.clear();
  fileHashes.set(key, hex);
  return hex;
}

/** sha256 over every file under dir (sorted relative paths, contents, executable bit). Symlinks are followed, as the image copy does. */
export async function hashDirectory(dir: string): Promise<string> {
  const hash = createHash('sha256');
  const walk = async (rel: string, depth: number): Promise<void> => {
    if (depth > 64) throw new SandboxError(ErrorCode.BadArgument, `${dir} is nested too deeply (a symlink loop?)`);
    const names = (await fs.readdir(path.join(dir, rel))).sort();
    for (const name of names) {
      const r = rel ? `${rel}/${name}` : name;
      const st = await fs.stat(path.join(dir, r));
      if (st.isDirectory()) {
        hash.update(`D ${r}\n`);
        await walk(r, depth + 1);
      } else if (st.isFile()) {
        hash.update(`F ${r} ${st.mode & 0o111 ? 'x' : '-'} ${await sha256File(path.join(dir, r))}\n`);
      }
    }
  };
  await walk('', 0);
  return hash.digest('hex');
}

function envPart(names: readonly string[]): string {
  return names.map((n) => `${n}=${process.env[n] ?? ''}`).join('\n');
}

/**
 * SANDBOXVM_EXTRA_PACKAGES: space-separated Debian packages added to the root on top of
 * rootfs-packages.txt (e.g. "openssh-server qemu-guest-agent" for `npm run bench -- agent`;
 * guest/sandboxvm-init starts sshd and qemu-ga when they are installed). Sorted and unique, so
 * the order does not matter; names are checked against Debian's rules.
 */
export function extraPackages(value = process.env.SANDBOXVM_EXTRA_PACKAGES): string[] {
  const pkgs = [...new Set((value ?? '').split(/\s+/).filter(Boolean))].sort();
  for (const p of pkgs) {
    if (!/^[a-z0-9][a-z0-9.+-]+$/.test(p)) throw new SandboxError(ErrorCode.BadArgument, `SANDBOXVM_EXTRA_PACKAGES: ${JSON.stringify(p)} is not a Debian package name`);
  }
  return pkgs;
}

/** The stage-1 hash's line for the extra packages: none at all when there are none, so the default image's hash does not depend on the variable. */
function extraPackagesPart(): string {
  const pkgs = extraPackages();
  return pkgs.length > 0 ? `extra-packages ${pkgs.join(',')}\n` : '';
}

/**
 * build-rootfs.sh reads the package list next to itself. With extra packages, stage 1 runs a copy
 * of the stage-1 assets whose rootfs-packages.txt has them appended, so the script (a hashed asset
 * of every image) stays as it is. Returns the directory to run build-rootfs.sh from.
 */
async function stage1Assets(assets: string, tmp: string, extras: readonly string[]): Promise<string> {
  if (extras.length === 0) return assets;
  for (const f of STAGE1_ASSETS) {
    await fs.mkdir(path.dirname(path.join(tmp, f)), { recursive: true });
    await fs.copyFile(path.join(assets, f), path.join(tmp, f));
    await fs.chmod(path.join(tmp, f), (await fs.stat(path.join(assets, f))).mode & 0o777);
  }
  await fs.appendFile(path.join(tmp, 'rootfs-packages.txt'), `# SANDBOXVM_EXTRA_PACKAGES\n${extras.join('\n')}\n`);
  return tmp;
}

export async function recipeHashes(opts: RecipeOptions): Promise<{ stage1: string; stage2: string }> {
  const assets = opts.assetsDir ?? imageAssetsDir();
  const kernel = opts.kernel ?? (await resolveKernelPackage());
  const h1 = createHash('sha256').update('sandboxvm-stage1-v1\n');
  for (const f of STAGE1_ASSETS) h1.update(`${f} ${await sha256File(path.join(assets, f))}\n`);
  h1.update(`kernel ${kernel.name} ${kernel.version}\n${envPart(STAGE1_ENV)}\n`);
  h1.update(extraPackagesPart());
  const stage1 = h1.digest('hex');

  const h2 = createHash('sha256').update(`sandboxvm-stage2-v1\nstage1 ${stage1}\n`);
  for (const f of STAGE2_ASSETS) h2.update(`${f} ${await sha256File(path.join(assets, f))}\n`);
  let nodeHash: string;
  let agentHash: string;
  try {
    nodeHash = await sha256File(opts.nodeBinary);
  } catch (err) {
    throw new SandboxError(ErrorCode.BadArgument, `the guest's node binary ${opts.nodeBinary} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  try {
    agentHash = await hashDirectory(opts.agentDir);
  } catch (err) {
    throw err instanceof SandboxError ? err : new SandboxError(ErrorCode.BadArgument, `the agent directory ${opts.agentDir} cannot be read: ${(err as Error).message}`, { cause: err });
  }
  h2.update(`node ${nodeHash}\nagent ${agentHash}\n${envPart(STAGE2_ENV)}\n`);
  return { stage1, stage2: h2.digest('hex') };
}

// ---------------------------------------------------------------------------------------------
// Cache layout

export function stage1Dir(cacheDir: string, stage1Hash: string): string {
  return path.join(cacheDir, `stage1-${stage1Hash.slice(0, 16)}`);
}

export function baseDir(cacheDir: string, stage2Hash: string): string {
  return path.join(cacheDir, `base-${stage2Hash.slice(0, 16)}`);
}

export function buildLogPath(cacheDir: string, stage2Hash: string): string {
  return path.join(cacheDir, `build-${stage2Hash.slice(0, 16)}.log`);
}

const STAGE1_FILES = ['vmlinuz', 'initrd.img', 'rootfs.tar', 'stage1.json'];
const BASE_FILES = ['base.qcow2', 'vmlinuz', 'initrd.img', 'manifest.json'];

async function complete(dir: string, files: readonly string[]): Promise<boolean> {
  for (const f of files) {
    try {
      if (!(await fs.stat(path.join(dir, f))).isFile()) return false;
    } catch {
      return false;
    }
  }
  return true;
}

function describe(dir: string, hash: string): BaseImage {
  return { hash, dir, kernel: path.join(dir, 'vmlinuz'), initrd: path.join(dir, 'initrd.img'), disk: path.join(dir, 'base.qcow2') };
}

// ---------------------------------------------------------------------------------------------
// Lock

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(cancelled());
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(t);
      reject(cancelled());
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

function cancelled(): SandboxError {
  return new SandboxError(ErrorCode.Cancelled, 'building the base image was cancelled');
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Takes <cacheDir>/build.lock (O_EXCL, holding our pid); waits while a live process holds it and
 * breaks it when its holder is dead. The lock only avoids duplicate work: publishing is an atomic
 * rename, so even two builders at once cannot leave a broken cache.
 */
async function acquireLock(cacheDir: string, signal?: AbortSignal): Promise<() => Promise<void>> {
  const file = path.join(cacheDir, LOCK_FILE);
  for (;;) {
    if (signal?.aborted) throw cancelled();
    try {
      const h = await fs.open(file, 'wx', 0o644);
      try {
        await h.writeFile(`${process.pid}\n`);
      } finally {
        await h.close();
      }
      return async () => {
        await fs.rm(file, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let stale = false;
    try {
      const text = await fs.readFile(file, 'utf8');
      const pid = Number.parseInt(text, 10);
      if (Number.isInteger(pid) && pid > 0) stale = !pidAlive(pid);
      else stale = Date.now() - (await fs.stat(file)).mtimeMs > 10_000; // empty: being written, or its writer died
    } catch {
      continue; // vanished meanwhile: try again at once
    }
    if (stale) {
      await fs.rm(file, { force: true });
      continue;
    }
    await sleep(500, signal);
  }
}

/**
 * Takes the build lock as acquireLock does (a dead holder's lock is broken), waiting for a live
 * holder up to `waitMs` (at least 2 s); undefined when it is still held then (image GC: a build
 * under way is never raced).
 */
export async function tryBuildLock(cacheDir: string, waitMs: number): Promise<(() => Promise<void>) | undefined> {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), Math.max(waitMs, 2000));
  try {
    return await acquireLock(cacheDir, controller.signal);
  } catch (err) {
    if ((err as SandboxError).code === ErrorCode.Cancelled) return undefined;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

// ---------------------------------------------------------------------------------------------
// Running a stage

interface StageRun {
  script: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  log: FileHandle;
  /** Maps the script's own step to the overall one. */
  onStep: (p: ImageProgress) => void;
  signal?: AbortSignal;
}

/** Runs a stage script; resolves on exit 0, rejects with the exit status otherwise. */
function runStage(r: StageRun): Promise<void> {
  return new Promise((resolve, reject) => {
    if (r.signal?.aborted) return reject(cancelled());
    const child = spawn('bash', [r.script, ...r.args], { env: r.env, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    let killTimer: NodeJS.Timeout | undefined;
    const onAbort = () => {
      if (child.pid) {
        try {
          process.kill(-child.pid, 'SIGTERM');
        } catch {
          // already gone
        }
        killTimer = setTimeout(() => {
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            // already gone
          }
        }, 5000);
      }
    };
    r.signal?.addEventListener('abort', onAbort, { once: true });
    let writes = Promise.resolve();
    const write = (s: string) => {
      writes = writes.then(() => r.log.write(s)).then(() => undefined, () => undefined);
    };
    let pending = '';
    child.stdout!.setEncoding('utf8');
    child.stdout!.on('data', (chunk: string) => {
      pending += chunk;
      let i: number;
      while ((i = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, i);
        pending = pending.slice(i + 1);
        write(line + '\n');
        const p = parseProgressLine(line);
        if (p) r.onStep(p);
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => write(chunk.toString('utf8')));
    child.on('error', (err) => {
      r.signal?.removeEventListener('abort', onAbort);
      reject(err);
    });
    child.on('close', (code, sig) => {
      r.signal?.removeEventListener('abort', onAbort);
      if (killTimer) clearTimeout(killTimer);
      if (pending) write(pending + '\n');
      void writes.then(() => {
        if (r.signal?.aborted) reject(cancelled());
        else if (code === 0) resolve();
        else reject(new Error(`${path.basename(r.script)} exited with ${code ?? sig}`));
      });
    });
  });
}

async function tail(file: string, bytes = 64 * 1024): Promise<string> {
  try {
    const h = await fs.open(file, 'r');
    try {
      const { size } = await h.stat();
      const buf = Buffer.alloc(Math.min(bytes, size));
      await h.read(buf, 0, buf.length, size - buf.length);
      return buf.toString('utf8');
    } finally {
      await h.close();
    }
  } catch {
    return '';
  }
}

/** The last line a script wrote before our own FAILED trailer: usually the reason, worth showing. */
export function lastScriptLine(log: string): string | undefined {
  const lines = log.split('\n');
  const end = lines.findIndex((l) => l.startsWith('FAILED: '));
  const before = (end >= 0 ? lines.slice(0, end) : lines).map((l) => l.trim()).filter((l) => l && !l.startsWith('STEP ') && !l.startsWith('==='));
  const last = before[before.length - 1];
  return last && last.length > 300 ? last.slice(0, 300) + '...' : last;
}

/** Renames a finished temp dir into place; if another builder got there first, keeps theirs. */
async function publish(tmp: string, dir: string, files: readonly string[]): Promise<void> {
  try {
    await fs.rename(tmp, dir);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await complete(dir, files))) {
      await fs.rm(tmp, { recursive: true, force: true });
      return;
    }
    throw err;
  }
}

// ---------------------------------------------------------------------------------------------
// The entry point

/**
 * Returns the cached base image for this recipe, building whatever stage is missing. Idempotent;
 * safe against concurrent callers (a lock file in cacheDir); a failed build leaves nothing
 * half-written in the cache (build into a temp dir, rename into place).
 */
export async function ensureBaseImage(opts: EnsureImageOptions): Promise<BaseImage> {
  const cacheDir = path.resolve(opts.cacheDir);
  const assets = imageAssetsDir();
  const kernel = await resolveKernelPackage();
  const hashes = await recipeHashes({ agentDir: opts.agentDir, nodeBinary: opts.nodeBinary, assetsDir: assets, kernel });
  const s1Dir = stage1Dir(cacheDir, hashes.stage1);
  const bDir = baseDir(cacheDir, hashes.stage2);
  if (await complete(bDir, BASE_FILES)) return describe(bDir, hashes.stage2);

  const mode = await checkImageBuildPrerequisites();
  try {
    await fs.mkdir(cacheDir, { recursive: true });
  } catch (err) {
    throw asSandboxError(err, `creating the image cache ${cacheDir}`);
  }
  const release = await acquireLock(cacheDir, opts.signal).catch((err) => {
    throw asSandboxError(err, `locking the image cache ${cacheDir}`);
  });
  try {
    if (await complete(bDir, BASE_FILES)) return describe(bDir, hashes.stage2);
    return await build(opts, cacheDir, assets, kernel, hashes, s1Dir, bDir, mode);
  } finally {
    await release();
  }
}

async function build(
  opts: EnsureImageOptions,
  cacheDir: string,
  assets: string,
  kernel: KernelPackage,
  hashes: { stage1: string; stage2: string },
  s1Dir: string,
  bDir: string,
  mode: RootfsMode,
): Promise<BaseImage> {
  // We hold the lock: any temp dir left in the cache is from a build that died. Remove them.
  for (const name of await fs.readdir(cacheDir)) {
    if (name.startsWith('.tmp-')) await fs.rm(path.join(cacheDir, name), { recursive: true, force: true }).catch(() => undefined);
  }
  const needStage1 = !(await complete(s1Dir, STAGE1_FILES));
  const total = (needStage1 ? STAGE1_STEPS : 0) + STAGE2_STEPS;
  // Until a stage prints its first STEP line, failures are blamed on that stage's first step.
  let current: ImageProgress = { step: 1, total, message: needStage1 ? 'building the kernel, initramfs and Debian root' : 'assembling the image' };
  const report = (offset: number) => (p: ImageProgress) => {
    current = { step: offset + p.step, total, message: p.message };
    try {
      opts.onProgress?.(current);
    } catch {
      // a listener's failure is not the build's
    }
  };
  const logPath = buildLogPath(cacheDir, hashes.stage2);
  const log = await fs.open(logPath, 'w', 0o644);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    PATH: toolPath(),
    LC_ALL: 'C.UTF-8',
    SANDBOXVM_KERNEL_PKG: kernel.name,
    SANDBOXVM_KERNEL_VERSION: kernel.version,
    SANDBOXVM_ROOTFS_MODE: mode,
  };
  const tmpDirs: string[] = [];
  try {
    await log.write(`sandboxvm base image build ${new Date().toISOString()}\nstage1 ${hashes.stage1}\nstage2 ${hashes.stage2}\nkernel ${kernel.name} ${kernel.version}\nagent ${opts.agentDir}\nnode ${opts.nodeBinary}\n\n`);
    if (needStage1) {
      const tmp = path.join(cacheDir, `.tmp-${path.basename(s1Dir)}-${process.pid}`);
      tmpDirs.push(tmp);
      await fs.mkdir(tmp);
      const extras = extraPackages();
      const tmpAssets = path.join(cacheDir, `.tmp-assets-${path.basename(s1Dir)}-${process.pid}`);
      if (extras.length > 0) {
        tmpDirs.push(tmpAssets);
        await log.write(`extra packages (SANDBOXVM_EXTRA_PACKAGES): ${extras.join(' ')}\n`);
      }
      const s1Assets = await stage1Assets(assets, tmpAssets, extras);
      await runStage({ script: path.join(s1Assets, 'build-rootfs.sh'), args: [tmp], env, log, onStep: report(0), signal: opts.signal });
      await publish(tmp, s1Dir, STAGE1_FILES);
      if (extras.length > 0) await fs.rm(tmpAssets, { recursive: true, force: true });
    }
    if (needStage1) current = { step: STAGE1_STEPS + 1, total, message: 'assembling the image' };
    const tmp = path.join(cacheDir, `.tmp-${path.basename(bDir)}-${process.pid}`);
    tmpDirs.push(tmp);
    await fs.mkdir(tmp);
    await runStage({
      script: path.join(assets, 'assemble-image.sh'),
      args: [s1Dir, path.resolve(opts.agentDir), path.resolve(opts.nodeBinary), tmp],
      env,
      log,
      onStep: report(needStage1 ? STAGE1_STEPS : 0),
      signal: opts.signal,
    });
    const manifestFile = path.join(tmp, 'manifest.json');
    const manifest = JSON.parse(await fs.readFile(manifestFile, 'utf8')) as Record<string, unknown>;
    await writeJsonAtomic(manifestFile, { ...manifest, stage1Hash: hashes.stage1, stage2Hash: hashes.stage2 });
    // The base is shared by every VM's overlay: make it read-only.
    for (const f of BASE_FILES) await fs.chmod(path.join(tmp, f), 0o444);
    await publish(tmp, bDir, BASE_FILES);
    await log.write(`\ndone: ${bDir}\n`);
    return { ...describe(bDir, hashes.stage2), stage1: hashes.stage1, built: true };
  } catch (err) {
    await log.write(`\nFAILED: ${(err as Error)?.stack ?? String(err)}\n`).catch(() => undefined);
    for (const t of tmpDirs) await fs.rm(t, { recursive: true, force: true }).catch(() => undefined);
    if (err instanceof SandboxError) throw err;
    const code = (err as NodeJS.ErrnoException)?.code;
    if (code === 'ENOSPC') throw asSandboxError(err, `building the base image in ${cacheDir}`);
    const out = await tail(logPath);
    if (/No space left on device|ENOSPC/.test(out)) {
      throw new SandboxError(ErrorCode.DiskFull, `building the base image failed at step ${current.step} (${current.message}): the disk is full; free some space in ${cacheDir} and ${os.tmpdir()} and try again; see ${logPath}`, { cause: err });
    }
    const reason = lastScriptLine(out);
    throw new SandboxError(ErrorCode.ImageBuildFailed, `building the base image failed at step ${current.step} (${current.message})${reason ? `: ${reason}` : ''}; see ${logPath}`, { cause: err });
  } finally {
    await log.close().catch(() => undefined);
  }
}
