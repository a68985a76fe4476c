/**
 * A VM archive's manifest (`manifest.json`, the archive's first entry) and the pure checks on it.
 * An archive is a plain tar stream (ustar): the manifest, then every entry it lists, in its order:
 *
 *   manifest.json                       this file: format, version, the VM's settings, the entries
 *   image/vmlinuz, image/initrd.img     the base image's kernel and initramfs
 *   disks/base.qcow2                    the base image's disk (no backing file)
 *   disks/foreign.qcow2                 optional: what the VM's disk sat on besides the base image
 *                                       (a template's disk, a linked clone's source layers), only
 *                                       what differs from the base; backs onto `base.qcow2`, and
 *                                       the lowest layers then back onto `foreign.qcow2`
 *   disks/disk.qcow2, disks/<16 hex>.qcow2
 *                                       the VM's disk layers (VM folder: disk.qcow2, layers/<hex>.qcow2),
 *                                       each a qcow2 whose backing file is a sibling: `base.qcow2` or
 *                                       another layer's name, as checkpoints.json's tree says
 *   checkpoints.json                    the checkpoint index (service/checkpointTree.ts), when it has one
 *   checkpoints/<8 hex>/memory.state    running checkpoints' memory, and `epoch` beside it
 *   saved.state, saved.epoch            a saved VM's running state
 *
 * An entry with `sameAs` (a hard link in the VM's folder: a saved VM's checkpoint shares its saved
 * state) has no tar entry of its own; import links it to the earlier entry it names.
 *
 * Everything here is checked as untrusted input: names come from a fixed set of shapes, sizes are
 * bounded per kind from the VM's own settings, hashes are 64 hex digits. Tests:
 * test/unit/transfer-manifest.test.ts.
 */
import { LIMITS, NETWORK_POLICIES, checkRange, type NetworkPolicy } from '../common/config';
import { ErrorCode, SandboxError } from '../common/errors';
import { validateVmName } from '../common/names';
import { LOOPBACK, parsePortsConfig, type PortsConfig } from '../common/ports';

export const ARCHIVE_FORMAT = 'sandboxvm-vm-archive';
/** The archive version this sandboxvm writes and the newest it reads. */
export const ARCHIVE_VERSION = 1;
export const MANIFEST_NAME = 'manifest.json';
/** The manifest's own bound (it is read into memory). */
export const MAX_MANIFEST_BYTES = 1024 * 1024;
export const MAX_ENTRIES = 2000;

const MIB = 2 ** 20;
const GIB = 2 ** 30;

export interface ManifestEntry {
  name: string;
  size: number;
  sha256: string;
  /** An earlier entry with the same bytes: no tar entry of its own (a hard link on import). */
  sameAs?: string;
}

/** The VM's settings as exported: what create takes, plus the state its files are in. */
export interface ManifestVm {
  name: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  network: NetworkPolicy;
  ports?: PortsConfig;
  createdAt: string;
  /** `saved`: the archive holds saved.state, and the VM restores from it. */
  state: 'stopped' | 'saved';
  /** The base image's recipe hash where it was exported (a local image with this hash and the same bytes is reused). */
  imageHash: string;
}

export interface Manifest {
  format: typeof ARCHIVE_FORMAT;
  version: number;
  exportedAt: string;
  /** The sandboxvm version that wrote it (shown, never relied on). */
  exporter: string;
  vm: ManifestVm;
  entries: ManifestEntry[];
}

/** What each kind of entry is, and the most bytes it may have for a VM of these settings. */
export interface EntryKind {
  kind: 'manifest' | 'kernel' | 'initrd' | 'base' | 'foreign' | 'layer' | 'index' | 'memory' | 'epoch';
  /** Path in the imported VM's folder (relative). */
  target: string;
}

const LAYER_ENTRY = /^disks\/([0-9a-f]{16})\.qcow2$/;
const MEMORY_ENTRY = /^checkpoints\/([0-9a-f]{8})\/(memory\.state|epoch)$/;

/** The folder of an imported VM that holds a copy of its base image (when no local image matches), and its foreign layer. */
export const IMPORTED_IMAGE_DIR = 'image';
/** The foreign layer's archive name. */
export const FOREIGN_ENTRY = 'disks/foreign.qcow2';

/** The kind and target of an archive entry name, or undefined when the name is not one an archive may hold. */
export function entryKind(name: string): EntryKind | undefined {
  switch (name) {
    case 'image/vmlinuz':
      return { kind: 'kernel', target: `${IMPORTED_IMAGE_DIR}/vmlinuz` };
    case 'image/initrd.img':
      return { kind: 'initrd', target: `${IMPORTED_IMAGE_DIR}/initrd.img` };
    case 'disks/base.qcow2':
      return { kind: 'base', target: `${IMPORTED_IMAGE_DIR}/base.qcow2` };
    case FOREIGN_ENTRY:
      return { kind: 'foreign', target: `${IMPORTED_IMAGE_DIR}/foreign.qcow2` };
    case 'disks/disk.qcow2':
      return { kind: 'layer', target: 'disk.qcow2' };
    case 'checkpoints.json':
      return { kind: 'index', target: 'checkpoints.json' };
    case 'saved.state':
      return { kind: 'memory', target: 'saved.state' };
    case 'saved.epoch':
      return { kind: 'epoch', target: 'saved.epoch' };
  }
  const layer = LAYER_ENTRY.exec(name);
  if (layer) return { kind: 'layer', target: `layers/${layer[1]}.qcow2` };
  const memory = MEMORY_ENTRY.exec(name);
  if (memory) return { kind: memory[2] === 'epoch' ? 'epoch' : 'memory', target: name };
  return undefined;
}

/** The archive name of a layer path of the VM's folder (disk.qcow2, layers/<hex>.qcow2). */
export function layerEntryName(layer: string): string {
  return layer === 'disk.qcow2' ? 'disks/disk.qcow2' : `disks/${layer.slice('layers/'.length)}`;
}

/** The most bytes an entry of `kind` may hold for a VM of these settings. */
export function maxEntryBytes(kind: EntryKind['kind'], vm: Pick<ManifestVm, 'memoryMiB' | 'diskGiB'>): number {
  switch (kind) {
    case 'manifest':
      return MAX_MANIFEST_BYTES;
    case 'kernel':
      return 128 * MIB;
    case 'initrd':
      return 512 * MIB;
    case 'base':
    case 'foreign':
    case 'layer':
      // A qcow2 file holds at most its virtual size plus its tables (well under 1% at 64 KiB clusters).
      return vm.diskGiB * GIB + Math.ceil(vm.diskGiB * GIB * 0.02) + 64 * MIB;
    case 'index':
      return 4 * MIB;
    case 'memory':
      // A migration stream: the guest's RAM at most once, plus device state.
      return vm.memoryMiB * MIB + 256 * MIB;
    case 'epoch':
      return 64;
  }
}

function bad(message: string): SandboxError {
  return new SandboxError(ErrorCode.BadArgument, `not a usable VM archive: ${message}; nothing was imported`);
}

/**
 * Parses and checks a manifest's text. Throws BadArgument with one sentence: not JSON, another
 * format, a newer version (naming the one this sandboxvm reads), a bad setting (the same ranges
 * as create), an entry name outside the archive's shapes, a duplicate, a size beyond its kind's
 * bound, a malformed hash, or a missing base image.
 */
export function parseManifest(text: string): Manifest {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text) as Record<string, unknown>;
  } catch {
    throw bad('its manifest is not JSON');
  }
  if (typeof raw !== 'object' || raw === null || raw.format !== ARCHIVE_FORMAT) throw bad(`it is not a sandboxvm VM archive (format ${JSON.stringify(String((raw as { format?: unknown })?.format ?? '')).slice(0, 60)})`);
  const version = raw.version;
  if (!Number.isSafeInteger(version) || (version as number) < 1) throw bad('its manifest has no valid version');
  if ((version as number) > ARCHIVE_VERSION) {
    throw new SandboxError(ErrorCode.BadArgument, `this archive was written by a newer sandboxvm (archive version ${version}); this sandboxvm reads archive version ${ARCHIVE_VERSION}: update sandboxvm to import it; nothing was imported`);
  }
  const vm = parseVm(raw.vm);
  if (!Array.isArray(raw.entries) || raw.entries.length === 0) throw bad('its manifest lists no entries');
  if (raw.entries.length > MAX_ENTRIES) throw bad(`its manifest lists ${raw.entries.length} entries (at most ${MAX_ENTRIES})`);
  const seen = new Map<string, ManifestEntry>();
  const entries: ManifestEntry[] = [];
  for (const e of raw.entries as Record<string, unknown>[]) {
    const name = typeof e?.name === 'string' ? e.name : undefined;
    const shown = JSON.stringify(String(e?.name ?? '').slice(0, 100));
    const kind = name !== undefined ? entryKind(name) : undefined;
    if (!name || !kind || kind.kind === 'manifest') throw bad(`it has an entry ${shown}, which is not a file a VM archive may hold`);
    if (seen.has(name)) throw bad(`it lists ${shown} twice`);
    const size = e.size;
    if (!Number.isSafeInteger(size) || (size as number) < 0) throw bad(`entry ${shown} has no valid size`);
    const max = maxEntryBytes(kind.kind, vm);
    if ((size as number) > max) throw bad(`entry ${shown} claims ${size} bytes, more than a ${kind.kind} of this VM can hold (${max})`);
    if (typeof e.sha256 !== 'string' || !/^[0-9a-f]{64}$/.test(e.sha256)) throw bad(`entry ${shown} has no valid sha256`);
    const entry: ManifestEntry = { name, size: size as number, sha256: e.sha256 };
    if (e.sameAs !== undefined) {
      const twin = typeof e.sameAs === 'string' ? seen.get(e.sameAs) : undefined;
      if (!twin || twin.sameAs !== undefined || twin.size !== entry.size || twin.sha256 !== entry.sha256 || entryKind(twin.name)?.kind !== kind.kind) {
        throw bad(`entry ${shown} is the same as ${JSON.stringify(String(e.sameAs).slice(0, 100))}, which is no earlier entry with its bytes`);
      }
      entry.sameAs = twin.name;
    }
    seen.set(name, entry);
    entries.push(entry);
  }
  for (const required of ['image/vmlinuz', 'image/initrd.img', 'disks/base.qcow2', 'disks/disk.qcow2']) {
    if (!seen.has(required) && !(required === 'disks/disk.qcow2' && seen.has('checkpoints.json'))) throw bad(`it has no ${required}`);
  }
  if ((vm.state === 'saved') !== seen.has('saved.state')) throw bad(vm.state === 'saved' ? 'the VM is saved but its saved state is missing' : 'it has a saved state but the VM is not saved');
  for (const e of entries) {
    const m = MEMORY_ENTRY.exec(e.name);
    if (m && !seen.has('checkpoints.json')) throw bad(`it has ${e.name} but no checkpoint index`);
  }
  return {
    format: ARCHIVE_FORMAT,
    version: version as number,
    exportedAt: typeof raw.exportedAt === 'string' ? raw.exportedAt.slice(0, 40) : '',
    exporter: typeof raw.exporter === 'string' ? raw.exporter.slice(0, 80) : '',
    vm,
    entries,
  };
}

/**
 * The VM's settings through create's checks. Manual port forwards keep only loopback addresses:
 * an archive does not get to open a port on every interface of the importing host.
 */
function parseVm(value: unknown): ManifestVm {
  const v = value as Record<string, unknown> | undefined;
  if (typeof v !== 'object' || v === null) throw bad('its manifest has no VM settings');
  try {
    const name = validateVmName(v.name);
    const cpus = checkRange(v.cpus as number, LIMITS.cpus, 'cpus');
    const memoryMiB = checkRange(v.memoryMiB as number, LIMITS.memoryMiB, 'memory', ' MiB');
    const diskGiB = checkRange(v.diskGiB as number, LIMITS.diskGiB, 'disk', ' GiB');
    if (!(NETWORK_POLICIES as readonly unknown[]).includes(v.network)) throw new Error(`network ${JSON.stringify(String(v.network)).slice(0, 40)} is not isolated, internet or host`);
    const ports = v.ports === undefined ? undefined : parsePortsConfig(v.ports);
    if (ports) ports.forwards = ports.forwards.filter((f) => f.address === LOOPBACK);
    if (v.state !== 'stopped' && v.state !== 'saved') throw new Error('state must be stopped or saved');
    if (typeof v.imageHash !== 'string' || !/^[0-9a-f]{64}$/.test(v.imageHash)) throw new Error('imageHash must be 64 hex digits');
    const createdAt = typeof v.createdAt === 'string' && !Number.isNaN(Date.parse(v.createdAt)) ? new Date(v.createdAt).toISOString() : new Date().toISOString();
    return { name, cpus, memoryMiB, diskGiB, network: v.network as NetworkPolicy, ports, createdAt, state: v.state, imageHash: v.imageHash };
  } catch (err) {
    throw bad(`its VM settings are invalid (${(err as Error).message})`);
  }
}
