/**
 * The guest's sync receiver (guest-agent/src/syncReceiver.ts) on a real folder of the host: a new
 * file is written in place, an existing one replaced atomically, a file cut off is never left
 * looking equal to the host's.
 */
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { SyncReceiver } from '../../guest-agent/src/syncReceiver';
import { encodeHeader, type SyncRecord } from '../../runtime/sync/wire';

const MTIME = Date.UTC(2024, 0, 2, 3, 4, 5, 678);

function receiver(root: string) {
  const out: string[] = [];
  const fatal: string[] = [];
  const r = new SyncReceiver(root, 'test-0', (b) => out.push(b.toString('utf8')), (m) => fatal.push(m));
  const lines = () => out.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l));
  return { r, lines, fatal };
}

function fileRecord(rel: string, body: Buffer, mode = 0o644): Buffer {
  const rec: SyncRecord = { op: 'file', path: rel, size: body.length, mode, mtimeMs: MTIME };
  return Buffer.concat([encodeHeader(rec), body]);
}

function withRoot(fn: (root: string) => void): void {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sync-receiver-'));
  try {
    fn(root);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

test('a new file is written at its name (no temporary left), with the host mode and mtime; new folders too', () =>
  withRoot((root) => {
    const { r, lines, fatal } = receiver(root);
    r.push(Buffer.concat([encodeHeader({ op: 'dir', path: 'a', mode: 0o750 }), encodeHeader({ op: 'dir', path: 'a/b', mode: 0o755 })]));
    const body = Buffer.from('hello\n');
    const stream = Buffer.concat([fileRecord('a/b/new.ts', body, 0o640), fileRecord('a/empty', Buffer.alloc(0)), encodeHeader({ op: 'flush', seq: 1 })]);
    // Byte by byte: every split of a header and a body.
    for (let i = 0; i < stream.length; i++) r.push(stream.subarray(i, i + 1));
    assert.deepEqual(fatal, []);
    assert.deepEqual(lines(), [{ t: 'ack', seq: 1 }]);
    const st = fs.statSync(path.join(root, 'a/b/new.ts'));
    assert.equal(fs.readFileSync(path.join(root, 'a/b/new.ts'), 'utf8'), 'hello\n');
    assert.equal(st.mode & 0o7777, 0o640);
    assert.equal(Math.floor(st.mtimeMs), MTIME);
    assert.equal(fs.statSync(path.join(root, 'a')).mode & 0o7777, 0o750);
    assert.equal(fs.statSync(path.join(root, 'a/empty')).size, 0);
    assert.deepEqual(fs.readdirSync(path.join(root, 'a/b')), ['new.ts']);
  }));

test('an existing file is replaced atomically: a reader holding the old one keeps reading it whole', () =>
  withRoot((root) => {
    const target = path.join(root, 'x.ts');
    fs.writeFileSync(target, 'old content\n');
    const before = fs.statSync(target).ino;
    const held = fs.openSync(target, 'r');
    try {
      const { r, fatal } = receiver(root);
      const body = Buffer.from('new content, longer than the old\n');
      const rec = fileRecord('x.ts', body);
      // Half of the body in: the name still shows the old file.
      r.push(rec.subarray(0, rec.length - 10));
      assert.equal(fs.readFileSync(target, 'utf8'), 'old content\n');
      r.push(rec.subarray(rec.length - 10));
      assert.deepEqual(fatal, []);
      assert.equal(fs.readFileSync(target, 'utf8'), body.toString());
      assert.notEqual(fs.statSync(target).ino, before, 'renamed over, not rewritten in place');
      const buf = Buffer.alloc(64);
      assert.equal(buf.toString('utf8', 0, fs.readSync(held, buf, 0, 64, 0)), 'old content\n');
      assert.deepEqual(fs.readdirSync(root), ['x.ts']);
    } finally {
      fs.closeSync(held);
    }
  }));

test('a new file cut off mid-body never shows the host mtime, and the session end removes it', () =>
  withRoot((root) => {
    const { r } = receiver(root);
    const body = Buffer.alloc(100_000, 7);
    const rec = fileRecord('big.bin', body);
    r.push(rec.subarray(0, rec.length - 1));
    const partial = fs.statSync(path.join(root, 'big.bin'));
    assert.ok(partial.size < body.length || Math.floor(partial.mtimeMs) !== MTIME, 'a partial file must differ from the host file');
    assert.notEqual(Math.floor(partial.mtimeMs), MTIME);
    r.dispose();
    assert.deepEqual(fs.readdirSync(root), []);
  }));

test('a link or a folder where a new file goes: replaced, and the link is not followed', () =>
  withRoot((root) => {
    const outside = fs.mkdtempSync(path.join(os.tmpdir(), 'sync-receiver-out-'));
    try {
      fs.writeFileSync(path.join(outside, 'victim'), 'keep');
      fs.symlinkSync(path.join(outside, 'victim'), path.join(root, 'l'));
      fs.mkdirSync(path.join(root, 'd/sub'), { recursive: true });
      const { r, fatal } = receiver(root);
      r.push(Buffer.concat([fileRecord('l', Buffer.from('mine')), fileRecord('d', Buffer.from('file now'))]));
      assert.deepEqual(fatal, []);
      assert.equal(fs.readFileSync(path.join(outside, 'victim'), 'utf8'), 'keep');
      assert.ok(fs.lstatSync(path.join(root, 'l')).isFile());
      assert.equal(fs.readFileSync(path.join(root, 'l'), 'utf8'), 'mine');
      assert.equal(fs.readFileSync(path.join(root, 'd'), 'utf8'), 'file now');
    } finally {
      fs.rmSync(outside, { recursive: true, force: true });
    }
  }));
