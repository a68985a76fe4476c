/**
 * The worker's session API: a client (the CLI, the extension) opens and controls exec and pty
 * sessions over its RPC connection; their bytes and events travel on the data channel attached to
 * it (dataChannel.ts: frames, no JSON, no base64). Sessions belong to the connection that opened
 * them and are closed when it (or its data channel) goes away, except those opened (or attached)
 * with `keepOnDisconnect`: they are detached instead, attachable for KEPT_SESSION_TTL_MS, and the
 * guest replays what the vanished client had not acknowledged (a VS Code window that reloads).
 * Output is acknowledged by the client before the guest may send more: flow control from guest
 * process to terminal.
 */
import { ErrorCode, SandboxError } from '../common/errors';
import type { HandlerTable, RpcPeer } from '../common/rpc';
import { randomUUID } from 'node:crypto';
import { KEPT_SESSION_TTL_MS, type AgentLink, type HostSession, type SessionHandlers } from './agentLink';
import type { DataChannel, DataChannelSessions } from './dataChannel';
import { CALL_METHODS, SESSION_KINDS, type CallMethod, type SessionKind } from '../protocol/messages';

export interface OpenParams {
  kind: SessionKind;
  argv?: string[];
  env?: Record<string, string>;
  cwd?: string;
  cols?: number;
  rows?: number;
  /** read / write / watch: the guest path. */
  path?: string;
  mode?: number;
  recursive?: boolean;
  /** Kill the session after this long (exec); its exit then carries an error saying so. */
  timeoutMs?: number;
  /**
   * When this connection goes away, detach the session instead of closing it: it runs on in the
   * guest and any client may session.attach it within KEPT_SESSION_TTL_MS, from the last output
   * this client acknowledged.
   */
  keepOnDisconnect?: boolean;
}

const sessionsByPeer = new WeakMap<RpcPeer, Map<number, HostSession>>();
/**
 * Sessions of each connection that ended and whose exit the client has not confirmed yet: the guest
 * keeps them for a resume until it does (`release`), or until the connection goes.
 */
const endedByPeer = new WeakMap<RpcPeer, Set<number>>();
/** How long `session.attach` waits for the agent of a VM being taken over or restored. */
const ATTACH_WAIT_MS = 20_000;

function endedOf(peer: RpcPeer): Set<number> {
  let ended = endedByPeer.get(peer);
  if (!ended) endedByPeer.set(peer, (ended = new Set()));
  return ended;
}

/** Notes that a session of `peer` ended: its client confirms with `release` (at most 4096 remembered). */
function rememberEnded(peer: RpcPeer, id: number): void {
  const ended = endedOf(peer);
  ended.add(id);
  if (ended.size > 4096) ended.delete(ended.values().next().value as number);
}

/** Lets the guest forget the ended sessions of a connection that went away. */
function releaseEnded(peer: RpcPeer, agent: () => AgentLink | undefined): void {
  const ended = endedByPeer.get(peer);
  if (!ended) return;
  for (const id of ended) agent()?.release(id);
  ended.clear();
}
/** What each session a client holds is (for session.detach). */
const kinds = new WeakMap<HostSession, SessionKind>();
/** Sessions opened or attached with keepOnDisconnect. */
const kept = new WeakSet<HostSession>();

/**
 * A connection (or its data channel) went away: its kept sessions are detached without
 * acknowledging what it was handed (it may never have shown it), the others closed.
 */
function letGo(peer: RpcPeer, sessions: Map<number, HostSession>, agent?: () => AgentLink | undefined): void {
  const link = agent?.();
  for (const s of sessions.values()) {
    if (link && kept.has(s) && !s.ended) {
      try {
        link.detachSession(s, kinds.get(s) ?? 'pty', { acknowledge: false, ttlMs: KEPT_SESSION_TTL_MS });
        continue;
      } catch {
        // it ended meanwhile: nothing to keep
      }
    }
    s.close();
  }
  sessions.clear();
  if (agent) releaseEnded(peer, agent);
}
/** Each RPC connection's data channel, once attached (dataChannel.ts). */
const channelsByPeer = new WeakMap<RpcPeer, DataChannel>();
/** Tokens handed out by session.dataToken, waiting for their data channel to attach. */
const pendingTokens = new Map<string, RpcPeer>();

/** Sessions of one RPC connection (created on first use; closed when the connection goes). */
function sessionsOf(peer: RpcPeer, agent?: () => AgentLink | undefined): Map<number, HostSession> {
  let owned = sessionsByPeer.get(peer);
  if (!owned) {
    owned = new Map();
    sessionsByPeer.set(peer, owned);
    const mine = owned;
    peer.onClose(() => letGo(peer, mine, agent));
  }
  return owned;
}

/**
 * Attaches a data channel to the RPC connection that asked for `token` (single use). Returns the
 * channel's view of that connection's sessions, or undefined for an unknown token.
 */
export function attachDataChannel(token: string, channel: DataChannel, agent: () => AgentLink | undefined): DataChannelSessions | undefined {
  const peer = pendingTokens.get(token);
  if (!peer) return undefined;
  pendingTokens.delete(token);
  channelsByPeer.set(peer, channel);
  const sessions = sessionsOf(peer, agent);
  // Without its data channel a session's output has nowhere to go: it ends with the channel.
  channel.onClose(() => {
    if (channelsByPeer.get(peer) !== channel) return;
    channelsByPeer.delete(peer);
    letGo(peer, sessions, agent);
  });
  return {
    write: (id, data) => {
      const s = sessions.get(id);
      return s ? s.write(data) : Promise.reject(new SandboxError(ErrorCode.BadArgument, `no session ${id} on this connection`));
    },
    ack: (id, stream, bytes) => sessions.get(id)?.ack(stream, bytes),
    eof: (id) => sessions.get(id)?.eof(),
    release: (id) => {
      const ended = endedByPeer.get(peer);
      if (ended?.delete(id)) agent()?.release(id);
    },
  };
}

/** A session's events go to its client's data channel, which must be attached first. */
function eventSink(peer: RpcPeer, kind: SessionKind, id: () => number): SessionHandlers {
  const channel = channelsByPeer.get(peer);
  if (!channel) throw new SandboxError(ErrorCode.BadArgument, 'attach a data channel first (session.dataToken, then a connection that opens with an attach frame)');
  return {
    onStarted: (pid) => channel.control(id(), { t: 'started', pid }),
    onData: (stream, data) => channel.data(id(), stream, data),
    onEof: (stream) => channel.eof(id(), stream),
    onEvent: kind === 'watch' ? (k, path) => channel.control(id(), { t: 'event', kind: k, path }) : undefined,
    onExit: (code, signal, error) => channel.control(id(), { t: 'exit', code, signal, error }),
  };
}

export function sessionHandlers(agent: () => AgentLink | undefined): HandlerTable {
  const find = (peer: RpcPeer, id: unknown): HostSession => {
    const s = sessionsByPeer.get(peer)?.get(Number(id));
    if (!s) throw new SandboxError(ErrorCode.BadArgument, `no session ${id} on this connection`);
    return s;
  };
  return {
    'session.dataToken': (_p: unknown, peer) => {
      const token = randomUUID();
      pendingTokens.set(token, peer);
      peer.onClose(() => pendingTokens.delete(token));
      return { token };
    },
    'session.open': (p: OpenParams, peer) => {
      const link = agent();
      if (!link?.connected) throw new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected (is the VM running?)');
      validateOpen(p);
      const map = sessionsOf(peer, agent);
      let timer: NodeJS.Timeout | undefined;
      let timedOut = false;
      const sink = eventSink(peer, p.kind, () => session.id);
      const session = link.openSession(
        { kind: p.kind, argv: p.argv, env: p.env, cwd: p.cwd, cols: p.cols, rows: p.rows, path: p.path, mode: p.mode, recursive: p.recursive },
        {
          ...sink,
          onExit: (code, signal, error) => {
            clearTimeout(timer);
            map.delete(session.id);
            rememberEnded(peer, session.id);
            if (timedOut) error = `timed out after ${p.timeoutMs} ms and was killed`;
            sink.onExit(code, signal, error);
          },
        },
      );
      map.set(session.id, session);
      kinds.set(session, p.kind);
      if (p.keepOnDisconnect) kept.add(session);
      if (p.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true;
          session.close();
        }, p.timeoutMs);
      }
      return { id: session.id };
    },
    /**
     * Attaches this connection to a session the agent kept for a worker that crashed (the client
     * reconnected to the worker that took over). Output held meanwhile arrives first.
     */
    'session.attach': async (p: { id: number; stdout?: number; stderr?: number; keepOnDisconnect?: boolean }, peer) => {
      const id = Number(p.id);
      if (p.keepOnDisconnect !== undefined && typeof p.keepOnDisconnect !== 'boolean') throw new SandboxError(ErrorCode.BadArgument, 'keepOnDisconnect must be true or false');
      const offsets = p.stdout === undefined && p.stderr === undefined ? undefined : ([p.stdout, p.stderr] as const);
      if (offsets && !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)) throw new SandboxError(ErrorCode.BadArgument, 'stdout and stderr offsets must be whole numbers of bytes');
      // A VM being taken over or restored: its agent answers within seconds.
      let link = agent();
      const deadline = Date.now() + ATTACH_WAIT_MS;
      while (!link?.connected && Date.now() < deadline) {
        if (link) await link.waitConnected(deadline - Date.now()).catch(() => undefined);
        else await new Promise((r) => setTimeout(r, 100));
        link = agent();
      }
      if (!link?.connected) throw new SandboxError(ErrorCode.AgentUnavailable, `the guest agent did not answer within ${ATTACH_WAIT_MS / 1000} s (is the VM running?)`);
      const map = sessionsOf(peer, agent);
      const kind = link.inheritedKind(id);
      if (!kind) throw new SandboxError(ErrorCode.BadArgument, `no session ${id} to attach to (it ended, or another client has it)`);
      const sink = eventSink(peer, kind, () => id);
      const { session, resumedAt } = link.claimSession(id, { ...sink, onExit: (code, signal, error) => {
        map.delete(id);
        rememberEnded(peer, id);
        sink.onExit(code, signal, error);
      } }, offsets as readonly [number, number] | undefined);
      if (!session.ended) map.set(id, session);
      kinds.set(session, kind);
      if (p.keepOnDisconnect) kept.add(session);
      else kept.delete(session);
      // The client counts its offsets from where the guest resumed (output follows on the data channel).
      const at = await resumedAt;
      return at ? { id, kind, stdout: at[0], stderr: at[1] } : { id, kind };
    },
    /**
     * This connection lets go of a session, which runs on in the guest: any client may
     * session.attach it within a minute (AgentLink.detachSession holds its output meanwhile).
     * A `detached` control frame on the data channel follows the last output this client gets.
     */
    'session.detach': (p: { id: number }, peer) => {
      const link = agent();
      const session = find(peer, p.id);
      if (!link?.connected) throw new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected (is the VM running?)');
      link.detachSession(session, kinds.get(session) ?? 'exec');
      sessionsByPeer.get(peer)?.delete(session.id);
      channelsByPeer.get(peer)?.control(session.id, { t: 'detached' });
    },
    'guest.call': (p: { method: CallMethod; params?: Record<string, unknown> }) => {
      const link = agent();
      if (!link?.connected) throw new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected (is the VM running?)');
      if (!CALL_METHODS.includes(p.method)) throw new SandboxError(ErrorCode.BadArgument, `unknown guest call ${String(p.method)}`);
      const params = p.params && typeof p.params === 'object' ? p.params : {};
      return link.call(p.method, params);
    },
    'session.resize': (p: { id: number; cols: number; rows: number }, peer) => find(peer, p.id).resize(Number(p.cols), Number(p.rows)),
    'session.signal': (p: { id: number; signal: string }, peer) => {
      if (!/^SIG[A-Z0-9]{1,10}$/.test(String(p.signal))) throw new SandboxError(ErrorCode.BadArgument, `bad signal name ${p.signal}`);
      find(peer, p.id).signal(p.signal);
    },
    'session.close': (p: { id: number }, peer) => find(peer, p.id).close(),
  };
}

function validateOpen(p: OpenParams): void {
  if (!SESSION_KINDS.includes(p.kind)) throw new SandboxError(ErrorCode.BadArgument, `session kind must be one of ${SESSION_KINDS.join(', ')}`);
  if ((p.kind === 'read' || p.kind === 'write' || p.kind === 'watch') && (typeof p.path !== 'string' || !p.path || p.path.length > 4096)) {
    throw new SandboxError(ErrorCode.BadArgument, `${p.kind} needs a guest path`);
  }
  if (p.timeoutMs !== undefined && !(Number.isInteger(p.timeoutMs) && p.timeoutMs > 0 && p.timeoutMs <= 7 * 24 * 3600 * 1000)) {
    throw new SandboxError(ErrorCode.BadArgument, 'timeoutMs must be a positive whole number of milliseconds');
  }
  if (p.keepOnDisconnect !== undefined && typeof p.keepOnDisconnect !== 'boolean') throw new SandboxError(ErrorCode.BadArgument, 'keepOnDisconnect must be true or false');
  if (p.argv !== undefined && (!Array.isArray(p.argv) || !p.argv.every((a) => typeof a === 'string'))) {
    throw new SandboxError(ErrorCode.BadArgument, 'argv must be a list of strings');
  }
  if (p.kind === 'exec' && (!p.argv || p.argv.length === 0)) throw new SandboxError(ErrorCode.BadArgument, 'exec needs a command');
}
