/**
 * The sockets QEMU serves the agent channel and QMP on. The worker makes each listening socket and
 * QEMU inherits it as a plain fd (RECIPES.md: pass fds; a QEMU that listens by itself can leave an
 * early client on a connection it never accepts). The worker then closes its copy and connects as
 * a client; after a worker crash, its replacement connects to the same paths and the VM runs on.
 */
import * as fs from 'node:fs';
import * as net from 'node:net';
import { connectUnix } from '../common/unixSocket';

export interface ListeningSocket {
  /** The listening fd to hand to QEMU (stdio slot). */
  fd: number;
  /** After QEMU has been spawned: publishes the socket at its path (owner-only) and closes ours. */
  handOver(): Promise<void>;
  /** Spawning failed: closes and removes it. */
  discard(): void;
}

/**
 * Listens on a temporary name beside `socketPath`. (libuv unlinks a listening socket's path when
 * it is closed, so the socket is renamed to its real path before our copy is closed.)
 */
export function listenForQemu(socketPath: string): Promise<ListeningSocket> {
  const tmp = `${socketPath}.${process.pid}.tmp`;
  fs.rmSync(tmp, { force: true });
  const server = net.createServer();
  // QEMU accepts; until our copy is closed, a connection here would be ours: refuse it.
  server.on('connection', (s) => s.destroy());
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(tmp, () => {
      const fd = (server as unknown as { _handle: { fd: number } })._handle.fd;
      resolve({
        fd,
        handOver: async () => {
          fs.chmodSync(tmp, 0o600);
          fs.renameSync(tmp, socketPath);
          await new Promise<void>((r) => server.close(() => r()));
        },
        discard: () => {
          server.close();
          fs.rmSync(tmp, { force: true });
        },
      });
    });
  });
}

/** Connects to a socket QEMU listens on. */
export function connectToQemu(socketPath: string, timeoutMs = 5000): Promise<net.Socket> {
  return connectUnix(socketPath, timeoutMs);
}
