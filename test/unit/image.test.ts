import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs, readFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  hashDirectory,
  imageAssetsDir,
  lastScriptLine,
  parseCandidate,
  parseKernelDepends,
  parseProgressLine,
  recipeHashes,
  STAGE1_ASSETS,
  STAGE1_STEPS,
  STAGE2_ASSETS,
  STAGE2_STEPS,
} from '../../runtime/image/baseImage';
import { REQUIRED_TOOLS, assessPrerequisites, prerequisitesMessage } from '../../runtime/image/prerequisites';

const kernel = { name: 'linux-image-6.1.0-99-cloud-amd64', version: '6.1.999-1' };

async function fixture(): Promise<{ root: string; agentDir: string; nodeBinary: string }> {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'image-test-'));
  const agentDir = path.join(root, 'agent');
  await fs.mkdir(path.join(agentDir, 'node_modules', 'node-pty', 'build', 'Release'), { recursive: true });
  await fs.writeFile(path.join(agentDir, 'agent.js'), 'console.log("agent")\n');
  await fs.writeFile(path.join(agentDir, 'node_modules', 'node-pty', 'package.json'), '{}\n');
  await fs.writeFile(path.join(agentDir, 'node_modules', 'node-pty', 'build', 'Release', 'pty.node'), Buffer.from([1, 2, 3]));
  const nodeBinary = path.join(root, 'node');
  await fs.writeFile(path.join(nodeBinary), 'not really node', { mode: 0o755 });
  return { root, agentDir, nodeBinary };
}

test('recipe hashes are stable and follow agent, node and kernel changes', async () => {
  const f = await fixture();
  try {
    const a = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel });
    const b = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel });
    assert.deepEqual(a, b, 'same inputs, same hashes');
    assert.match(a.stage1, /^[0-9a-f]{64}$/);
    assert.match(a.stage2, /^[0-9a-f]{64}$/);

    // Touching a file without changing it changes nothing.
    const agentJs = path.join(f.agentDir, 'agent.js');
    await fs.utimes(agentJs, new Date(), new Date(Date.now() + 5000));
    assert.deepEqual(await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel }), a);

    // An agent file's content: stage 2 changes, stage 1 does not.
    await fs.writeFile(agentJs, 'console.log("agent v2")\n');
    const c = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel });
    assert.equal(c.stage1, a.stage1);
    assert.notEqual(c.stage2, a.stage2);

    // A new file deep in node_modules.
    await fs.writeFile(path.join(f.agentDir, 'node_modules', 'node-pty', 'build', 'Release', 'extra.node'), 'x');
    const d = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel });
    assert.notEqual(d.stage2, c.stage2);

    // The executable bit of an agent file.
    await fs.chmod(agentJs, 0o755);
    const e = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel });
    assert.notEqual(e.stage2, d.stage2);

    // The node binary.
    await fs.writeFile(f.nodeBinary, 'another node');
    const g = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel });
    assert.equal(g.stage1, a.stage1);
    assert.notEqual(g.stage2, e.stage2);

    // The kernel version changes both stages.
    const h = await recipeHashes({ agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel: { ...kernel, version: '6.1.1000-1' } });
    assert.notEqual(h.stage1, g.stage1);
    assert.notEqual(h.stage2, g.stage2);
  } finally {
    await fs.rm(f.root, { recursive: true, force: true });
  }
});

test('recipe hashes follow the scripts of each stage', async () => {
  const f = await fixture();
  try {
    const assetsDir = path.join(f.root, 'assets');
    const real = imageAssetsDir();
    for (const a of [...STAGE1_ASSETS, ...STAGE2_ASSETS]) {
      await fs.mkdir(path.dirname(path.join(assetsDir, a)), { recursive: true });
      await fs.copyFile(path.join(real, a), path.join(assetsDir, a));
    }
    const opts = { agentDir: f.agentDir, nodeBinary: f.nodeBinary, kernel, assetsDir };
    const base = await recipeHashes(opts);
    assert.deepEqual(base, await recipeHashes({ ...opts, assetsDir: real }), 'copies hash like the originals');

    await fs.appendFile(path.join(assetsDir, 'guest/sandboxvm-init'), '# changed\n');
    const s2 = await recipeHashes(opts);
    assert.equal(s2.stage1, base.stage1, 'a rootfs script is stage 2 only');
    assert.notEqual(s2.stage2, base.stage2);

    await fs.appendFile(path.join(assetsDir, 'rootfs-packages.txt'), 'htop\n');
    const s1 = await recipeHashes(opts);
    assert.notEqual(s1.stage1, s2.stage1, 'the package list is stage 1');
    assert.notEqual(s1.stage2, s2.stage2, 'stage 2 builds on stage 1');
  } finally {
    await fs.rm(f.root, { recursive: true, force: true });
  }
});

test('hashDirectory sees a rename and returns when it is undone', async () => {
  const f = await fixture();
  try {
    const h1 = await hashDirectory(f.agentDir);
    await fs.rename(path.join(f.agentDir, 'agent.js'), path.join(f.agentDir, 'main.js'));
    assert.notEqual(await hashDirectory(f.agentDir), h1);
    await fs.rename(path.join(f.agentDir, 'main.js'), path.join(f.agentDir, 'agent.js'));
    assert.equal(await hashDirectory(f.agentDir), h1);
  } finally {
    await fs.rm(f.root, { recursive: true, force: true });
  }
});

test('progress lines are parsed; other output is not progress', () => {
  assert.deepEqual(parseProgressLine('STEP 1 5 resolving the kernel package'), { step: 1, total: 5, message: 'resolving the kernel package' });
  assert.deepEqual(parseProgressLine('STEP 4 4 converting to qcow2\r'), { step: 4, total: 4, message: 'converting to qcow2' });
  assert.deepEqual(parseProgressLine('STEP 2 5 downloading the kernel (linux-image-6.1.0-56-cloud-amd64 6.1.192-2)'), {
    step: 2,
    total: 5,
    message: 'downloading the kernel (linux-image-6.1.0-56-cloud-amd64 6.1.192-2)',
  });
  for (const line of ['', 'STEP', 'STEP x 5 nope', 'STEP 6 5 beyond the total', 'STEP 0 5 zero', ' STEP 1 5 indented', 'I: running apt-get update...', 'step 1 5 lower case']) {
    assert.equal(parseProgressLine(line), undefined, JSON.stringify(line));
  }
});

test('the scripts print as many steps as the wrapper expects', () => {
  const dir = imageAssetsDir();
  for (const [script, total] of [['build-rootfs.sh', STAGE1_STEPS], ['assemble-image.sh', STAGE2_STEPS]] as const) {
    const text = readFileSync(path.join(dir, script), 'utf8');
    assert.match(text, new RegExp(`^TOTAL=${total}$`, 'm'), script);
    const steps = [...text.matchAll(/^step (\d+) /gm)].map((m) => Number(m[1]));
    assert.deepEqual(steps, Array.from({ length: total }, (_, i) => i + 1), script);
  }
});

test('missing host tools are named with their apt packages', () => {
  const tools = new Set(REQUIRED_TOOLS.map((t) => t.tool).filter((t) => t !== 'mmdebstrap' && t !== 'qemu-img'));
  const r = assessPrerequisites({ platform: 'linux', uid: 0, user: 'root', tools, subuid: false, subgid: false });
  assert.equal(r.ok, false);
  const msg = prerequisitesMessage(r);
  assert.match(msg, /qemu-img \(package qemu-utils\)/);
  assert.match(msg, /mmdebstrap \(package mmdebstrap\)/);
  assert.match(msg, /sudo apt-get install qemu-utils mmdebstrap$/);
  assert.doesNotMatch(msg, /busybox/);
  const all = new Set(REQUIRED_TOOLS.map((t) => t.tool));
  assert.equal(assessPrerequisites({ platform: 'linux', uid: 0, user: 'root', tools: all, subuid: false, subgid: false }).ok, true);
  assert.match(prerequisitesMessage(assessPrerequisites({ platform: 'darwin', uid: 0, user: 'root', tools: all, subuid: false, subgid: false })), /Linux host/);
  const shared = prerequisitesMessage(assessPrerequisites({ platform: 'linux', uid: 0, user: 'root', tools: new Set([...all].filter((t) => !t.startsWith('apt'))), subuid: false, subgid: false }));
  assert.match(shared, /install apt$/, 'a package is listed once');
});

test('apt-cache output is parsed for the kernel package and version', () => {
  const depends = 'linux-image-cloud-amd64\n  Depends: linux-image-6.1.0-56-cloud-amd64\n';
  assert.equal(parseKernelDepends(depends), 'linux-image-6.1.0-56-cloud-amd64');
  assert.equal(parseKernelDepends('linux-image-cloud-amd64\n'), undefined);
  const policy = 'linux-image-6.1.0-56-cloud-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n  Version table:\n     6.1.192-2 500\n';
  assert.equal(parseCandidate(policy), '6.1.192-2');
  assert.equal(parseCandidate('x:\n  Installed: (none)\n  Candidate: (none)\n'), undefined);
});

test('the reason shown in a build error is the last line the script wrote', () => {
  const log = 'header\nSTEP 1 4 unpacking the Debian root\n=== step 1/4: unpacking\ntar: base.raw: Cannot write: Input/output error\n\nFAILED: Error: assemble-image.sh exited with 2\n    at x\n';
  assert.equal(lastScriptLine(log), 'tar: base.raw: Cannot write: Input/output error');
  assert.equal(lastScriptLine('STEP 1 5 x\n'), undefined);
  assert.equal(lastScriptLine('y'.repeat(400))?.length, 303);
});
