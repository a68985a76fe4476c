/**
 * The worker's session API: a client (the CLI, the extension) opens exec and pty sessions on the
 * guest and exchanges their bytes over its RPC connection. Sessions belong to the connection that
 * opened them and are closed when it goes away. Output is acknowledged by the client
 * (`session.ack`) before the guest may send more: flow control from guest process to terminal.
 */
import { ErrorCode, SandboxError } from '../common/errors';
import type { HandlerTable, RpcPeer } from '../common/rpc';
import { StreamId } from '../protocol/frames';
import type { AgentLink, HostSession } from './agentLink';
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
}

const sessionsByPeer = new WeakMap<RpcPeer, Map<number, HostSession>>();

export function sessionHandlers(agent: () => AgentLink | undefined): HandlerTable {
  const find = (peer: RpcPeer, id: unknown): HostSession => {
    const s = sessionsByPeer.get(peer)?.get(Number(id));
    if (!s) throw new SandboxError(ErrorCode.BadArgument, `no session ${id} on this connection`);
    return s;
  };
  return {
    'session.open': (p: OpenParams, peer) => {
      const link = agent();
      if (!link?.connected) throw new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected (is the VM running?)');
      validateOpen(p);
      let owned = sessionsByPeer.get(peer);
      if (!owned) {
        owned = new Map();
        sessionsByPeer.set(peer, owned);
        const mine = owned;
        peer.onClose(() => {
          for (const s of mine.values()) s.close();
          mine.clear();
        });
      }
      const map = owned;
      let timer: NodeJS.Timeout | undefined;
      let timedOut = false;
      const session = link.openSession(
        { kind: p.kind, argv: p.argv, env: p.env, cwd: p.cwd, cols: p.cols, rows: p.rows, path: p.path, mode: p.mode, recursive: p.recursive },
        {
          onStarted: (pid) => peer.notify('session.started', { id: session.id, pid }),
          onData: (stream, data) => peer.notify('session.data', { id: session.id, stream, data: data.toString('base64') }),
          onEof: (stream) => peer.notify('session.eof', { id: session.id, stream }),
          onEvent: p.kind === 'watch' ? (kind, path) => peer.notify('session.event', { id: session.id, kind, path }) : undefined,
          onExit: (code, signal, error) => {
            clearTimeout(timer);
            map.delete(session.id);
            if (timedOut) error = `timed out after ${p.timeoutMs} ms and was killed`;
            peer.notify('session.exit', { id: session.id, code, signal, error });
          },
        },
      );
      map.set(session.id, session);
      if (p.timeoutMs !== undefined) {
        timer = setTimeout(() => {
          timedOut = true;
          session.close();
        }, p.timeoutMs);
      }
      return { id: session.id };
    },
    'guest.call': (p: { method: CallMethod; params?: Record<string, unknown> }) => {
      const link = agent();
      if (!link?.connected) throw new SandboxError(ErrorCode.AgentUnavailable, 'the guest agent is not connected (is the VM running?)');
      if (!CALL_METHODS.includes(p.method)) throw new SandboxError(ErrorCode.BadArgument, `unknown guest call ${String(p.method)}`);
      const params = p.params && typeof p.params === 'object' ? p.params : {};
      return link.call(p.method, params);
    },
    'session.write': async (p: { id: number; data: string }, peer) => {
      await find(peer, p.id).write(Buffer.from(String(p.data), 'base64'));
    },
    'session.eof': (p: { id: number }, peer) => find(peer, p.id).eof(),
    'session.resize': (p: { id: number; cols: number; rows: number }, peer) => find(peer, p.id).resize(Number(p.cols), Number(p.rows)),
    'session.signal': (p: { id: number; signal: string }, peer) => {
      if (!/^SIG[A-Z0-9]{1,10}$/.test(String(p.signal))) throw new SandboxError(ErrorCode.BadArgument, `bad signal name ${p.signal}`);
      find(peer, p.id).signal(p.signal);
    },
    'session.close': (p: { id: number }, peer) => find(peer, p.id).close(),
    'session.ack': (p: { id: number; stream: number; bytes: number }, peer) => {
      const stream = Number(p.stream) === StreamId.Stderr ? StreamId.Stderr : StreamId.Stdout;
      sessionsByPeer.get(peer)?.get(Number(p.id))?.ack(stream, Math.max(0, Math.floor(Number(p.bytes) || 0)));
    },
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
  if (p.argv !== undefined && (!Array.isArray(p.argv) || !p.argv.every((a) => typeof a === 'string'))) {
    throw new SandboxError(ErrorCode.BadArgument, 'argv must be a list of strings');
  }
  if (p.kind === 'exec' && (!p.argv || p.argv.length === 0)) throw new SandboxError(ErrorCode.BadArgument, 'exec needs a command');
}
