/**
 * unit: what a host needs to build the base image (runtime/image/prerequisites.ts), from
 * hand-written host facts: root, a normal user with fakechroot, with only unshare's needs, with
 * nothing; the one-sentence message and its merged fix; /etc/subuid parsing; and that who builds
 * never enters the recipe hash.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  REQUIRED_TOOLS,
  assessPrerequisites,
  hasSubordinateRange,
  needsUsernsProbe,
  prerequisitesMessage,
  type HostFacts,
} from '../../runtime/image/prerequisites';
import { recipeHashes } from '../../runtime/image/baseImage';

const base = REQUIRED_TOOLS.map((t) => t.tool);

function facts(over: Partial<HostFacts> & { extra?: string[]; without?: string[] } = {}): HostFacts {
  const { extra = [], without = [], ...rest } = over;
  const tools = new Set([...base, ...extra].filter((t) => !without.includes(t)));
  return { platform: 'linux', uid: 1000, user: 'ada', tools, subuid: false, subgid: false, ...rest };
}

test('root needs only the common tools and builds in root mode', () => {
  assert.deepEqual(assessPrerequisites(facts({ uid: 0 })), { ok: true, missing: [], mode: 'root' });
  const r = assessPrerequisites(facts({ uid: 0, without: ['mmdebstrap'] }));
  assert.equal(r.ok, false);
  assert.deepEqual(r.missing.map((m) => m.fix), ['sudo apt-get install mmdebstrap']);
  assert.equal(needsUsernsProbe(facts({ uid: 0 })), false);
});

test('a normal user with fakeroot and fakechroot builds in fakechroot mode, even when unshare would work too', () => {
  assert.deepEqual(assessPrerequisites(facts({ extra: ['fakeroot', 'fakechroot'] })), { ok: true, missing: [], mode: 'fakechroot' });
  const both = facts({ extra: ['fakeroot', 'fakechroot', 'newuidmap', 'newgidmap', 'unshare'], subuid: true, subgid: true, userns: true });
  assert.equal(assessPrerequisites(both).mode, 'fakechroot');
  assert.equal(needsUsernsProbe(both), false, 'no probe when fakechroot decides');
});

test('without fakechroot, unshare is used when all it needs is there', () => {
  const f = facts({ extra: ['fakeroot', 'newuidmap', 'newgidmap', 'unshare'], subuid: true, subgid: true, userns: true });
  assert.equal(needsUsernsProbe(f), true);
  assert.deepEqual(assessPrerequisites(f), { ok: true, missing: [], mode: 'unshare' });
});

test('a normal user with neither is told to install fakechroot (and fakeroot), in one command', () => {
  const r = assessPrerequisites(facts({ extra: ['unshare'], userns: true }));
  assert.equal(r.ok, false);
  assert.equal(r.mode, undefined);
  assert.deepEqual(r.missing.map((m) => m.fix), ['sudo apt-get install fakeroot', 'sudo apt-get install fakechroot']);
  for (const m of r.missing) assert.match(m.what, /^(fakeroot|fakechroot) \(package \1\) is not installed: a normal user needs it/);
  const msg = prerequisitesMessage(r);
  assert.match(msg, /^cannot build the base image: fakeroot \(package fakeroot\) is not installed: .*; fakechroot \(package fakechroot\) is not installed: .*\. Fix with: sudo apt-get install fakeroot fakechroot$/);
  assert.equal(msg.split('. ').length, 2, 'what is missing, then the fix');
});

test('a requested unshare mode names each thing it lacks with its own fix', () => {
  const r = assessPrerequisites(facts({ extra: ['fakeroot', 'fakechroot', 'unshare'], requestedMode: 'unshare', userns: false, usernsSysctl: 'kernel.apparmor_restrict_unprivileged_userns=0' }));
  assert.equal(r.ok, false);
  const fixes = r.missing.map((m) => m.fix);
  assert.deepEqual(fixes, [
    'sudo apt-get install uidmap',
    'sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 ada',
    'sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0',
  ]);
  assert.match(prerequisitesMessage(r), /Fix with: sudo apt-get install uidmap && sudo usermod .* ada && sudo sysctl -w .*=0$/);
  // a missing subgid range alone is reported too
  const g = assessPrerequisites(facts({ extra: ['fakeroot', 'newuidmap', 'newgidmap', 'unshare'], requestedMode: 'unshare', subuid: true, subgid: false, userns: true }));
  assert.equal(g.missing.length, 1);
  assert.match(g.missing[0].what, /user ada has no range of 65536 subordinate ids/);
});

test('a requested fakechroot mode is kept; an unknown one is refused', () => {
  const ok = assessPrerequisites(facts({ extra: ['fakeroot', 'fakechroot', 'newuidmap', 'newgidmap', 'unshare'], subuid: true, subgid: true, userns: true, requestedMode: 'fakechroot' }));
  assert.equal(ok.mode, 'fakechroot');
  const bad = assessPrerequisites(facts({ extra: ['fakeroot', 'fakechroot'], requestedMode: 'chroot' }));
  assert.equal(bad.ok, false);
  assert.deepEqual(bad.missing.map((m) => m.fix), ['unset SANDBOXVM_ROOTFS_MODE']);
});

test('missing common tools and missing user tools are listed together, packages once', () => {
  const r = assessPrerequisites(facts({ without: ['mkfs.ext4', 'debugfs', 'qemu-img'] }));
  assert.match(prerequisitesMessage(r), /Fix with: sudo apt-get install qemu-utils e2fsprogs fakeroot fakechroot$/);
  assert.equal(r.missing.length, 5);
});

test('other platforms are told to build elsewhere', () => {
  const r = assessPrerequisites(facts({ platform: 'darwin' }));
  assert.equal(r.ok, false);
  assert.match(r.missing[0].what, /needs a Debian or Ubuntu Linux host \(this is darwin\)/);
});

test('/etc/subuid ranges are found by name or uid and must hold 65536 ids', () => {
  const text = 'root:100000:65536\nada:165536:65536\n1001:231072:65536\nbob:300000:1000\n\n#x\n';
  assert.equal(hasSubordinateRange(text, 'ada', 1000), true);
  assert.equal(hasSubordinateRange(text, 'eve', 1001), true);
  assert.equal(hasSubordinateRange(text, 'bob', 1002), false, 'too small');
  assert.equal(hasSubordinateRange(text, 'carol', 1003), false);
  assert.equal(hasSubordinateRange('', 'ada', 1000), false);
});

test('who builds is in no recipe hash', async () => {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'prereq-test-'));
  try {
    const agentDir = path.join(root, 'agent');
    await fs.mkdir(agentDir);
    await fs.writeFile(path.join(agentDir, 'agent.js'), 'x\n');
    const nodeBinary = path.join(root, 'node');
    await fs.writeFile(nodeBinary, 'node\n');
    const kernel = { name: 'linux-image-6.1.0-99-cloud-amd64', version: '6.1.999-1' };
    const before = process.env.SANDBOXVM_ROOTFS_MODE;
    try {
      delete process.env.SANDBOXVM_ROOTFS_MODE;
      const a = await recipeHashes({ agentDir, nodeBinary, kernel });
      process.env.SANDBOXVM_ROOTFS_MODE = 'unshare';
      const b = await recipeHashes({ agentDir, nodeBinary, kernel });
      assert.deepEqual(a, b);
    } finally {
      if (before === undefined) delete process.env.SANDBOXVM_ROOTFS_MODE;
      else process.env.SANDBOXVM_ROOTFS_MODE = before;
    }
  } finally {
    await fs.rm(root, { recursive: true, force: true });
  }
});
