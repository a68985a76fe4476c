/**
 * The Create VM wizard's fields, validated as they are typed (pure; unit-tested). Each returns an
 * error sentence, or undefined when the value is good; `parse*` return the value the service takes.
 */
import { LIMITS, parseSizeMiB } from '../../runtime/common/config';
import { validateVmName } from '../../runtime/common/names';

export function nameError(value: string, existing: (name: string) => boolean): string | undefined {
  if (value === '') return 'Type a name, like "dev".';
  try {
    validateVmName(value);
  } catch {
    return 'Use 1-63 lowercase letters, digits and dashes, starting and ending with a letter or digit.';
  }
  if (existing(value)) return `A VM named "${value}" already exists.`;
  return undefined;
}

export function cpusError(value: string, hostCpus: number): string | undefined {
  if (!/^\d+$/.test(value.trim())) return 'Type a whole number of CPUs, like 2.';
  const n = Number(value);
  const [min, max] = LIMITS.cpus;
  if (n < min || n > max) return `Choose between ${min} and ${max} CPUs.`;
  if (n > hostCpus) return `This machine has ${hostCpus} CPU${hostCpus === 1 ? '' : 's'}; a VM cannot have more.`;
  return undefined;
}

export function parseMemoryMiB(value: string): number | undefined {
  if (!/^\s*\d+(\.\d+)?\s*([mMgG]i?[bB]?)?\s*$/.test(value)) return undefined;
  const unitless = /^\s*\d+(\.\d+)?\s*$/.test(value);
  try {
    return parseSizeMiB(unitless ? `${value.trim()}G` : value, 'memory');
  } catch {
    return undefined;
  }
}

export function memoryError(value: string, hostMiB: number): string | undefined {
  const mib = parseMemoryMiB(value);
  if (mib === undefined) return 'Type a size like 512M or 2G.';
  const [min, max] = LIMITS.memoryMiB;
  if (mib < min) return `A VM needs at least ${min} MiB.`;
  if (mib > max || mib > hostMiB) return `This machine has ${Math.floor(hostMiB / 1024)} GiB; choose less.`;
  return undefined;
}

export function parseDiskGiB(value: string): number | undefined {
  const m = /^\s*(\d+)\s*([gG]i?[bB]?)?\s*$/.exec(value);
  return m ? Number(m[1]) : undefined;
}

export function diskError(value: string): string | undefined {
  const gib = parseDiskGiB(value);
  if (gib === undefined) return 'Type whole GiB, like 10G.';
  const [min, max] = LIMITS.diskGiB;
  if (gib < min || gib > max) return `Choose between ${min} and ${max} GiB.`;
  return undefined;
}
