/** unit: the serial console's replay ring (positions in console.log) and its hello validation. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ByteRing, parseSerialHello } from '../../runtime/worker/serialConsole';

test('ring: keeps the last `limit` bytes, addressed by absolute position', () => {
  const ring = new ByteRing(100, 8);
  ring.push(Buffer.from('abcde'));
  assert.deepEqual([ring.start, ring.position], [100, 105]);
  ring.push(Buffer.from('fghij'));
  assert.deepEqual([ring.start, ring.position], [102, 110]);
  assert.equal(ring.since(undefined).data.toString(), 'cdefghij');
  assert.deepEqual(ring.since(106), { from: 106, data: Buffer.from('ghij') });
  assert.equal(ring.since(0).from, 102, 'a position older than the ring starts at its oldest byte');
  assert.deepEqual(ring.since(999), { from: 110, data: Buffer.alloc(0) }, 'a position beyond the end replays nothing');
  ring.push(Buffer.alloc(20, 'z'));
  assert.equal(ring.since(undefined).data.toString(), 'zzzzzzzz');
  assert.equal(ring.start, 122);
});

test('hello: protocol 1 with an optional position; anything else is refused with a sentence', () => {
  assert.deepEqual(parseSerialHello('{"serial":1}'), {});
  assert.deepEqual(parseSerialHello('{"serial":1,"from":42}'), { from: 42 });
  for (const bad of ['', 'hello', '{"serial":2}', '[]', 'null', '{"serial":1,"from":-1}', '{"serial":1,"from":1.5}', '{"serial":1,"from":"7"}', '{"serial":1,"from":1e300}']) {
    assert.throws(() => parseSerialHello(bad), /JSON|protocol|position/, bad);
  }
});
