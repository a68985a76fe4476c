/** Connecting to a local (AF_UNIX) socket with a deadline: one definition for every client here. */
import * as net from 'node:net';
import { ErrorCode, SandboxError } from './errors';

/** Resolves with the connected socket, or rejects with the connect error or a Timeout SandboxError. */
export function connectUnix(socketPath: string, timeoutMs = 5000): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath);
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new SandboxError(ErrorCode.Timeout, `no answer on ${socketPath} within ${timeoutMs} ms`));
    }, timeoutMs);
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
