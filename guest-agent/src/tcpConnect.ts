/**
 * The guest end of a forwarded port (`connect` sessions, see runtime/protocol/messages.ts): checks
 * what the host asked for and opens the TCP connection inside the guest. Whoever moves the bytes
 * afterwards (the relay, or GuestSession without one) gets a connected socket.
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

/**
 * Connects to `target`. With `detach`, the socket is handed over without Node ever reading from it
 * (paused before its first read), so another owner of the fd (the relay) sees every byte.
 */
export function openTcp(target: ConnectTarget, detach: boolean): Promise<net.Socket> {
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
      // Node starts reading right after the 'connect' listeners unless the socket is paused.
      if (detach) socket.pause();
      socket.removeAllListeners('error');
      socket.on('error', () => undefined);
      resolve(socket);
    });
  });
}

/** The OS fd of a connected socket (libuv's handle), or undefined where there is none. */
export function socketFd(socket: net.Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}
