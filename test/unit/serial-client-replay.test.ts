/**
 * unit: SerialClient hands the replay that comes with the worker's greeting to the first onData
 * listener, though it arrives before `connect` resolves (a console opened on a running VM shows
 * its boot). A fake worker serves serial.sock in a temporary VM directory and writes the greeting
 * and the replay in one write.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { SerialClient } from '../../runtime/client/serialClient';
import { VM_FILES } from '../../runtime/common/paths';

test('serial client: the replay sent with the greeting reaches the first listener, then live bytes follow', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'serial-replay-'));
  const replay = '[    1.318791] PCI: Fatal: No config space access function found\r\nroot@t1:~# ';
  let peer: net.Socket | undefined;
  const server = net.createServer((s) => {
    peer = s;
    s.once('data', () => s.write(`${JSON.stringify({ from: 0 })}\n${replay}`));
  });
  await new Promise<void>((r) => server.listen(path.join(dir, VM_FILES.serialSocket), r));
  try {
    const client = await SerialClient.connect(dir);
    await new Promise((r) => setTimeout(r, 50));
    let got = '';
    const more = new Promise<void>((resolve) => client.onData((d) => {
      got += d.toString();
      if (got.endsWith('live')) resolve();
    }));
    peer!.write('live');
    await Promise.race([more, new Promise((_, reject) => setTimeout(() => reject(new Error(`only ${JSON.stringify(got)} arrived`)), 3000))]);
    assert.equal(got, `${replay}live`);
    assert.equal(client.position, Buffer.byteLength(replay) + 4);
    client.close();
  } finally {
    peer?.destroy();
    server.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
