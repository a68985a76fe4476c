/**
 * The client's end of a streamed export or import (`sandboxvm export dev -`, `import -`): the
 * client listens on a one-off socket in the service's home (owner-only, like the service's own
 * socket), names it in the request, and the service connects to it to write or read the archive.
 */
import { randomUUID } from 'node:crypto';
import { rmSync } from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

export const TRANSFER_SOCKET = /^\.transfer-[0-9a-f-]{36}\.sock$/;

export interface TransferSocket {
  path: string;
  /** The service's connection, once it connects. */
  accepted: Promise<net.Socket>;
  close(): void;
}

export async function listenTransferSocket(home: string): Promise<TransferSocket> {
  const file = path.join(home, `.transfer-${randomUUID()}.sock`);
  const server = net.createServer();
  let accept!: (s: net.Socket) => void;
  const accepted = new Promise<net.Socket>((resolve) => (accept = resolve));
  server.once('connection', (s) => {
    server.close();
    accept(s);
  });
  const oldUmask = process.umask(0o177);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(file, () => resolve());
    });
  } finally {
    process.umask(oldUmask);
  }
  return {
    path: file,
    accepted,
    close: () => {
      server.close();
      rmSync(file, { force: true });
    },
  };
}
