/**
 * The guest's sync receiver as a process of its own: `node sync-receive.js <guest folder>`, run by
 * the host as an exec session, so the relay moves its bytes and the agent's loop (heartbeats,
 * terminals) never waits on the disk. Stdin carries the records of runtime/sync/wire.ts; stdout
 * the manifest, acks and failures; a fatal problem is one line on stderr and exit code 2.
 * Blocking reads and writes on purpose: it has nothing else to do.
 */
import * as fs from 'node:fs';
import { SyncReceiver } from './syncReceiver';
import { describeFsError } from './fileTarget';

const READ_BYTES = 256 * 1024;

function fatal(message: string): never {
  fs.writeSync(2, `${message}\n`);
  process.exit(2);
}

function writeAll(fd: number, data: Buffer): void {
  let at = 0;
  while (at < data.length) {
    try {
      at += fs.writeSync(fd, data, at, data.length - at);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
    }
  }
}

function main(): void {
  const root = process.argv[2];
  if (!root) fatal('usage: sync-receive <guest folder>');
  let receiver: SyncReceiver;
  try {
    receiver = new SyncReceiver(root, `${process.pid}-0`, (b) => writeAll(1, b), (m) => fatal(m));
  } catch (err) {
    fatal(`cannot sync into ${root}: ${describeFsError(err)}`);
  }
  for (;;) {
    const buf = Buffer.allocUnsafe(READ_BYTES);
    let n: number;
    try {
      n = fs.readSync(0, buf, 0, READ_BYTES, null);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1);
        continue;
      }
      if (code === 'EOF') break;
      throw err;
    }
    if (n === 0) break;
    receiver.push(buf.subarray(0, n));
  }
  receiver.dispose();
}

main();
