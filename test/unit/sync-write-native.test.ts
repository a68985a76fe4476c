/**
 * The guest's native bulk writer (guest-agent/native/syncWrite.c), run on the host (the same
 * static x86_64 binary the image ships, from `npm run build`): records of runtime/sync/wire.ts in,
 * acks and failures out. Each case runs with 0 (the main thread alone), 1 and 4 writer threads:
 * the bytes, modes and mtimes are the host's; an existing file is replaced by a rename (a new
 * inode, the old one untouched by the write); things in the way are replaced; a stream cut off
 * mid-file leaves no file; a path outside the folder or another record type ends it (exit 2)
 * with nothing written.
 */
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { encodeHeader, type SyncRecord } from '../../runtime/sync/wire';

const WRITER = path.resolve(__dirname, '../../dist/guest-agent/bin/sandboxvm-sync-write');

function fileRecord(p: string, body: Buffer | string, mode = 0o644, mtimeMs = 1_700_000_000_123): Buffer[] {
  const b = Buffer.isBuffer(body) ? body : Buffer.from(body);
  return [encodeHeader({ op: 'file', path: p, size: b.length, mode, mtimeMs }), b];
}
const rec = (r: SyncRecord) => encodeHeader(r);

function runWriter(root: string, input: Buffer[], writers: number) {
  const r = spawnSync(WRITER, [root, String(writers)], { input: Buffer.concat(input), timeout: 60_000 });
  return { code: r.status, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function tempRoot(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'sbxt-syncw-'));
}

test('the native writer is built', () => {
  assert.ok(fs.existsSync(WRITER), `${WRITER} is missing: run npm run build`);
});

for (const writers of [0, 1, 4]) {
  test(`${writers} writer thread(s): a tree of dirs and files, bytes, modes and mtimes as sent; acks in order`, () => {
    const root = tempRoot();
    try {
      const input: Buffer[] = [rec({ op: 'dir', path: 'a', mode: 0o755 }), rec({ op: 'dir', path: 'a/b', mode: 0o700 }), rec({ op: 'dir', path: 'a/b/c', mode: 0o750 })];
      const want = new Map<string, { body: Buffer; mode: number; mtimeMs: number }>();
      for (let i = 0; i < 300; i++) {
        const p = ['a', 'a/b', 'a/b/c', 'd/e'][i % 4] + `/f${i}.txt`;
        const body = Buffer.alloc(i * 37, `file ${i} `);
        const mode = i % 7 === 0 ? 0o755 : i % 11 === 0 ? 0o600 : 0o644;
        const mtimeMs = 1_600_000_000_000 + i * 1001;
        want.set(p, { body, mode, mtimeMs });
        input.push(...fileRecord(p, body, mode, mtimeMs));
        if (i === 150) input.push(rec({ op: 'flush', seq: 1 }));
      }
      const big = Buffer.alloc(5 * 1024 * 1024 + 17, 'big');
      want.set('big.bin', { body: big, mode: 0o644, mtimeMs: 1_650_000_000_999 });
      input.push(...fileRecord('big.bin', big, 0o644, 1_650_000_000_999));
      // Unicode and JSON escapes in a name.
      want.set('naïve "q" \\ ✓.txt', { body: Buffer.from('x'), mode: 0o644, mtimeMs: 1_600_000_000_000 });
      input.push(...fileRecord('naïve "q" \\ ✓.txt', 'x', 0o644, 1_600_000_000_000));
      input.push(rec({ op: 'flush', seq: 2 }));
      const r = runWriter(root, input, writers);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '{"t":"ack","seq":1}\n{"t":"ack","seq":2}\n');
      for (const [p, w] of want) {
        const full = path.join(root, p);
        assert.ok(fs.readFileSync(full).equals(w.body), `${p}: bytes`);
        const st = fs.statSync(full);
        assert.equal(st.mode & 0o7777, w.mode, `${p}: mode`);
        assert.equal(Math.floor(st.mtimeMs), w.mtimeMs, `${p}: mtime`);
      }
      assert.equal(fs.statSync(path.join(root, 'a/b')).mode & 0o7777, 0o700);
      assert.equal(fs.statSync(path.join(root, 'a/b/c')).mode & 0o7777, 0o750);
      assert.deepEqual(fs.readdirSync(root).filter((n) => n.endsWith('.partial')), []);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test(`${writers} writer thread(s): an existing file replaced by a rename, things in the way replaced, two records for one path applied in order`, () => {
    const root = tempRoot();
    try {
      fs.writeFileSync(path.join(root, 'old.txt'), 'old contents');
      const oldIno = fs.statSync(path.join(root, 'old.txt')).ino;
      const held = fs.openSync(path.join(root, 'old.txt'), 'r');
      fs.mkdirSync(path.join(root, 'dir-in-the-way/sub'), { recursive: true });
      fs.writeFileSync(path.join(root, 'dir-in-the-way/sub/x'), 'x');
      fs.writeFileSync(path.join(root, 'file-in-the-way'), 'f');
      fs.symlinkSync('/etc', path.join(root, 'link-parent'));
      const r = runWriter(root, [
        ...fileRecord('old.txt', 'new contents'),
        ...fileRecord('dir-in-the-way', 'now a file'),
        rec({ op: 'dir', path: 'file-in-the-way', mode: 0o755 }),
        ...fileRecord('link-parent/passwd', 'not through the link'),
        ...fileRecord('twice.txt', 'first'),
        ...fileRecord('twice.txt', 'second'),
        rec({ op: 'flush', seq: 7 }),
      ], writers);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '{"t":"ack","seq":7}\n');
      assert.equal(fs.readFileSync(path.join(root, 'old.txt'), 'utf8'), 'new contents');
      assert.notEqual(fs.statSync(path.join(root, 'old.txt')).ino, oldIno, 'replaced by a rename');
      const buf = Buffer.alloc(64);
      assert.equal(buf.toString('utf8', 0, fs.readSync(held, buf, 0, 64, 0)), 'old contents', 'the old inode was never written');
      fs.closeSync(held);
      assert.equal(fs.readFileSync(path.join(root, 'dir-in-the-way'), 'utf8'), 'now a file');
      assert.ok(fs.statSync(path.join(root, 'file-in-the-way')).isDirectory());
      assert.ok(fs.lstatSync(path.join(root, 'link-parent')).isDirectory(), 'the link in the way was replaced by a folder');
      assert.equal(fs.readFileSync(path.join(root, 'link-parent/passwd'), 'utf8'), 'not through the link');
      assert.equal(fs.readFileSync(path.join(root, 'twice.txt'), 'utf8'), 'second');
      assert.deepEqual(fs.readdirSync(root).filter((n) => n.endsWith('.partial')), []);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test(`${writers} writer thread(s): a link where the host has a folder is replaced before anything is made through it`, () => {
    const root = tempRoot();
    const outside = tempRoot();
    try {
      fs.symlinkSync(outside, path.join(root, 'a'));
      const input: Buffer[] = [rec({ op: 'dir', path: 'a', mode: 0o755 })];
      for (let i = 0; i < 300; i++) input.push(rec({ op: 'dir', path: `a/d${i}`, mode: 0o755 }));
      input.push(rec({ op: 'dir', path: 'a/b', mode: 0o755 }));
      for (let i = 0; i < 50; i++) input.push(...fileRecord(`a/b/f${i}`, `f${i}`));
      input.push(rec({ op: 'dir', path: 'a/c', mode: 0o700 }), ...fileRecord('a/c/g', 'g'), rec({ op: 'flush', seq: 1 }));
      const r = runWriter(root, input, writers);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '{"t":"ack","seq":1}\n');
      assert.ok(fs.lstatSync(path.join(root, 'a')).isDirectory());
      assert.equal(fs.readdirSync(path.join(root, 'a/b')).length, 50);
      assert.equal(fs.statSync(path.join(root, 'a/c')).mode & 0o7777, 0o700);
      assert.deepEqual(fs.readdirSync(outside), [], 'nothing written through the link');
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
      fs.rmSync(outside, { recursive: true, force: true });
    }
  });

  test(`${writers} writer thread(s): a stream cut off mid-file leaves no file and no temporary`, () => {
    const root = tempRoot();
    try {
      fs.writeFileSync(path.join(root, 'kept.txt'), 'kept');
      const whole = fileRecord('done.txt', 'complete');
      const cut = fileRecord('cut.bin', Buffer.alloc(6 * 1024 * 1024, 1));
      const cutSmall = fileRecord('kept.txt', Buffer.alloc(1000, 2));
      for (const partial of [cut, cutSmall]) {
        const r = runWriter(root, [...whole, partial[0], partial[1].subarray(0, 500)], writers);
        assert.equal(r.code, 0, r.stderr);
      }
      assert.equal(fs.readFileSync(path.join(root, 'done.txt'), 'utf8'), 'complete');
      assert.equal(fs.readFileSync(path.join(root, 'kept.txt'), 'utf8'), 'kept');
      assert.deepEqual(fs.readdirSync(root).sort(), ['done.txt', 'kept.txt']);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
}

test('a flush after every file, 4 writer threads: every ack once, in order, each after its files are complete', () => {
  const root = tempRoot();
  try {
    const input: Buffer[] = [];
    for (let i = 1; i <= 200; i++) input.push(...fileRecord(`d${i % 9}/f${i}`, Buffer.alloc(i * 100, i)), rec({ op: 'flush', seq: i }));
    const r = runWriter(root, input, 4);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, Array.from({ length: 200 }, (_, i) => `{"t":"ack","seq":${i + 1}}\n`).join(''));
    for (let i = 1; i <= 200; i++) assert.equal(fs.statSync(path.join(root, `d${i % 9}/f${i}`)).size, i * 100);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('paths outside the folder, malformed headers and other records end the writer (exit 2) before anything is written', () => {
  const bad: [string, Buffer][] = [
    ['..', Buffer.concat(fileRecord('../escape.txt', 'x'))],
    ['absolute', Buffer.concat(fileRecord('/tmp/escape.txt', 'x'))],
    ['empty component', Buffer.concat(fileRecord('a//b', 'x'))],
    ['dot', Buffer.concat(fileRecord('a/./b', 'x'))],
    ['NUL', Buffer.concat(fileRecord('a\u0000b', 'x'))],
    ['remove record', rec({ op: 'remove', path: 'x' })],
    ['not JSON', Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{x}')])],
    ['huge header', Buffer.from([0x7f, 0, 0, 0])],
    ['fractional size', (() => {
      const json = Buffer.from('{"op":"file","path":"f","size":1.5,"mode":420,"mtimeMs":1}');
      const h = Buffer.alloc(4);
      h.writeUInt32BE(json.length);
      return Buffer.concat([h, json, Buffer.from('xx')]);
    })()],
  ];
  for (const [what, input] of bad) {
    const root = tempRoot();
    try {
      const r = runWriter(root, [input, ...fileRecord('after.txt', 'y')], 2);
      assert.equal(r.code, 2, `${what}: exit ${r.code}, stderr ${r.stderr}`);
      assert.match(r.stderr, /\S/, `${what}: one sentence on stderr`);
      assert.deepEqual(fs.readdirSync(root), [], `${what}: nothing written`);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  }
  assert.ok(!fs.existsSync(path.join(os.tmpdir(), 'escape.txt')));
});

test('a file it cannot write is reported as a failure naming the path; the rest is applied', () => {
  const root = tempRoot();
  try {
    fs.writeFileSync(path.join(root, 'plain'), 'a file, not a folder');
    // A folder made of a file's name deeper down (a component that is a file): mkdir fails ENOTDIR.
    const r = runWriter(root, [...fileRecord('plain/sub/x.txt', 'x'), ...fileRecord('ok.txt', 'ok'), rec({ op: 'flush', seq: 1 })], 2);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, '{"t":"fail","path":"plain/sub/x.txt","message":"a component of the path is not a directory"}\n{"t":"ack","seq":1}\n');
    assert.equal(fs.readFileSync(path.join(root, 'ok.txt'), 'utf8'), 'ok');
    assert.equal(fs.readFileSync(path.join(root, 'plain'), 'utf8'), 'a file, not a folder');
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
