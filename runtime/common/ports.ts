/**
 * Port forwarding's pure parts, shared by the service, the worker, the CLI and the extension: what a
 * VM's configuration says (vm.json `ports`), what a forward's status looks like, the parsing of
 * `<guest-port>[:<host-port>]` and of the guest's listening sockets (the agent's `info`).
 */
import { isIP } from 'node:net';
import { ErrorCode, SandboxError } from './errors';

/** A forward the user asked for: host `address`:`hostPort` to the guest's `guestPort`. */
export interface ManualForward {
  guestPort: number;
  hostPort: number;
  /** The host address the listener binds: 127.0.0.1 unless the user asked for another. */
  address: string;
}

/** vm.json's `ports`: automatic forwarding of every guest listening port (default on), and the user's own. */
export interface PortsConfig {
  auto: boolean;
  forwards: ManualForward[];
}

export const DEFAULT_PORTS_CONFIG: PortsConfig = { auto: true, forwards: [] };
export const LOOPBACK = '127.0.0.1';
/** At most this many forwards of each origin (a guest listening on 10,000 ports gets 64). */
export const MAX_FORWARDS = 64;

/**
 * A forward as a worker reports it (WorkerStatus.ports). `state`: `active` (the host listener is up),
 * `failed` (it could not be: `error` says why in one sentence), `inactive` (configured, and the VM
 * is not running). `guestListening`: whether the guest listened on the port at the last look
 * (undefined before the first).
 */
export interface ForwardStatus {
  origin: 'auto' | 'manual';
  guestPort: number;
  /** The host port: for an automatic forward, the guest's port or the next free one. */
  hostPort: number;
  address: string;
  state: 'active' | 'failed' | 'inactive';
  error?: string;
  guestListening?: boolean;
  /** Connections open through it now. */
  connections: number;
}

export function isPort(n: unknown): n is number {
  return Number.isInteger(n) && (n as number) >= 1 && (n as number) <= 65535;
}

/** `8080` or `8080:9090` (guest:host) from the command line; the host port defaults to the guest's. */
export function parseForwardSpec(text: string): { guestPort: number; hostPort: number } {
  const m = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(text.trim());
  const guestPort = m ? Number(m[1]) : NaN;
  const hostPort = m?.[2] !== undefined ? Number(m[2]) : guestPort;
  if (!m || !isPort(guestPort) || !isPort(hostPort)) {
    throw new SandboxError(ErrorCode.BadArgument, `invalid port ${JSON.stringify(text)}: use <guest-port>[:<host-port>], ports 1-65535, e.g. 8080 or 8080:9090`);
  }
  return { guestPort, hostPort };
}

/** A host address to bind: an IP literal; refuses names (they could resolve to anything). */
export function checkBindAddress(address: unknown): string {
  if (typeof address !== 'string' || isIP(address) === 0) {
    throw new SandboxError(ErrorCode.BadArgument, `invalid address ${JSON.stringify(address)}: use an IP address such as 127.0.0.1 (the default) or 0.0.0.0 (every interface)`);
  }
  return address;
}

/** Validates vm.json's `ports` (nothing in a VM's directory is trusted blindly); missing: the defaults. */
export function parsePortsConfig(value: unknown): PortsConfig {
  if (value === undefined) return { ...DEFAULT_PORTS_CONFIG, forwards: [] };
  const v = value as Partial<PortsConfig>;
  if (typeof v !== 'object' || v === null || typeof v.auto !== 'boolean' || !Array.isArray(v.forwards) || v.forwards.length > MAX_FORWARDS) {
    throw new Error('vm.json: ports must be {auto, forwards[]}');
  }
  const forwards = v.forwards.map((f) => {
    if (!isPort(f?.guestPort) || !isPort(f?.hostPort)) throw new Error('vm.json: a forward has a bad port');
    return { guestPort: f.guestPort, hostPort: f.hostPort, address: checkBindAddress(f.address) };
  });
  return { auto: v.auto, forwards };
}

/** Where the guest listens on one port: the address a connection inside the guest should go to. */
export interface GuestListener {
  port: number;
  /** 127.0.0.1 for wildcard and loopback listeners, ::1 for IPv6 loopback, else the bound address. */
  connectTo: string;
}

/**
 * The guest's listening TCP ports from `info`'s `listening` ("tcp 0.0.0.0:8080", "tcp6 [::]:22"),
 * one per port (a port bound on 127.0.0.1 and ::1 both is one), at most MAX_FORWARDS * 4.
 * Entries that do not parse are skipped: the list comes from the guest.
 */
export function parseListening(lines: readonly string[]): Map<number, GuestListener> {
  const out = new Map<number, GuestListener>();
  for (const line of lines.slice(0, MAX_FORWARDS * 4)) {
    const m = /^(tcp6?) (\[[^\]]*\]|[0-9.]+):(\d+)$/.exec(line);
    if (!m) continue;
    const port = Number(m[3]);
    if (!isPort(port)) continue;
    const raw = m[2].startsWith('[') ? m[2].slice(1, -1) : m[2];
    let connectTo: string;
    if (raw === '0.0.0.0' || raw === '' || raw === '::' || raw.startsWith('127.')) connectTo = LOOPBACK;
    else if (raw === '::1') connectTo = '::1';
    else if (isIP(raw) !== 0) connectTo = raw;
    else continue; // an IPv6 address the agent left in hex: not one we can connect to
    const known = out.get(port);
    // IPv4 loopback wins: every wildcard listener answers it.
    if (!known || connectTo === LOOPBACK) out.set(port, { port, connectTo });
  }
  return out;
}

/** `127.0.0.1:8080`, `[::1]:8080`: how an address and port are written for a user. */
export function formatAddress(address: string, port: number): string {
  return `${address.includes(':') ? `[${address}]` : address}:${port}`;
}

/** `8080/tcp -> 127.0.0.1:8080` and the state when it is not plainly working. */
export function describeForward(f: ForwardStatus): string {
  const base = `${f.guestPort}/tcp -> ${formatAddress(f.address, f.hostPort)}`;
  if (f.state === 'failed') return `${base} (failed: ${f.error ?? 'unknown error'})`;
  if (f.state === 'inactive') return `${base} (when the VM runs)`;
  if (f.guestListening === false) return `${base} (nothing listens on ${f.guestPort} in the guest yet)`;
  return base;
}

/** One sentence for a listener that could not be made, with what to do about it. */
export function bindFailure(vm: string, f: { guestPort: number; hostPort: number; address: string }, code: string | undefined): string {
  const where = formatAddress(f.address, f.hostPort);
  const retry = `sandboxvm port add ${vm} ${f.guestPort}:<another host port>`;
  if (code === 'EADDRINUSE') return `host port ${f.hostPort} (${where}) is already in use by another program; forward to another one with \`${retry}\``;
  if (code === 'EACCES') return `host port ${f.hostPort} needs privileges this user does not have; use a port above 1023 with \`${retry}\``;
  if (code === 'EADDRNOTAVAIL') return `${f.address} is not an address of this host; use 127.0.0.1 or one of the host's own addresses`;
  return `cannot listen on ${where}: ${code ?? 'unknown error'}`;
}

/** The configured manual forwards of a VM that is not running, as statuses. */
export function inactiveForwards(config: PortsConfig): ForwardStatus[] {
  return config.forwards.map((f) => ({ origin: 'manual', guestPort: f.guestPort, hostPort: f.hostPort, address: f.address, state: 'inactive', connections: 0 }));
}
