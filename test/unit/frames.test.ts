/** unit: the channel's framing codec. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { FrameDecoder, FrameType, HEADER_SIZE, MAX_PAYLOAD, ProtocolError, encodeControl, encodeFrame, encodeWindow, type Frame } from '../../runtime/protocol/frames';

function decodeAll(decoder: FrameDecoder, ...chunks: Buffer[]): Frame[] {
  const frames: Frame[] = [];
  for (const c of chunks) decoder.push(c, (f) => frames.push({ ...f, payload: Buffer.from(f.payload) }));
  return frames;
}

test('frames: round trip of every type', () => {
  const wire = Buffer.concat([
    encodeControl(0, { t: 'hello' }),
    encodeFrame(FrameType.Data, 7, Buffer.from('abc'), 1),
    encodeWindow(7, 0, 4096),
    encodeFrame(FrameType.Eof, 7, undefined, 2),
  ]);
  const frames = decodeAll(new FrameDecoder(), wire);
  assert.deepEqual(frames.map((f) => [f.type, f.session, f.stream]), [[1, 0, 0], [2, 7, 1], [3, 7, 0], [4, 7, 2]]);
  assert.equal(JSON.parse(frames[0].payload.toString()).t, 'hello');
  assert.equal(frames[1].payload.toString(), 'abc');
  assert.equal(frames[2].payload.readUInt32BE(0), 4096);
});

test('frames: split at every byte boundary', () => {
  const wire = Buffer.concat([encodeFrame(FrameType.Data, 1, Buffer.from('hello world'), 1), encodeControl(2, { t: 'exit', code: 0, signal: null })]);
  for (let cut = 0; cut <= wire.length; cut++) {
    const frames = decodeAll(new FrameDecoder(), wire.subarray(0, cut), wire.subarray(cut));
    assert.equal(frames.length, 2, `cut at ${cut}`);
    assert.equal(frames[0].payload.toString(), 'hello world');
  }
});

test('frames: a half-written frame is held, not delivered', () => {
  const d = new FrameDecoder();
  const wire = encodeFrame(FrameType.Data, 1, Buffer.alloc(1000, 1), 1);
  assert.equal(decodeAll(d, wire.subarray(0, 500)).length, 0);
  assert.equal(d.buffered, 500);
});

test('frames: oversize, bad magic, bad type, bad stream and bad window sizes are rejected', () => {
  const header = (mutate: (b: Buffer) => void) => {
    const b = encodeFrame(FrameType.Data, 1, Buffer.alloc(4), 1);
    mutate(b);
    return b;
  };
  const bad = [
    header((b) => b.writeUInt32BE(MAX_PAYLOAD + 1, 8)),
    header((b) => b.writeUInt16BE(0x1234, 0)),
    header((b) => (b[2] = 9)),
    header((b) => (b[3] = 3)),
    header((b) => (b[2] = FrameType.Window, b.writeUInt32BE(5, 8))),
    header((b) => (b[2] = FrameType.Eof)),
  ];
  for (const b of bad) assert.throws(() => decodeAll(new FrameDecoder(), b), ProtocolError);
});

test('frames: the decoder refuses to be used after an error until reset', () => {
  const d = new FrameDecoder();
  assert.throws(() => decodeAll(d, Buffer.alloc(HEADER_SIZE, 0xff)), ProtocolError);
  assert.throws(() => decodeAll(d, encodeControl(0, {})), ProtocolError);
  d.reset();
  assert.equal(decodeAll(d, encodeControl(0, {})).length, 1);
});

test('frames: resync mode skips garbage to the next frame', () => {
  const d = new FrameDecoder(MAX_PAYLOAD, true);
  const frames = decodeAll(d, Buffer.concat([Buffer.from('garbage S V'), encodeControl(0, { t: 'x' }), Buffer.alloc(20, 0x53), encodeControl(0, { t: 'y' })]));
  assert.deepEqual(frames.map((f) => JSON.parse(f.payload.toString()).t), ['x', 'y']);
  assert.ok(d.skippedBytes >= 31);
});

test('frames: encodeFrame refuses oversize payloads', () => {
  assert.throws(() => encodeFrame(FrameType.Data, 1, Buffer.alloc(MAX_PAYLOAD + 1)), RangeError);
});
