/** A VM's configuration as stored in its directory (vm.json), with its limits and parsers. */
import { ErrorCode, SandboxError } from './errors';
import { validateVmName } from './names';
import { parsePortsConfig, type PortsConfig } from './ports';

export interface VmConfig {
  /** Stable identity, kept across renames of nothing (names are immutable for now). */
  id: string;
  name: string;
  cpus: number;
  memoryMiB: number;
  diskGiB: number;
  /** The base image this VM's overlay sits on. */
  image: { hash: string; kernel: string; initrd: string; disk: string };
  /** What the guest's network reaches (NetworkPolicy). */
  network: NetworkPolicy;
  createdAt: string;
  /** Port forwarding (runtime/common/ports.ts); missing: automatic forwarding on, no manual forwards. */
  ports?: PortsConfig;
  /** Undo-point limits of this VM (`sandboxvm set --undo-points/--undo-disk`); missing: the client's, else the defaults (service/checkpointTree.ts). */
  undoPoints?: UndoLimits;
  /**
   * A linked clone's source (service/clones.ts): its disk is an overlay on the layer of checkpoint
   * `checkpoint` of the VM whose id is `vmId` (named `vm`), which therefore cannot be deleted.
   */
  linkedTo?: { vm: string; vmId: string; checkpoint: string };
  /**
   * The template folder (service/templates.ts) this VM's disk and first saved state come from:
   * its disk's backing chain goes through `<template>/disk.qcow2`, so the template is in use.
   */
  template?: string;
}

/** At most `maxCount` undo points and `maxDiskMiB` MiB of them; the oldest go first, never the newest. */
export interface UndoLimits {
  maxCount?: number;
  maxDiskMiB?: number;
}

/** Undo limits given by a user or read from vm.json, checked: whole numbers within `limits`, or BadArgument. */
export function parseUndoLimits(value: unknown, limits: { maxCount: readonly [number, number]; maxDiskMiB: readonly [number, number] }): UndoLimits | undefined {
  if (value === undefined || value === null) return undefined;
  const v = value as UndoLimits;
  if (typeof v !== 'object') throw new SandboxError(ErrorCode.BadArgument, 'undo-point limits must be an object');
  const out: UndoLimits = {};
  if (v.maxCount !== undefined) out.maxCount = checkRange(v.maxCount, limits.maxCount as [number, number], 'the undo-point count');
  if (v.maxDiskMiB !== undefined) out.maxDiskMiB = checkRange(v.maxDiskMiB, limits.maxDiskMiB as [number, number], 'the undo-point disk budget', ' MiB');
  return out;
}

/**
 * What a VM's network reaches:
 * - `isolated`: no network interface at all (only `lo`).
 * - `internet`: outbound connections, through passt with its gateway not mapped to the host, so
 *   nothing on the host's loopback (127.0.0.0/8) is reachable. The host's other addresses (its
 *   LAN address, container bridges) are outside addresses to passt: services bound there are.
 * - `host`: QEMU's user networking, where 10.0.2.2 is the host's 127.0.0.1: outbound and the host's
 *   loopback services.
 */
export type NetworkPolicy = 'isolated' | 'internet' | 'host';
export const NETWORK_POLICIES: readonly NetworkPolicy[] = ['isolated', 'internet', 'host'];

/** One line per policy, for choosers and usage texts. */
export const NETWORK_POLICY_DESCRIPTIONS: Record<NetworkPolicy, string> = {
  isolated: 'no network at all',
  internet: "outbound only; the host's loopback (127.0.0.1) is out of reach",
  host: "outbound and the host's loopback services (10.0.2.2 is the host's 127.0.0.1)",
};

export const DEFAULTS = { cpus: 1, memoryMiB: 1024, diskGiB: 10, network: 'internet' } as const;
export const LIMITS = { cpus: [1, 64], memoryMiB: [128, 256 * 1024], diskGiB: [1, 4096] } as const;
export const UNDO_LIMITS = { maxCount: [1, 1000], maxDiskMiB: [1, 16 * 1024 * 1024] } as const;

const SIZE = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i;

/** A size's value in MiB, unrounded ("1K" is 1/1024), or undefined when it is not a size. */
function sizeInMiB(text: string): number | undefined {
  const m = SIZE.exec(text.trim());
  if (!m) return undefined;
  const n = parseFloat(m[1]);
  const unit = m[2].toLowerCase();
  return unit === 'k' ? n / 1024 : unit === 'g' ? n * 1024 : unit === 't' ? n * 1024 * 1024 : n;
}

/** Parses sizes like "1G", "512M", "1024" (MiB) into whole MiB. */
export function parseSizeMiB(text: string, what: string): number {
  const mib = sizeInMiB(text);
  if (mib === undefined) throw new SandboxError(ErrorCode.BadArgument, `invalid ${what} ${JSON.stringify(text)}: use a size like 512M or 2G`);
  if (!Number.isInteger(mib)) throw new SandboxError(ErrorCode.BadArgument, `${what} must be whole MiB: ${text} is not; use e.g. 512M or 2G`);
  return mib;
}

/**
 * Parses a disk size into whole GiB: "20G", "1T", "20480M". A number without a unit is MiB, as
 * for memory, so "20" is refused with the hint "20G".
 */
export function parseDiskGiB(text: string): number {
  const mib = sizeInMiB(text);
  if (mib === undefined) throw new SandboxError(ErrorCode.BadArgument, `invalid disk size ${JSON.stringify(text)}: use whole GiB, e.g. 10G`);
  if (mib % 1024 !== 0) {
    const bare = /^\d+$/.test(text.trim()) ? ` (a number without a unit is MiB; did you mean ${text.trim()}G?)` : '';
    throw new SandboxError(ErrorCode.BadArgument, `disk size must be whole GiB: ${text} is not${bare}; use e.g. 10G`);
  }
  return mib / 1024;
}

export function checkRange(value: number, [min, max]: readonly [number, number], what: string, unit = ''): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new SandboxError(ErrorCode.BadArgument, `${what} must be between ${min}${unit} and ${max}${unit} (got ${value}${unit})`);
  }
  return value;
}

/** A policy given by a user (CLI, API), or BadArgument saying which ones there are. */
export function parseNetworkPolicy(value: unknown): NetworkPolicy {
  if (typeof value === 'string' && (NETWORK_POLICIES as readonly string[]).includes(value)) return value as NetworkPolicy;
  const got = typeof value === 'string' ? JSON.stringify(value) : String(value);
  throw new SandboxError(ErrorCode.BadArgument, `invalid network policy ${got}: use isolated, internet or host`);
}

/**
 * vm.json's `network` as stored by any version: a policy, or the boolean of configurations made
 * before policies (false: isolated; true or absent: the default, internet).
 */
export function migrateNetwork(stored: unknown): NetworkPolicy {
  if (stored === undefined || stored === true) return DEFAULTS.network;
  if (stored === false) return 'isolated';
  if (typeof stored === 'string' && (NETWORK_POLICIES as readonly string[]).includes(stored)) return stored as NetworkPolicy;
  throw new Error(`vm.json: network ${JSON.stringify(stored)} is not isolated, internet or host`);
}

/** vm.json's undo limits; malformed ones are dropped (the defaults apply) rather than hiding the VM. */
function storedUndoLimits(value: unknown): UndoLimits | undefined {
  try {
    return parseUndoLimits(value, UNDO_LIMITS);
  } catch {
    return undefined;
  }
}

/** Validates a vm.json read from disk: nothing in a VM's directory is trusted blindly. */
export function parseVmConfig(text: string, expectedName: string): VmConfig {
  const c = JSON.parse(text) as VmConfig;
  validateVmName(c.name);
  if (c.name !== expectedName) throw new Error(`vm.json names ${c.name}, not ${expectedName}`);
  checkRange(c.cpus, LIMITS.cpus, 'cpus');
  checkRange(c.memoryMiB, LIMITS.memoryMiB, 'memory');
  checkRange(c.diskGiB, LIMITS.diskGiB, 'disk');
  for (const key of ['hash', 'kernel', 'initrd', 'disk'] as const) {
    if (typeof c.image?.[key] !== 'string') throw new Error(`vm.json: image.${key} missing`);
  }
  if (typeof c.id !== 'string') throw new Error('vm.json: id missing');
  const l = c.linkedTo;
  if (l !== undefined && (typeof l !== 'object' || l === null || typeof l.vm !== 'string' || typeof l.vmId !== 'string' || typeof l.checkpoint !== 'string')) throw new Error('vm.json: linkedTo malformed');
  if (c.template !== undefined && (typeof c.template !== 'string' || !c.template.startsWith('/'))) throw new Error('vm.json: template malformed');
  return { ...c, network: migrateNetwork((c as { network?: unknown }).network), ports: parsePortsConfig(c.ports), undoPoints: storedUndoLimits(c.undoPoints) };
}
