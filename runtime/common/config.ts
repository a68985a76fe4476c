/** A VM's configuration as stored in its directory (vm.json), with its limits and parsers. */
import { ErrorCode, SandboxError } from './errors';
import { validateVmName } from './names';

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
}

export const DEFAULTS = { cpus: 1, memoryMiB: 1024, diskGiB: 10 } as const;
export const LIMITS = { cpus: [1, 64], memoryMiB: [128, 256 * 1024], diskGiB: [1, 4096] } as const;

/** Parses sizes like "1G", "512M", "1024" (MiB) into MiB. */
export function parseSizeMiB(text: string, what: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?$/i.exec(text.trim());
  if (!m) throw new SandboxError(ErrorCode.BadArgument, `invalid ${what} ${JSON.stringify(text)}: use a size like 512M or 2G`);
  const n = parseFloat(m[1]);
  const unit = m[2].toLowerCase();
  const mib = unit === 'k' ? n / 1024 : unit === 'g' ? n * 1024 : unit === 't' ? n * 1024 * 1024 : n;
  return Math.round(mib);
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
  return { ...c, network: c.network !== false };
}
