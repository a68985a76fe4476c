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
 *   4. remove the VM, stop the user's service, delete the work directory, and the user if made here.
 */
import { after, before, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, REPO, type CliResult } from './fixture';
import { baseDir, buildLogPath, recipeHashes } from '../../runtime/image/baseImage';

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
