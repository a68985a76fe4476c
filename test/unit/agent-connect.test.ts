/**
 * unit: `connect` sessions in the guest agent without the relay (vsock hosts, or no relay binary):
 * the agent connects to a TCP server on this host, relays stdin to it and its bytes to stdout within
 * the host's credit, half-closes each way, and ends with exit 0; a refused connection ends with one
 * sentence; a bad target is refused before any connect. Fed frames as a host would send them.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as net from 'node:net';
import { FrameDecoder, FrameType, StreamId, encodeControl, encodeFrame, encodeWindow, type Frame } from '../../runtime/protocol/frames';
import { Agent } from '../../guest-agent/src/agent';

class ScriptedHost {
  readonly frames: Frame[] = [];
  private readonly decoder = new FrameDecoder();
  readonly agent = new Agent((frame) => this.decoder.push(frame, (f) => this.frames.push(f)), () => undefined);
  send(frame: Buffer): void {
    this.agent.receive(frame);
  }
  controls(session: number): any[] {
    return this.frames.filter((f) => f.type === FrameType.Control && f.session === session).map((f) => JSON.parse(f.payload.toString()));
  }
  stdout(session: number): Buffer {
    return Buffer.concat(this.frames.filter((f) => f.type === FrameType.Data && f.session === session && f.stream === StreamId.Stdout).map((f) => f.payload));
  }
  async until<T>(what: string, probe: () => T | undefined, timeoutMs = 10_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const v = probe();
      if (v !== undefined && v !== false) return v;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}

async function greeted(): Promise<ScriptedHost> {
  const host = new ScriptedHost();
  host.send(encodeControl(0, { t: 'hello', version: 1, epoch: 'e1', time: Date.now() }));
  await host.until('the hello', () => host.controls(0).find((m) => m.t === 'hello' && m.epoch === 'e1'));
  return host;
}

test('agent (no relay): a connect session echoes 3 MiB through a TCP server within credit, half-closes, exits 0', async () => {
  const server = net.createServer({ allowHalfOpen: true }, (s) => s.pipe(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as net.AddressInfo).port;
  try {
    const host = await greeted();
    host.send(encodeControl(3, { t: 'open', kind: 'connect', address: '127.0.0.1', port }));
    await host.until('started', () => host.controls(3).find((m) => m.t === 'started'));
    const data = Buffer.alloc(3 * 1024 * 1024);
    for (let i = 0; i < data.length; i++) data[i] = i % 251;
    for (let at = 0; at < data.length; at += 60_000) host.send(encodeFrame(FrameType.Data, 3, data.subarray(at, at + 60_000), StreamId.Stdin));
    host.send(encodeFrame(FrameType.Eof, 3, undefined, StreamId.Stdin));
    await host.until('one window of echo', () => host.stdout(3).length >= 1024 * 1024);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(host.stdout(3).length, 1024 * 1024, 'no more than the window without grants');
    host.send(encodeWindow(3, StreamId.Stdout, 4 * 1024 * 1024));
    await host.until('the exit', () => host.controls(3).find((m) => m.t === 'exit'));
    assert.ok(host.stdout(3).equals(data), 'every byte back, in order');
    assert.ok(host.frames.some((f) => f.type === FrameType.Eof && f.session === 3 && f.stream === StreamId.Stdout));
    assert.deepEqual(host.controls(3).find((m) => m.t === 'exit'), { t: 'exit', code: 0, signal: null });
    host.agent.dispose();
  } finally {
    server.close();
  }
});

test('agent (no relay): a refused connection and a bad target end with one sentence', async () => {
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', () => r()));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const host = await greeted();
  host.send(encodeControl(5, { t: 'open', kind: 'connect', address: '127.0.0.1', port }));
  const refused = await host.until('the error', () => host.controls(5).find((m) => m.t === 'error'));
  assert.equal(refused.message, `nothing is listening on 127.0.0.1:${port} in the guest (connection refused)`);
  host.send(encodeControl(6, { t: 'open', kind: 'connect', address: 'example.com', port: 80 }));
  const bad = await host.until('the error', () => host.controls(6).find((m) => m.t === 'error'));
  assert.equal(bad.message, 'connect needs an IP address, not "example.com"');
  host.send(encodeControl(8, { t: 'open', kind: 'connect', port: 0 }));
  assert.equal((await host.until('the error', () => host.controls(8).find((m) => m.t === 'error'))).message, 'connect needs a TCP port between 1 and 65535, not 0');
  host.agent.dispose();
});
