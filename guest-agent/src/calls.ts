/**
 * One-shot requests from the host: file metadata operations and guest info (like Hyper-V's KVP
 * exchange). Each returns a JSON value small enough for one control frame.
 */
import { promises as fs } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CallMethod } from '../../runtime/protocol/messages';
import { applyIdentity } from './identity';

/** Entries per `list` answer; the host pages with `offset`. */
const LIST_PAGE = 400;

export interface Entry {
  name: string;
  type: 'file' | 'dir' | 'symlink' | 'other';
  size: number;
  mode: number;
  mtimeMs: number;
}

function typeOf(st: import('node:fs').Stats): Entry['type'] {
  return st.isFile() ? 'file' : st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : 'other';
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4096) throw new Error(`${what} must be a non-empty path`);
  return v;
}

export async function handleCall(method: CallMethod, params: Record<string, unknown>): Promise<unknown> {
  switch (method) {
    case 'stat': {
      // follow: what a symbolic link points to (as cp and stat -L see it)
      const p = str(params.path, 'path');
      const st = params.follow === true ? await fs.stat(p) : await fs.lstat(p);
      return { name: path.basename(p), type: typeOf(st), size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) };
    }
    case 'list': {
      const p = str(params.path, 'path');
      const offset = Math.max(0, Number(params.offset) || 0);
      const names = (await fs.readdir(p)).sort();
      const page = names.slice(offset, offset + LIST_PAGE);
      const entries: Entry[] = [];
      for (const name of page) {
        const st = await fs.lstat(path.join(p, name)).catch(() => undefined);
        if (st) entries.push({ name, type: typeOf(st), size: st.size, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) });
      }
      return { entries, total: names.length, next: offset + page.length < names.length ? offset + page.length : null };
    }
    case 'mkdir':
      await fs.mkdir(str(params.path, 'path'), { recursive: params.recursive === true, mode: typeof params.mode === 'number' ? params.mode : 0o755 });
      return null;
    case 'rename':
      await fs.rename(str(params.from, 'from'), str(params.to, 'to'));
      return null;
    case 'remove':
      await fs.rm(str(params.path, 'path'), { recursive: params.recursive === true, force: false });
      return null;
    case 'readlink':
      return fs.readlink(str(params.path, 'path'));
    case 'symlink':
      await fs.symlink(str(params.target, 'target'), str(params.path, 'path'));
      return null;
    case 'info':
      return guestInfo();
    case 'metrics':
      return guestMetrics();
    case 'listening':
      return listeningSockets();
    case 'identity':
      return applyIdentity(params);
    default:
      throw new Error(`unknown method ${String(method)}`);
  }
}

/** Memory (MemTotal, MemAvailable) and the root filesystem's use: cheap enough to answer every second. */
export async function guestMetrics(): Promise<unknown> {
  const meminfo = await fs.readFile('/proc/meminfo', 'utf8');
  const kib = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(meminfo)?.[1] ?? 0) * 1024;
  const totalBytes = kib('MemTotal');
  const st = await fs.statfs('/');
  return {
    memory: { totalBytes, availableBytes: Math.min(kib('MemAvailable'), totalBytes) },
    rootfs: { totalBytes: st.blocks * st.bsize, availableBytes: st.bavail * st.bsize, usedBytes: (st.blocks - st.bfree) * st.bsize },
  };
}

/** Hostname, OS, kernel, addresses, listening TCP ports. */
export async function guestInfo(): Promise<unknown> {
  const osRelease = await fs.readFile('/etc/os-release', 'utf8').catch(() => '');
  const pretty = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(osRelease)?.[1] ?? 'unknown';
  const addresses: { iface: string; family: string; address: string }[] = [];
  for (const [iface, list] of Object.entries(os.networkInterfaces())) {
    for (const a of list ?? []) if (!a.internal) addresses.push({ iface, family: a.family, address: a.address });
  }
  return {
    hostname: os.hostname(),
    os: pretty,
    kernel: os.release(),
    arch: os.arch(),
    uptimeS: Math.round(os.uptime()),
    memory: { totalMiB: Math.round(os.totalmem() / 2 ** 20), freeMiB: Math.round(os.freemem() / 2 ** 20) },
    addresses,
    listening: await listeningSockets(),
  };
}

/** Listening TCP sockets, like "tcp 0.0.0.0:22" or "tcp6 [::]:8080", sorted, at most 256. */
export async function listeningSockets(): Promise<string[]> {
  const ports = new Set<string>();
  for (const [file, v6] of [['/proc/net/tcp', false], ['/proc/net/tcp6', true]] as const) {
    const text = await fs.readFile(file, 'utf8').catch(() => '');
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[3] !== '0A') continue; // LISTEN
      const [addrHex, portHex] = cols[1].split(':');
      ports.add(`${v6 ? 'tcp6' : 'tcp'} ${decodeAddress(addrHex, v6)}:${parseInt(portHex, 16)}`);
    }
  }
  return [...ports].sort().slice(0, 256);
}

function decodeAddress(hex: string, v6: boolean): string {
  if (!v6) {
    const n = parseInt(hex, 16);
    return [n & 255, (n >> 8) & 255, (n >> 16) & 255, n >>> 24].join('.');
  }
  if (/^0+$/.test(hex)) return '[::]';
  if (hex === '00000000000000000000000001000000') return '[::1]';
  return `[${hex}]`;
}
