/**
 * The pull's tar reader and the batched path: archives made by the host's GNU tar (gnu and pax
 * formats, long names, empty and large files) read back exactly; malformed streams (bad checksum,
 * truncated, oversized long-name headers, no end marker) end with TarError; and an engine fed a
 * lying tar stream (an entry not asked for, a file larger than listed, a stream that fails) still
 * pulls every file correctly, one by one, where the stream stopped being believable.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GuestEntry } from '../../runtime/client/guestFiles';
import { TarError, readTar } from '../../runtime/sync/pull/tarFeed';
import { pull, type PullSource } from '../../runtime/sync/pull/pullEngine';

const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pull-tar-'));
after(() => fs.rmSync(scratch, { recursive: true, force: true }));

async function* chunked(buf: Buffer, size = 1000): AsyncIterable<Buffer> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

function makeTree() {
  const dir = fs.mkdtempSync(path.join(scratch, 'tree-'));
  const long = `${'n'.repeat(90)}/${'m'.repeat(120)}.txt`;
  const files: Record<string, Buffer> = { 'a.txt': Buffer.from('hello'), empty: Buffer.alloc(0), 'big.bin': crypto.randomBytes(1_000_003), [long]: Buffer.from('long name'), 'sp ace\nnl': Buffer.from('odd') };
  for (const [rel, data] of Object.entries(files)) {
    fs.mkdirSync(path.join(dir, path.dirname(rel)), { recursive: true });
    fs.writeFileSync(path.join(dir, rel), data);
  }
  return { dir, files };
}

function tarOf(dir: string, rels: string[], format: string): Buffer {
  return execFileSync('tar', ['--create', '--file=-', `--format=${format}`, '--no-recursion', '--directory', dir, '--null', '--no-unquote', '--verbatim-files-from', '--files-from=-'], { input: rels.map((r) => `${r}\0`).join(''), maxBuffer: 64 << 20 });
}

for (const format of ['gnu', 'posix']) {
  test(`unit: tar (${format}) read back exactly, in small chunks`, async () => {
    const { dir, files } = makeTree();
    const rels = Object.keys(files);
    const got: Record<string, Buffer> = {};
    for await (const e of readTar(chunked(tarOf(dir, rels, format), 777))) {
      assert.equal(e.type, '0');
      const parts: Buffer[] = [];
      for await (const p of e.body) parts.push(p);
      got[e.name] = Buffer.concat(parts);
      assert.equal(got[e.name].length, e.size);
    }
    assert.deepEqual(Object.keys(got), rels);
    for (const r of rels) assert.ok(got[r].equals(files[r]), r);
  });
}

test('unit: unread bodies are skipped; malformed streams end with TarError', async () => {
  const { dir, files } = makeTree();
  const tar = tarOf(dir, Object.keys(files), 'gnu');
  const names: string[] = [];
  for await (const e of readTar(chunked(tar))) names.push(e.name); // bodies never read
  assert.equal(names.length, Object.keys(files).length);
  const drain = async (buf: Buffer) => {
    for await (const e of readTar(chunked(buf))) for await (const _ of e.body);
  };
  const bad = Buffer.from(tar);
  bad[0] ^= 1;
  await assert.rejects(drain(bad), (e: Error) => e instanceof TarError && /checksum/.test(e.message));
  await assert.rejects(drain(tar.subarray(0, 2048 + 100)), TarError);
  await assert.rejects(drain(tar.subarray(0, 512 + 512)), TarError); // a whole entry, no end marker
  // A GNU long-name header claiming 1 GB.
  const header = Buffer.alloc(512);
  header.write('././@LongLink', 0);
  header.write('0000644\0', 100);
  header.write('00000000000\0', 108);
  header.write('00000000000\0', 116);
  header.write(`${(2 ** 30).toString(8).padStart(11, '0')}\0`, 124);
  header.write('00000000000\0', 136);
  header.write('L', 156);
  header.write('ustar  \0', 257);
  header.fill(32, 148, 156);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  await assert.rejects(drain(Buffer.concat([header, Buffer.alloc(1024)])), /L header of 1073741824 bytes/);
});

class TreeSource implements PullSource {
  reads: string[] = [];
  constructor(readonly dir: string, readonly tamper: (rels: string[]) => Buffer) {}
  async list(p: string): Promise<GuestEntry[]> {
    return fs.readdirSync(p, { withFileTypes: true }).map((d) => {
      const st = fs.lstatSync(path.join(p, d.name));
      return { name: d.name, type: d.isDirectory() ? 'dir' : d.isFile() ? 'file' : 'other', size: st.isFile() ? st.size : 0, mode: st.mode & 0o7777, mtimeMs: Math.floor(st.mtimeMs) } as GuestEntry;
    });
  }
  async readlink(): Promise<string> {
    throw new Error('no links');
  }
  async read(p: string, onData: (c: Buffer) => void | Promise<void>): Promise<number> {
    this.reads.push(path.relative(this.dir, p));
    const data = fs.readFileSync(p);
    await onData(data);
    return data.length;
  }
  readMany(_root: string, rels: string[]) {
    return { chunks: chunked(this.tamper(rels), 4096), close: () => undefined };
  }
}

test('unit: the batched path believes a tar stream only while it delivers what was asked', async () => {
  const { dir, files } = makeTree();
  const other = fs.mkdtempSync(path.join(scratch, 'other-'));
  fs.writeFileSync(path.join(other, 'intruder'), 'not asked for');
  fs.writeFileSync(path.join(other, 'a.txt'), 'much longer than hello');
  const cases: [string, (rels: string[]) => Buffer, number][] = [
    ['honest', (rels) => tarOf(dir, rels, 'gnu'), 0],
    ['an entry not asked for', (rels) => Buffer.concat([tarOf(dir, rels.slice(0, 1), 'gnu').subarray(0, -1024), tarOf(other, ['intruder'], 'gnu')]), 3],
    ['a file larger than listed', () => tarOf(other, ['a.txt'], 'gnu'), 4],
    ['garbage', () => crypto.randomBytes(5000), 4],
  ];
  for (const [name, tamper, fallbacks] of cases) {
    const host = fs.mkdtempSync(path.join(scratch, 'host-'));
    const src = new TreeSource(dir, tamper);
    const s = await pull(src, { vm: 'dev', guestPath: dir, hostRoot: host, stateDir: path.join(host, '..', `${path.basename(host)}.state`), caseInsensitive: false });
    assert.equal(src.reads.length, fallbacks, `${name}: files read one by one`);
    assert.ok(!fs.existsSync(path.join(host, 'intruder')), name);
    for (const [rel, data] of Object.entries(files)) {
      if (rel.includes('\n')) continue; // refused: a control character
      assert.ok(fs.readFileSync(path.join(host, rel)).equals(data), `${name}: ${rel}`);
    }
    assert.equal(s.written, 4, name);
  }
});

test('unit: a tar stream that stalls is given up on; every file is then read on its own', async () => {
  const { dir, files } = makeTree();
  const host = fs.mkdtempSync(path.join(scratch, 'host-'));
  const src = new TreeSource(dir, () => Buffer.alloc(0));
  let closed = false;
  src.readMany = () => ({ chunks: (async function* () { await new Promise(() => undefined); })(), close: () => void (closed = true) });
  const s = await pull(src, { vm: 'dev', guestPath: dir, hostRoot: host, stateDir: `${host}.state`, caseInsensitive: false, idleTimeoutMs: 200 });
  assert.ok(closed, 'the stream was closed');
  assert.equal(src.reads.length, 4);
  assert.equal(s.written, 4);
  assert.ok(fs.readFileSync(path.join(host, 'big.bin')).equals(files['big.bin']));
});
