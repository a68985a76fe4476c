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
  network: boolean;
  createdAt: string;
  /** Port forwarding (runtime/common/ports.ts); missing: automatic forwarding on, no manual forwards. */
  ports?: PortsConfig;
}

export const DEFAULTS = { cpus: 1, memoryMiB: 1024, diskGiB: 10 } as const;
export const LIMITS = { cpus: [1, 64], memoryMiB: [128, 256 * 1024], diskGiB: [1, 4096] } as const;

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
  return { ...c, network: c.network !== false, ports: parsePortsConfig(c.ports) };
}
