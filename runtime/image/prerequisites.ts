/**
 * What the host needs to build the default base image, as a report a client can show before any
 * work starts (the CLI's error, the extension's welcome view): each missing piece in one sentence
 * with the exact command that fixes it.
 *
 * As root the build needs only REQUIRED_TOOLS. A normal user also needs:
 *   - fakeroot: stage 2 (assemble-image.sh) unpacks the root and runs `mkfs.ext4 -d` inside one
 *     fakeroot session, so the image keeps root's owners, setuid bits and device nodes;
 *   - a way for mmdebstrap to make the Debian root as root would (stage 1, build-rootfs.sh):
 *     `fakechroot` mode (package fakechroot; needs no kernel setting, so it is the default) or,
 *     when fakechroot is missing, `unshare` mode (package uidmap, subordinate uid/gid ranges,
 *     unprivileged user namespaces). Both give a rootfs.tar equal to the root build's (checked:
 *     same paths, owners, modes, devices and file contents). SANDBOXVM_ROOTFS_MODE=fakechroot|unshare
 *     chooses one. The mode never enters the recipe hash: who builds does not change the image.
 */
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../common/errors';

export interface HostTool {
  tool: string;
  /** The Debian package that provides it. */
  pkg: string;
}

/** Tools the build needs. The initramfs archive is written with busybox's own cpio applet. */
export const REQUIRED_TOOLS: readonly HostTool[] = [
  { tool: 'bash', pkg: 'bash' },
  { tool: 'tar', pkg: 'tar' },
  { tool: 'qemu-img', pkg: 'qemu-utils' },
  { tool: 'mkfs.ext4', pkg: 'e2fsprogs' },
  { tool: 'debugfs', pkg: 'e2fsprogs' },
  { tool: 'mmdebstrap', pkg: 'mmdebstrap' },
  { tool: 'busybox', pkg: 'busybox-static' },
  { tool: 'dpkg-deb', pkg: 'dpkg' },
  { tool: 'apt-get', pkg: 'apt' },
  { tool: 'apt-cache', pkg: 'apt' },
];

/** Tools only a normal user's build needs (see the file comment). */
export const NONROOT_TOOLS = {
  fakeroot: { tool: 'fakeroot', pkg: 'fakeroot' },
  fakechroot: { tool: 'fakechroot', pkg: 'fakechroot' },
  newuidmap: { tool: 'newuidmap', pkg: 'uidmap' },
  newgidmap: { tool: 'newgidmap', pkg: 'uidmap' },
} as const satisfies Record<string, HostTool>;

/** How build-rootfs.sh runs mmdebstrap. */
export type RootfsMode = 'root' | 'fakechroot' | 'unshare';

export interface MissingPrerequisite {
  /** One sentence: what is missing and what the build needs it for. */
  what: string;
  /** The exact command that fixes it (a shell command line). */
  fix: string;
}

export interface ImageBuildPrerequisites {
  ok: boolean;
  /** Empty when ok. */
  missing: MissingPrerequisite[];
  /** How stage 1 will run mmdebstrap; set when ok. */
  mode?: RootfsMode;
}

/** What the report is computed from; probeHostFacts() gathers it, tests write it by hand. */
export interface HostFacts {
  platform: NodeJS.Platform;
  /** Effective uid; 0 builds as root. */
  uid: number;
  user: string;
  /** The tools found on toolPath(), by name. */
  tools: ReadonlySet<string>;
  /** The user has a range of at least SUBID_COUNT ids in /etc/subuid, and in /etc/subgid. */
  subuid: boolean;
  subgid: boolean;
  /** An unprivileged user namespace with a root mapping can be made; undefined when not probed. */
  userns?: boolean;
  /** When userns is false because of a sysctl: the setting that allows it (`name=value`). */
  usernsSysctl?: string;
  /** SANDBOXVM_ROOTFS_MODE, when set. */
  requestedMode?: string;
}

/** mmdebstrap maps 65536 ids in unshare mode (uid 65534, nobody, must exist in the root). */
export const SUBID_COUNT = 65536;

const apt = (pkgs: string) => `sudo apt-get install ${pkgs}`;

function missingTool(t: HostTool, why: string): MissingPrerequisite {
  return { what: `${t.tool} (package ${t.pkg}) is not installed${why ? `: ${why}` : ''}`, fix: apt(t.pkg) };
}

/** True when the report's route for a normal user may need the user-namespace probe. */
export function needsUsernsProbe(f: Omit<HostFacts, 'userns'>): boolean {
  if (f.uid === 0) return false;
  return f.requestedMode === 'unshare' || (f.requestedMode === undefined && !f.tools.has('fakechroot'));
}

function unshareMissing(f: HostFacts): MissingPrerequisite[] {
  const out: MissingPrerequisite[] = [];
  const why = 'mmdebstrap --mode=unshare needs it to map the root\'s owners';
  if (!f.tools.has('newuidmap')) out.push(missingTool(NONROOT_TOOLS.newuidmap, why));
  else if (!f.tools.has('newgidmap')) out.push(missingTool(NONROOT_TOOLS.newgidmap, why));
  if (!f.tools.has('unshare')) out.push(missingTool({ tool: 'unshare', pkg: 'util-linux' }, why));
  if (!f.subuid || !f.subgid) {
    const range = `100000-${100000 + SUBID_COUNT - 1}`;
    out.push({
      what: `user ${f.user} has no range of ${SUBID_COUNT} subordinate ids in /etc/subuid and /etc/subgid, which mmdebstrap --mode=unshare maps the root's owners to`,
      fix: `sudo usermod --add-subuids ${range} --add-subgids ${range} ${f.user}`,
    });
  }
  if (f.userns === false) {
    out.push({
      what: 'this kernel does not let a normal user make a user namespace, which mmdebstrap --mode=unshare runs in',
      fix: f.usernsSysctl ? `sudo sysctl -w ${f.usernsSysctl}` : 'sudo sysctl -w user.max_user_namespaces=15000',
    });
  }
  return out;
}

/**
 * The report for a host (pure). Every missing piece is listed, not just the first; with nothing
 * missing, `mode` says how stage 1 runs mmdebstrap: root as root; for a normal user the requested
 * mode, else fakechroot when installed, else unshare when everything it needs is there.
 */
export function assessPrerequisites(f: HostFacts): ImageBuildPrerequisites {
  if (f.platform !== 'linux') {
    return {
      ok: false,
      missing: [{ what: `building the default base image needs a Debian or Ubuntu Linux host (this is ${f.platform})`, fix: 'build it on such a host and copy its image cache (~/.cache/sandboxvm/images) here' }],
    };
  }
  const missing: MissingPrerequisite[] = REQUIRED_TOOLS.filter((t) => !f.tools.has(t.tool)).map((t) => missingTool(t, ''));
  let mode: RootfsMode;
  if (f.uid === 0) {
    mode = 'root';
  } else {
    if (!f.tools.has('fakeroot')) missing.push(missingTool(NONROOT_TOOLS.fakeroot, 'a normal user needs it to give the image\'s files root\'s owners and modes'));
    const why = 'a normal user needs it to build the Debian root';
    if (f.requestedMode !== undefined && f.requestedMode !== 'fakechroot' && f.requestedMode !== 'unshare') {
      missing.push({ what: `SANDBOXVM_ROOTFS_MODE is ${JSON.stringify(f.requestedMode)}, which is neither fakechroot nor unshare`, fix: 'unset SANDBOXVM_ROOTFS_MODE' });
      mode = 'fakechroot';
    } else if (f.requestedMode === 'unshare') {
      mode = 'unshare';
      missing.push(...unshareMissing(f));
    } else if (f.requestedMode === 'fakechroot' || f.tools.has('fakechroot') || unshareMissing(f).length > 0) {
      // Without either, name fakechroot: one package, no kernel setting.
      mode = 'fakechroot';
      if (!f.tools.has('fakechroot')) missing.push(missingTool(NONROOT_TOOLS.fakechroot, why));
    } else {
      mode = 'unshare';
    }
  }
  return missing.length > 0 ? { ok: false, missing } : { ok: true, missing: [], mode };
}

/**
 * One sentence for the CLI and logs: every missing piece, then one command line that fixes them
 * (apt packages merged into one install).
 */
export function prerequisitesMessage(r: ImageBuildPrerequisites): string {
  if (r.ok) return 'the host has everything the base image build needs';
  const pkgs: string[] = [];
  const others: string[] = [];
  for (const m of r.missing) {
    const a = /^sudo apt-get install (.+)$/.exec(m.fix);
    if (a) {
      for (const p of a[1].split(' ')) if (!pkgs.includes(p)) pkgs.push(p);
    } else if (!others.includes(m.fix)) {
      others.push(m.fix);
    }
  }
  const fixes = [...(pkgs.length ? [apt(pkgs.join(' '))] : []), ...others];
  return `cannot build the base image: ${r.missing.map((m) => m.what).join('; ')}. Fix with: ${fixes.join(' && ')}`;
}

// ---------------------------------------------------------------------------------------------
// Probing the host

/** The PATH the scripts run with: the caller's plus the sbin directories a normal user lacks. */
export function toolPath(env: NodeJS.ProcessEnv = process.env): string {
  const parts = (env.PATH ?? '').split(path.delimiter).filter(Boolean);
  for (const extra of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    if (!parts.includes(extra)) parts.push(extra);
  }
  return parts.join(path.delimiter);
}

export async function findExecutable(name: string, searchPath = toolPath()): Promise<string | undefined> {
  for (const dir of searchPath.split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, name);
    try {
      await fs.access(file, 0o1 /* X_OK */);
      if ((await fs.stat(file)).isFile()) return file;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * True when /etc/subuid or /etc/subgid text gives `user` (by name or uid) a range of at least
 * `count` ids. Lines are `name:start:count`.
 */
export function hasSubordinateRange(text: string, user: string, uid: number, count = SUBID_COUNT): boolean {
  return text.split('\n').some((line) => {
    const [who, start, n] = line.trim().split(':');
    return (who === user || who === String(uid)) && /^\d+$/.test(start ?? '') && Number(n) >= count;
  });
}

async function readOr(file: string, fallback: string): Promise<string> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch {
    return fallback;
  }
}

/**
 * Whether `unshare --user --map-root-user true` works here, and no AppArmor rule takes root's
 * powers away inside (Ubuntu 24.04); when a sysctl forbids it, the setting that allows it.
 */
async function probeUserns(unshare: string): Promise<{ ok: boolean; sysctl?: string }> {
  if ((await readOr('/proc/sys/kernel/unprivileged_userns_clone', '1')).trim() === '0') return { ok: false, sysctl: 'kernel.unprivileged_userns_clone=1' };
  if ((await readOr('/proc/sys/kernel/apparmor_restrict_unprivileged_userns', '0')).trim() === '1') return { ok: false, sysctl: 'kernel.apparmor_restrict_unprivileged_userns=0' };
  if ((await readOr('/proc/sys/user/max_user_namespaces', '1')).trim() === '0') return { ok: false, sysctl: 'user.max_user_namespaces=15000' };
  return new Promise((resolve) => {
    execFile(unshare, ['--user', '--map-root-user', 'true'], { timeout: 5000 }, (err) => resolve({ ok: !err }));
  });
}

function currentUser(uid: number): string {
  try {
    return os.userInfo().username;
  } catch {
    return String(uid);
  }
}

/** Gathers HostFacts from this machine (a handful of stats; spawns `unshare` only when the report may need it). */
export async function probeHostFacts(env: NodeJS.ProcessEnv = process.env): Promise<HostFacts> {
  const uid = process.getuid?.() ?? -1;
  const names = [...REQUIRED_TOOLS.map((t) => t.tool), ...Object.values(NONROOT_TOOLS).map((t) => t.tool), 'unshare'];
  const tools = new Set<string>();
  const searchPath = toolPath(env);
  await Promise.all(names.map(async (n) => (await findExecutable(n, searchPath)) && tools.add(n)));
  const user = currentUser(uid);
  const facts: HostFacts = {
    platform: process.platform,
    uid,
    user,
    tools,
    subuid: hasSubordinateRange(await readOr('/etc/subuid', ''), user, uid),
    subgid: hasSubordinateRange(await readOr('/etc/subgid', ''), user, uid),
    requestedMode: env.SANDBOXVM_ROOTFS_MODE || undefined,
  };
  if (process.platform === 'linux' && needsUsernsProbe(facts) && tools.has('unshare')) {
    const userns = await probeUserns((await findExecutable('unshare', searchPath))!);
    facts.userns = userns.ok;
    facts.usernsSysctl = userns.sysctl;
  }
  return facts;
}

/** What this host lacks to build the base image (nothing is built or changed). */
export async function imageBuildPrerequisites(env: NodeJS.ProcessEnv = process.env): Promise<ImageBuildPrerequisites> {
  return assessPrerequisites(await probeHostFacts(env));
}

/** Returns the stage-1 mode, or throws ImageBuildFailed with prerequisitesMessage(). */
export async function checkImageBuildPrerequisites(env: NodeJS.ProcessEnv = process.env): Promise<RootfsMode> {
  const r = await imageBuildPrerequisites(env);
  if (!r.ok || !r.mode) throw new SandboxError(ErrorCode.ImageBuildFailed, prerequisitesMessage(r));
  return r.mode;
}
