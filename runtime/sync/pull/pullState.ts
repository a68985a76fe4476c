/**
 * What a pull remembers between runs, per (VM, guest folder, host folder), in the VM's directory
 * (never in the synced folder, where the guest's files could overwrite it):
 *
 *   <home>/vms/<vm>/pull/<key>/base.json   the base: each path as last pulled, on both sides
 *   <home>/vms/<vm>/pull/<key>/held/       the quarantine: held-back files, as the guest had them
 *
 * `key` is the first 16 hex digits of sha256(host folder + NUL + guest folder). The base is
 * written atomically; a base that does not parse is treated as none (the next pull then keeps
 * both versions of every file that differs, never overwrites).
 */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeJsonAtomic } from '../../common/atomicWrite';
import { VM_FILES, dataHome } from '../../common/paths';

/** One path as last pulled: the host file's identity and content, and what the guest said of it. */
export interface BaseEntry {
  kind: 'file' | 'symlink';
  /** Host side after the pull wrote it. */
  size: number;
  mtimeMs: number;
  ino: number;
  sha256?: string;
  target?: string;
  /** Guest side as listed then. */
  guestSize: number;
  guestMtimeMs: number;
}

export interface PullBase {
  version: 1;
  guestPath: string;
  hostPath: string;
  entries: Record<string, BaseEntry>;
}

export function pullStateDir(vm: string, hostRoot: string, guestPath: string, home = dataHome()): string {
  const key = crypto.createHash('sha256').update(`${hostRoot}\0${guestPath}`).digest('hex').slice(0, 16);
  return path.join(home, 'vms', vm, VM_FILES.pull, key);
}

export function loadBase(stateDir: string): PullBase | undefined {
  let value: any;
  try {
    value = JSON.parse(fs.readFileSync(path.join(stateDir, 'base.json'), 'utf8'));
  } catch {
    return undefined;
  }
  if (value?.version !== 1 || typeof value.entries !== 'object' || value.entries === null) return undefined;
  const entries: Record<string, BaseEntry> = Object.create(null);
  for (const [rel, e] of Object.entries<any>(value.entries)) {
    if ((e?.kind === 'file' || e?.kind === 'symlink') && [e.size, e.mtimeMs, e.ino, e.guestSize, e.guestMtimeMs].every(Number.isFinite)) entries[rel] = e;
  }
  return { version: 1, guestPath: String(value.guestPath), hostPath: String(value.hostPath), entries };
}

export async function saveBase(stateDir: string, base: PullBase): Promise<void> {
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  await writeJsonAtomic(path.join(stateDir, 'base.json'), base);
}

/** The quarantine folder for held-back files (made 0700). */
export function quarantineDir(stateDir: string): string {
  const dir = path.join(stateDir, 'held');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  return dir;
}

/**
 * The name a guest version takes beside a host file that changed: `<stem>.guest-conflict-<UTC
 * yyyymmdd-hhmmss><ext>` (`report.txt` -> `report.guest-conflict-20260130-142501.txt`; a name
 * without an extension, or a dotfile, gets the suffix at its end), shortened to fit 255 bytes.
 */
export function conflictName(name: string, when: Date, n = 0): string {
  const stamp = when.toISOString().replace(/[-:]/g, '').replace('T', '-').slice(0, 15) + (n > 0 ? `-${n}` : '');
  const dot = name.lastIndexOf('.');
  const [stem, ext] = dot > 0 ? [name.slice(0, dot), name.slice(dot)] : [name, ''];
  const suffix = `.guest-conflict-${stamp}${ext.length <= 32 ? ext : ''}`;
  let s = stem;
  while (Buffer.byteLength(s + suffix) > 255) s = s.slice(0, -1);
  return s + suffix;
}
