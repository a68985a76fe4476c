/**
 * The guest end of a forwarded port (`connect` sessions, see runtime/protocol/messages.ts): checks
 * what the host asked for, words failures, and (without the relay, which connects itself) opens
 * the TCP connection inside the guest.
 */
import * as net from 'node:net';
import type { OpenSession } from '../../runtime/protocol/messages';

export interface ConnectTarget {
  address: string;
  port: number;
}

/** The target of a connect request, or throws with one sentence saying what is wrong with it. */
export function connectTarget(req: OpenSession): ConnectTarget {
  const port = req.port;
  if (!Number.isInteger(port) || port! < 1 || port! > 65535) throw new Error(`connect needs a TCP port between 1 and 65535, not ${JSON.stringify(port)}`);
  const address = req.address ?? '127.0.0.1';
  if (typeof address !== 'string' || net.isIP(address) === 0) throw new Error(`connect needs an IP address, not ${JSON.stringify(address)}`);
  return { address, port: port! };
}

/** What a failed connect (or, `connected`, a connection that broke) says, in words a user understands. */
export function connectFailure(target: ConnectTarget, err: NodeJS.ErrnoException, connected = false): string {
  const where = `${target.address.includes(':') ? `[${target.address}]` : target.address}:${target.port}`;
  if (connected) return `the connection to ${where} in the guest broke: ${err.code ?? err.message}`;
  if (err.code === 'ECONNREFUSED') return `nothing is listening on ${where} in the guest (connection refused)`;
  if (err.code === 'ETIMEDOUT') return `connecting to ${where} in the guest timed out`;
  return `connecting to ${where} in the guest failed: ${err.code ?? err.message}`;
}

/** How long a connect inside the guest may take (loopback answers at once; a firewall drops). */
export const CONNECT_TIMEOUT_MS = 10_000;

/** Connects to `target` (GuestSession, when no relay carries the channel). */
export function openTcp(target: ConnectTarget): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: target.address, port: target.port, allowHalfOpen: true });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(Object.assign(new Error('timed out'), { code: 'ETIMEDOUT' }));
    }, CONNECT_TIMEOUT_MS);
    socket.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    socket.once('connect', () => {
      clearTimeout(timer);
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}
