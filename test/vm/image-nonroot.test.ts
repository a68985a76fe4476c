/**
 * vm: the base image built by a normal user is as faithful as root's.
 *
 * Procedure (runs as root, as CI does; skipped otherwise since only root can make the user):
 *   1. make a throwaway user (useradd) unless it exists, and a work directory it owns holding its
 *      own image cache (SANDBOXVM_IMAGE_CACHE) and data home (SANDBOXVM_HOME); the repo's dist/
 *      (built beforehand) must be readable by it;
 *   2. as that user (uid, gid, no supplementary groups), `sandboxvm image build` from an empty
 *      cache: both stages, timed; the image lands under the recipe hash root computes for the same
 *      agent and node, and its build log is the user's and names the mmdebstrap mode;
 *   3. as that user, create and start a VM on that image, and check in the guest that
 *      /usr/bin/su and /usr/bin/passwd are setuid root, /etc/shadow is root:shadow 0640, /root is
 *      root's 0700, and exec works;
 *   4. list every inode of the user's image and of root's image for the same recipe (root's shared
 *      cache; built as root first if missing) with debugfs: path, type and mode, owner, group,
 *      size: the two lists are equal;
 *   5. remove the VM, stop the user's service, delete the work directory, and the user if made here.
 */
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, REPO, TestHome, type CliResult } from './fixture';
import { baseDir, buildLogPath, recipeHashes } from '../../runtime/image/baseImage';
import { imageCacheDir } from '../../runtime/common/paths';

const USER = 'sandboxvm-nonroot';
const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : 'needs root to create a throwaway user (CI runs as root)';

let uid = -1;
let gid = -1;
let home = '';
let work = '';
let madeUser = false;

function idOf(flag: '-u' | '-g'): number {
  const r = spawnSync('id', [flag, USER], { encoding: 'utf8' });
  return r.status === 0 ? Number(r.stdout.trim()) : -1;
}

function userEnv(): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
    HOME: home,
    USER,
    LOGNAME: USER,
    LANG: 'C.UTF-8',
    SANDBOXVM_IMAGE_CACHE: path.join(work, 'images'),
    SANDBOXVM_HOME: path.join(work, 'home'),
  };
}

/** Runs the CLI as the throwaway user (libuv drops supplementary groups when it sets the uid). */
function asUser(args: string[], timeoutMs = 300_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { uid, gid, cwd: work, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`sandboxvm ${args.join(' ')} (as ${USER}) timed out; stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

async function ok(args: string[], timeoutMs?: number): Promise<string> {
  const r = await asUser(args, timeoutMs);
  if (r.code !== 0) throw new Error(`sandboxvm ${args.join(' ')} (as ${USER}) exited ${r.code}: ${r.stderr}${r.stdout}`);
  return r.stdout;
}

before(() => {
  if (!isRoot) return;
  if (idOf('-u') < 0) {
    const r = spawnSync('useradd', ['--create-home', '--shell', '/bin/bash', USER], { encoding: 'utf8' });
    assert.equal(r.status, 0, `useradd ${USER}: ${r.stderr}`);
    madeUser = true;
  }
  uid = idOf('-u');
  gid = idOf('-g');
  home = spawnSync('getent', ['passwd', USER], { encoding: 'utf8' }).stdout.split(':')[5] || '/nonexistent';
  const node = spawnSync('test', ['-x', process.execPath], { uid, gid });
  assert.equal(node.status, 0, `${USER} cannot run ${process.execPath}: run the tests with a node other users can run`);
  for (const f of ['dist/cli.js', 'dist/service.js', 'dist/guest-agent/agent.js']) {
    assert.ok(fs.existsSync(path.join(REPO, f)), `${f} is missing: run npm run build first`);
    const r = spawnSync('test', ['-r', path.join(REPO, f)], { uid, gid });
    assert.equal(r.status, 0, `${USER} cannot read ${path.join(REPO, f)}: make the repository readable to other users`);
  }
  work = fs.mkdtempSync('/tmp/sbxt-nonroot-');
  fs.chownSync(work, uid, gid);
});

after(async () => {
  if (!isRoot || !work) return;
  const list = await asUser(['list', '--json'], 30_000).catch(() => undefined);
  if (list?.code === 0) {
    for (const vm of JSON.parse(list.stdout) as { name: string }[]) await asUser(['rm', '--force', vm.name], 60_000).catch(() => undefined);
  }
  await asUser(['service', 'stop'], 30_000).catch(() => undefined);
  spawnSync('pkill', ['-9', '-f', work]);
  fs.rmSync(work, { recursive: true, force: true });
  if (madeUser) spawnSync('userdel', ['--remove', USER]);
});

test('a normal user builds the base image under the recipe hash root computes', { skip, timeout: 30 * 60_000 }, async (t) => {
  const started = Date.now();
  await ok(['image', 'build'], 25 * 60_000);
  t.diagnostic(`image build as ${USER} (uid ${uid}), empty cache: ${((Date.now() - started) / 1000).toFixed(1)} s`);

  const cache = path.join(work, 'images');
  const hashes = await recipeHashes({ agentDir: path.join(REPO, 'dist', 'guest-agent'), nodeBinary: process.execPath });
  const dir = baseDir(cache, hashes.stage2);
  assert.ok(fs.existsSync(path.join(dir, 'base.qcow2')), `expected the image at ${dir}; the cache holds ${fs.readdirSync(cache).join(', ')}`);
  const log = buildLogPath(cache, hashes.stage2);
  assert.equal(fs.statSync(log).uid, uid, 'the build ran as the user');
  assert.equal(fs.statSync(path.join(dir, 'base.qcow2')).uid, uid);
  const mode = /^mmdebstrap mode: (\S+)$/m.exec(fs.readFileSync(log, 'utf8'))?.[1];
  assert.ok(mode === 'fakechroot' || mode === 'unshare', `the log names a normal user's mmdebstrap mode (got ${mode})`);
  t.diagnostic(`mmdebstrap mode: ${mode}`);
});

test("the user's VM has root's owners, setuid bits and modes, and runs commands", { skip, timeout: 10 * 60_000 }, async () => {
  await ok(['create', 'nr', '--memory', '512M']);
  await ok(['start', 'nr'], 600_000);
  const stat = await ok(['exec', 'nr', '--', 'stat', '-c', '%n %U %G %a', '/usr/bin/su', '/usr/bin/passwd', '/etc/shadow', '/root', '/etc/passwd']);
  assert.deepEqual(stat.trim().split('\n'), [
    '/usr/bin/su root root 4755',
    '/usr/bin/passwd root root 4755',
    '/etc/shadow root shadow 640',
    '/root root root 700',
    '/etc/passwd root root 644',
  ]);
  const who = await ok(['exec', 'nr', '--', 'sh', '-c', 'id -u; touch /root/x && echo wrote']);
  assert.deepEqual(who.trim().split('\n'), ['0', 'wrote']);
  await ok(['stop', 'nr'], 120_000);
});

/** `path mode uid gid size` for every inode under / of a raw ext4 image (debugfs, one run per tree level). */
function listImage(raw: string): string[] {
  const out: string[] = [];
  let level = ['/'];
  while (level.length > 0) {
    const r = spawnSync('debugfs', ['-f', '-', raw], { input: level.map((d) => `ls -p "${d}"\n`).join(''), encoding: 'utf8', maxBuffer: 64 << 20 });
    assert.equal(r.status, 0, `debugfs ${raw}: ${r.stderr}`);
    const next: string[] = [];
    let dir = '';
    for (const line of r.stdout.split('\n')) {
      const cmd = /^debugfs: ls -p "(.*)"$/.exec(line);
      if (cmd) dir = cmd[1];
      const m = /^\/(\d+)\/(\d+)\/(\d+)\/(\d+)\/(.*)\/(\d*)\/$/.exec(line);
      if (!m || m[5] === '.' || m[5] === '..') continue;
      const p = `${dir === '/' ? '' : dir}/${m[5]}`;
      const isDir = (parseInt(m[2], 8) & 0o170000) === 0o040000;
      out.push(`${p} ${m[2]} ${m[3]} ${m[4]} ${isDir ? '-' : m[6]}`);
      if (isDir) next.push(p);
    }
    level = next;
  }
  return out.sort();
}

function rawCopy(qcow2: string, raw: string): string {
  const r = spawnSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', qcow2, raw], { encoding: 'utf8' });
  assert.equal(r.status, 0, `qemu-img convert ${qcow2}: ${r.stderr}`);
  return raw;
}

test("the user's image has the same inodes, owners, modes and sizes as root's", { skip, timeout: 30 * 60_000 }, async (t) => {
  const hashes = await recipeHashes({ agentDir: path.join(REPO, 'dist', 'guest-agent'), nodeBinary: process.execPath });
  const userImage = path.join(baseDir(path.join(work, 'images'), hashes.stage2), 'base.qcow2');
  assert.ok(fs.existsSync(userImage), 'the user built the image (first test)');
  const rootImage = path.join(baseDir(imageCacheDir(), hashes.stage2), 'base.qcow2');
  if (!fs.existsSync(rootImage)) {
    const started = Date.now();
    const rootHome = new TestHome();
    try {
      await rootHome.ok(['image', 'build'], { timeoutMs: 25 * 60_000 });
    } finally {
      await rootHome.dispose();
    }
    t.diagnostic(`image build as root: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  }
  const scratch = fs.mkdtempSync('/tmp/sbxt-nonroot-cmp-');
  try {
    const mine = listImage(rawCopy(userImage, path.join(scratch, 'user.raw')));
    const roots = listImage(rawCopy(rootImage, path.join(scratch, 'root.raw')));
    assert.ok(roots.length > 5000, `root's image lists ${roots.length} inodes`);
    assert.ok(mine.includes('/usr/bin/su 104755 0 0 ' + roots.find((l) => l.startsWith('/usr/bin/su '))!.split(' ')[4]));
    const mineSet = new Set(mine);
    const rootSet = new Set(roots);
    const onlyRoot = roots.filter((l) => !mineSet.has(l));
    const onlyUser = mine.filter((l) => !rootSet.has(l));
    assert.deepEqual({ onlyRoot: onlyRoot.slice(0, 20), onlyUser: onlyUser.slice(0, 20) }, { onlyRoot: [], onlyUser: [] });
    t.diagnostic(`${mine.length} inodes, same path, mode, owner, group and size in both images`);
  } finally {
    fs.rmSync(scratch, { recursive: true, force: true });
  }
});
