/**
 * Control messages of the channel (CONTROL frames, JSON). One definition for both ends.
 *
 * The host opens every session and picks its id (1..2^32-1); session 0 is the channel itself.
 * Handshake: the host sends `hello` (repeating it until answered, since the guest may not be
 * reading yet); the agent answers `hello` with its own facts. A hello with a new epoch tells the
 * agent that the host end is new: sessions of older epochs are closed and their processes killed.
 * A hello with the agent's current epoch from a new connection (a worker that took over from one
 * that crashed) keeps them: the answer lists them (`sessions`) so their clients can attach again.
 *
 * Resuming (exec and pty): the guest keeps each output stream's bytes until the host grants them
 * back (a grant is the host's client having taken them), and keeps an ended session, with its end
 * message, until the host sends `release`. A new host end sends `resume` with the offsets its
 * client has (none: from the last grant); the guest answers `resumed`, replays the rest of each
 * stream, the EOFs and the end message, and goes on. The host ignores a session's output between
 * taking it over and `resumed`: it is replayed. So no byte is lost or doubled across a worker crash
 * or a save.
 */

export const PROTOCOL_VERSION = 1;
/** Bytes of credit each side starts with on every stream of a session. */
export const INITIAL_WINDOW = 1024 * 1024;
/** The largest control message either side accepts. */
export const MAX_CONTROL_BYTES = 64 * 1024;
/** How many sessions the host allows open at once on one channel. */
export const MAX_SESSIONS = 256;

// ---- host -> guest -------------------------------------------------------------------------

export interface HostHello { t: 'hello'; version: number; epoch: string; time: number }
/**
 * Session kinds: exec (pipes) and pty (a terminal) run a process; read streams a guest file out on
 * stdout; write takes stdin into a guest file (atomically: a temporary renamed at EOF); watch
 * reports changes under a guest path as `event` messages; connect opens a TCP connection in the guest
 * to `address`:`port` and relays its bytes (stdin to the socket, the socket to stdout; EOF on either
 * is a half-close), for port forwarding (runtime/worker/portForwarder.ts). It reports `started` once
 * connected and `exit` 0 once both directions have ended; never resumable.
 */
export type SessionKind = 'exec' | 'pty' | 'read' | 'write' | 'watch' | 'connect';
export const SESSION_KINDS: readonly SessionKind[] = ['exec', 'pty', 'read', 'write', 'watch', 'connect'];

export interface OpenSession {
  t: 'open';
  kind: SessionKind;
  /** read / write / watch: the guest path. */
  path?: string;
  /** write: the file's mode (default 0o644). */
  mode?: number;
  /** watch: include subdirectories. */
  recursive?: boolean;
  /** argv[0] is looked up on PATH. For a pty with no argv the agent starts a login shell. */
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  cols?: number;
  rows?: number;
  /** connect: the guest address (an IPv4 or IPv6 literal) and TCP port. */
  address?: string;
  port?: number;
}
export interface Resize { t: 'resize'; cols: number; rows: number }
export interface SignalSession { t: 'signal'; signal: string }
export interface CloseSession { t: 'close' }
export interface Shutdown { t: 'shutdown'; reboot: boolean }
export interface SetTime { t: 'time'; time: number }
/** Take a kept session over: `stdout` / `stderr` are the bytes the client has of each stream. */
export interface ResumeSession { t: 'resume'; stdout?: number; stderr?: number }
/** The host's client has the session's end: the guest may forget it. */
export interface ReleaseSession { t: 'release' }

/** A one-shot request on a fresh session id; the agent answers with one `result` on the same id. */
export interface Call { t: 'call'; method: CallMethod; params: Record<string, unknown> }
/**
 * `listening`: only the listening TCP sockets (what `info` lists), cheap enough for port forwarding to ask every few seconds.
 * `identity`: a restored clone becomes its own machine (guest-agent/src/identity.ts).
 */
export type CallMethod = 'stat' | 'list' | 'mkdir' | 'rename' | 'remove' | 'info' | 'readlink' | 'symlink' | 'metrics' | 'listening' | 'identity';
export const CALL_METHODS: readonly CallMethod[] = ['stat', 'list', 'mkdir', 'rename', 'remove', 'info', 'readlink', 'symlink', 'metrics', 'listening', 'identity'];

/**
 * The answer to `metrics` (cheap: /proc/meminfo and statfs of /, for sampling once a second).
 * Bytes; `available` never above `total`.
 */
export interface GuestMetrics {
  memory: { totalBytes: number; availableBytes: number };
  rootfs: { totalBytes: number; availableBytes: number; usedBytes: number };
}

/** No guest has more than this much memory or disk (bounds what a hostile guest can claim). */
const MAX_GUEST_BYTES = 2 ** 50;

export type HostMessage = HostHello | OpenSession | Resize | SignalSession | CloseSession | Shutdown | SetTime | Call | ResumeSession | ReleaseSession;

// ---- guest -> host -------------------------------------------------------------------------

export interface AgentHello {
  t: 'hello';
  version: number;
  epoch: string;
  agentVersion: string;
  pid: number;
  hostname: string;
  kernel: string;
  /** The sessions alive in this epoch (answering a hello of the agent's current epoch). */
  sessions?: LiveSession[];
}
export interface LiveSession { id: number; kind: SessionKind }
export interface Heartbeat { t: 'heartbeat'; uptime: number; time: number }
export interface Started { t: 'started'; pid: number }
export interface Exited { t: 'exit'; code: number | null; signal: string | null }
export interface SessionError { t: 'error'; message: string }
/**
 * Answers `resume`: what follows on the session comes after the resume point, which is at these
 * offsets of stdout and stderr from the session's start (absent from an agent that kept nothing).
 */
export interface Resumed { t: 'resumed'; stdout?: number; stderr?: number }

export interface Result { t: 'result'; ok: boolean; value?: unknown; error?: string }
export interface FsEvent { t: 'event'; kind: 'change' | 'rename'; path: string }

export type AgentMessage = AgentHello | Heartbeat | Started | Exited | SessionError | Result | FsEvent | Resumed;

/**
 * Parses and validates a control payload from the guest. Returns the message, or a string saying
 * why it was rejected. Nothing from the guest is believed before it passes here: types, ranges and
 * string lengths are all checked.
 */
export function parseAgentMessage(payload: Buffer): AgentMessage | string {
  if (payload.length > MAX_CONTROL_BYTES) return `control message of ${payload.length} bytes`;
  let value: unknown;
  try {
    value = JSON.parse(payload.toString('utf8'));
  } catch {
    return 'control message is not JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'control message is not an object';
  const m = value as Record<string, unknown>;
  switch (m.t) {
    case 'hello':
      if (!isInt(m.version, 0, 1000)) return 'hello: bad version';
      if (!isStr(m.epoch, 64) || !isStr(m.agentVersion, 64) || !isStr(m.hostname, 255) || !isStr(m.kernel, 255)) return 'hello: bad string field';
      if (!isInt(m.pid, 1, 2 ** 31)) return 'hello: bad pid';
      if (m.sessions !== undefined) {
        const list = m.sessions as unknown[];
        if (!Array.isArray(list) || list.length > MAX_SESSIONS) return 'hello: bad session list';
        if (!list.every((e: any) => typeof e === 'object' && e !== null && isInt(e.id, 1, 2 ** 32 - 1) && SESSION_KINDS.includes(e.kind))) return 'hello: bad session entry';
        if (new Set(list.map((e: any) => e.id)).size !== list.length) return 'hello: repeated session id';
      }
      const hello: AgentHello = { t: 'hello', version: m.version as number, epoch: m.epoch as string, agentVersion: m.agentVersion as string, pid: m.pid as number, hostname: m.hostname as string, kernel: m.kernel as string };
      if (m.sessions !== undefined) hello.sessions = (m.sessions as any[]).map((e) => ({ id: e.id as number, kind: e.kind as SessionKind }));
      return hello;
    case 'heartbeat':
      if (!isNum(m.uptime) || !isNum(m.time)) return 'heartbeat: bad fields';
      return { t: 'heartbeat', uptime: m.uptime as number, time: m.time as number };
    case 'started':
      if (!isInt(m.pid, 1, 2 ** 31)) return 'started: bad pid';
      return { t: 'started', pid: m.pid as number };
    case 'exit':
      if (!(m.code === null || isInt(m.code, -255, 255))) return 'exit: bad code';
      if (!(m.signal === null || isStr(m.signal, 32))) return 'exit: bad signal';
      return { t: 'exit', code: m.code as number | null, signal: m.signal as string | null };
    case 'resumed': {
      const offset = (v: unknown) => v === undefined || (Number.isSafeInteger(v) && (v as number) >= 0);
      if (!offset(m.stdout) || !offset(m.stderr)) return 'resumed: bad offsets';
      return m.stdout === undefined || m.stderr === undefined ? { t: 'resumed' } : { t: 'resumed', stdout: m.stdout as number, stderr: m.stderr as number };
    }
    case 'error':
      if (!isStr(m.message, 4096)) return 'error: bad message';
      return { t: 'error', message: m.message as string };
    case 'result':
      if (typeof m.ok !== 'boolean') return 'result: bad ok';
      if (m.error !== undefined && !isStr(m.error, 4096)) return 'result: bad error';
      return { t: 'result', ok: m.ok, value: m.value, error: m.error as string | undefined };
    case 'event':
      if (m.kind !== 'change' && m.kind !== 'rename') return 'event: bad kind';
      if (!isStr(m.path, 4096)) return 'event: bad path';
      return { t: 'event', kind: m.kind, path: m.path as string };
    default:
      return `unknown control message type ${JSON.stringify(String(m.t).slice(0, 32))}`;
  }
}

/** Parses a control payload from the host (guest side). The host is trusted more, but still checked. */
export function parseHostMessage(payload: Buffer): HostMessage | undefined {
  try {
    const m = JSON.parse(payload.toString('utf8'));
    return typeof m === 'object' && m !== null && typeof m.t === 'string' ? (m as HostMessage) : undefined;
  } catch {
    return undefined;
  }
}

function isStr(v: unknown, max: number): boolean {
  return typeof v === 'string' && v.length <= max;
}
function isNum(v: unknown): boolean {
  return typeof v === 'number' && Number.isFinite(v);
}
function isInt(v: unknown, min: number, max: number): boolean {
  return Number.isInteger(v) && (v as number) >= min && (v as number) <= max;
}

/**
 * Checks the value of a `result` for `method` before the host passes it on. Returns why it is
 * rejected, or undefined when it is well-formed.
 */
export function checkCallResult(method: CallMethod, value: unknown): string | undefined {
  // A listed name becomes a path component on the host: one non-empty component, never . or ..
  const isName = (n: unknown) => isStr(n, 255) && (n as string).length > 0 && !(n as string).includes('/') && n !== '.' && n !== '..' && !(n as string).includes('\0');
  const isEntry = (e: any, strictName = true) =>
    typeof e === 'object' && e !== null && (strictName ? isName(e.name) : isStr(e.name, 4096)) &&
    ['file', 'dir', 'symlink', 'other'].includes(e.type) && isInt(e.size, 0, Number.MAX_SAFE_INTEGER) &&
    isInt(e.mode, 0, 0o7777) && isNum(e.mtimeMs);
  switch (method) {
    case 'readlink':
      return isStr(value, 4096) && (value as string).length > 0 && !(value as string).includes('\0') ? undefined : 'readlink: malformed target';
    case 'mkdir':
    case 'rename':
    case 'remove':
    case 'symlink':
      return value === null || value === undefined ? undefined : `${method}: unexpected value`;
    case 'stat':
      return isEntry(value, false) ? undefined : 'stat: malformed entry';
    case 'list': {
      const v = value as any;
      if (typeof v !== 'object' || v === null || !Array.isArray(v.entries) || v.entries.length > 1000) return 'list: malformed page';
      if (!v.entries.every((e: unknown) => isEntry(e))) return 'list: malformed entry';
      if (!isInt(v.total, 0, 10_000_000) || !(v.next === null || isInt(v.next, 1, 10_000_000))) return 'list: malformed paging';
      return undefined;
    }
    case 'metrics': {
      const v = value as any;
      const pair = (o: any, ...keys: string[]) => typeof o === 'object' && o !== null && keys.every((k) => isInt(o[k], 0, MAX_GUEST_BYTES));
      if (typeof v !== 'object' || v === null || !pair(v.memory, 'totalBytes', 'availableBytes') || !pair(v.rootfs, 'totalBytes', 'availableBytes', 'usedBytes')) return 'metrics: malformed figures';
      if (v.memory.availableBytes > v.memory.totalBytes || v.rootfs.availableBytes > v.rootfs.totalBytes || v.rootfs.usedBytes > v.rootfs.totalBytes) return 'metrics: a part exceeds its total';
      return undefined;
    }
    case 'identity': {
      const v = value as any;
      if (typeof v !== 'object' || v === null || !isStr(v.hostname, 63) || !isStr(v.machineId, 32) || typeof v.reseeded !== 'boolean') return 'identity: malformed answer';
      return v.mac === null || isStr(v.mac, 17) ? undefined : 'identity: bad mac';
    }
    case 'listening':
      return Array.isArray(value) && value.length <= 256 && value.every((l: unknown) => isStr(l, 80)) ? undefined : 'listening: bad ports';
    case 'info': {
      const v = value as any;
      if (typeof v !== 'object' || v === null) return 'info: not an object';
      if (!isStr(v.hostname, 255) || !isStr(v.os, 255) || !isStr(v.kernel, 255)) return 'info: bad strings';
      if (!Array.isArray(v.addresses) || v.addresses.length > 64 || !v.addresses.every((a: any) => isStr(a?.iface, 64) && isStr(a?.family, 8) && isStr(a?.address, 64))) return 'info: bad addresses';
      if (!Array.isArray(v.listening) || v.listening.length > 256 || !v.listening.every((l: unknown) => isStr(l, 80))) return 'info: bad ports';
      return undefined;
    }
  }
}
