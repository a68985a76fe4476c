/**
 * The pull's host writer against a local adversary: bad paths, links that lead out (absolute,
 * relative, through a link already in the folder), a directory swapped for a link between the
 * check and the write (hooks, in both the anchored and the checked walk), modes, sizes, counts
 * and the free-space floor. After each attack a sentinel tree beside the folder hashes the same.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as crypto from 'node:crypto';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Refused, SafeHostWriter, type WriterOptions } from '../../runtime/sync/pull/safeHostWriter';

const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function setup() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pull-writer-'));
  made.push(base);
  const root = path.join(base, 'root');
  const outside = path.join(base, 'outside');
  fs.mkdirSync(root);
  fs.mkdirSync(outside);
  fs.writeFileSync(path.join(outside, 'secret'), 'keep me');
  fs.mkdirSync(path.join(outside, 'sub'));
  return { base, root, outside };
}

/** Every path, type, mode and content hash under `dir` (links not followed). */
function treeHash(dir: string): string {
  const h = crypto.createHash('sha256');
  const visit = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = path.join(rel, name);
      const st = fs.lstatSync(path.join(dir, r));
      h.update(`${r}\0${st.mode}\0`);
      if (st.isFile()) h.update(fs.readFileSync(path.join(dir, r)));
      if (st.isSymbolicLink()) h.update(fs.readlinkSync(path.join(dir, r)));
      if (st.isDirectory()) visit(r);
    }
  };
  visit('');
  return h.digest('hex');
}

async function* bytes(...parts: (string | Buffer)[]): AsyncIterable<Buffer> {
  for (const p of parts) yield Buffer.isBuffer(p) ? p : Buffer.from(p);
}

function write(w: SafeHostWriter, rel: string, content: string | Buffer, mode = 0o644, announced?: number) {
  const buf = Buffer.isBuffer(content) ? content : Buffer.from(content);
  return w.writeFile(rel, bytes(buf), { announced: announced ?? buf.length, mode });
}

async function refused(p: Promise<unknown> | (() => unknown), pattern: RegExp): Promise<void> {
  await assert.rejects(async () => (typeof p === 'function' ? p() : p), (err: Error) => {
    assert.ok(err instanceof Refused, `expected Refused, got ${err.stack}`);
    assert.match(err.message, pattern);
    return true;
  });
}

const MODES: { name: string; options: WriterOptions }[] = [
  { name: 'anchored', options: {} },
  { name: 'checked', options: { anchored: false } },
];

test('unit: writes a file atomically with safe modes; the anchored walk is used on Linux', async () => {
  const { root } = setup();
  const w = new SafeHostWriter(root);
  assert.equal(w.anchored, process.platform === 'linux');
  const r = await write(w, 'a/b/c.txt', 'hello', 0o7777);
  assert.equal(r.rel, 'a/b/c.txt');
  assert.equal(fs.readFileSync(path.join(root, 'a/b/c.txt'), 'utf8'), 'hello');
  assert.equal(fs.statSync(path.join(root, 'a/b/c.txt')).mode & 0o7777 & ~0o755, 0, 'no setuid, setgid, sticky, group/other write');
  assert.equal(r.sha256, crypto.createHash('sha256').update('hello').digest('hex'));
  // replaced, not appended; no temporary left
  await write(w, 'a/b/c.txt', 'bye');
  assert.equal(fs.readFileSync(path.join(root, 'a/b/c.txt'), 'utf8'), 'bye');
  assert.deepEqual(fs.readdirSync(path.join(root, 'a/b')), ['c.txt']);
  w.close();
});

test('unit: bad paths are refused and nothing is made: .., NUL, control characters, long names, empty names', async () => {
  const { base, root, outside } = setup();
  const before = treeHash(base);
  const w = new SafeHostWriter(root);
  for (const [rel, why] of [
    ['../outside/secret', /"\.\."/],
    ['a/../../outside/x', /"\.\."/],
    ['./x', /"\."/],
    ['a\0b', /NUL/],
    ['new\nline', /control character/],
    ['x'.repeat(256), /longer than 255 bytes/],
    [`${'d/'.repeat(2100)}f`, /path longer than/],
    ['a//b', /empty name/],
    ['/etc/passwd', /empty name/],
    ['', /empty path/],
    ['a\\..\\b', /backslash/],
  ] as const) {
    await refused(write(w, rel, 'x'), why);
  }
  await refused(() => w.symlink('l\nx', 'a'), /control/);
  await refused(() => w.mkdir('..'), /"\.\."/);
  assert.equal(treeHash(base), before);
  assert.deepEqual(fs.readdirSync(root), []);
  assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'keep me');
  w.close();
});

test('unit: links that lead out are never made; links that stay in are', async () => {
  const { base, root, outside } = setup();
  fs.symlinkSync(outside, path.join(root, 'userlink')); // a link the user had in the folder
  const before = treeHash(outside);
  const w = new SafeHostWriter(root);
  await refused(() => w.symlink('etc', '/etc'), /absolute/);
  await refused(() => w.symlink('up', '../../..'), /leads out/);
  await refused(() => w.symlink('a/up', '../..'), /leads out/);
  await refused(() => w.symlink('dot', 'x/../..'), /leads out/);
  await refused(() => w.symlink('via', 'userlink/secret'), /through a link already there/);
  w.mkdir('sub');
  w.symlink('sub/self', '.');
  await refused(() => w.symlink('climb', 'sub/self/../..'), /leads out/);
  w.symlink('sub/parent', '..'); // the root: inside
  await refused(() => w.symlink('sub/esc', 'parent/..'), /leads out/);
  w.symlink('ok', 'sub/file');
  w.symlink('sub/up', '../ok');
  assert.equal(fs.readlinkSync(path.join(root, 'ok')), 'sub/file');
  await refused(() => w.symlink('ok', 'sub/other'), /already has something/);
  assert.equal(treeHash(outside), before);
  assert.ok(!fs.existsSync(path.join(root, 'etc')) && !fs.existsSync(path.join(root, 'up')));
  void base;
  w.close();
});

for (const mode of MODES) {
  test(`unit: nothing is written through a link on the way (${mode.name})`, async () => {
    const { root, outside } = setup();
    fs.symlinkSync(outside, path.join(root, 'out'));
    fs.symlinkSync('/etc', path.join(root, 'etc'));
    const before = treeHash(outside);
    const w = new SafeHostWriter(root, mode.options);
    await refused(write(w, 'out/secret', 'pwned'), /link or not a folder/);
    await refused(write(w, 'out/sub/new', 'pwned'), /link or not a folder/);
    await refused(() => w.mkdir('out/x'), /link or not a folder/);
    await refused(write(w, 'etc/passwd', 'pwned'), /link or not a folder/);
    assert.equal(treeHash(outside), before);
    // A link at the destination itself is replaced by the file (the link, never its target).
    await write(w, 'out', 'now a file');
    assert.ok(fs.lstatSync(path.join(root, 'out')).isFile());
    assert.equal(treeHash(outside), before);
    w.close();
  });

  for (const point of ['afterOpen', 'beforeRename'] as const) {
    test(`unit: a folder swapped for a link to outside ${point === 'afterOpen' ? 'between the check and the write' : 'between the write and the rename'} cannot redirect it (${mode.name})`, async () => {
      const { root, outside } = setup();
      const before = treeHash(outside);
      let swaps = 0;
      const w = new SafeHostWriter(root, {
        ...mode.options,
        hooks: {
          [point]: (rel: string) => {
            if (!rel.startsWith('d/')) return;
            swaps++;
            fs.renameSync(path.join(root, 'd'), path.join(root, `d.moved${swaps}`));
            fs.symlinkSync(outside, path.join(root, 'd'));
          },
        },
      });
      w.mkdir('d');
      await refused(write(w, 'd/secret', 'pwned'), /replaced during the pull/);
      // The next write meets the link at once.
      await refused(write(w, 'd/other', 'pwned'), /link or not a folder/);
      assert.equal(treeHash(outside), before, 'nothing outside changed');
      assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'keep me');
      // Anchored, the temporary is removed through the folder held open; checked, it is left where
      // the folder was moved (removing it by a path that no longer leads there could hit another file).
      const left = fs.readdirSync(path.join(root, 'd.moved1'));
      if (mode.name === 'anchored') assert.deepEqual(left, [], 'no temporary left behind');
      else assert.ok(left.every((n) => /^\.sandboxvm-pull-\d+-\d+\.partial$/.test(n)), `only a temporary: ${left}`);
      w.close();
    });
  }
}

test('unit: anchored, a folder swapped for a link even after the last check cannot redirect the rename', async (t) => {
  const { root, outside } = setup();
  const before = treeHash(outside);
  const w = new SafeHostWriter(root, {
    hooks: {
      afterCheck: (rel) => {
        if (rel !== 'd/secret') return;
        fs.renameSync(path.join(root, 'd'), path.join(root, 'd.moved'));
        fs.symlinkSync(outside, path.join(root, 'd'));
      },
    },
  });
  if (!w.anchored) return t.skip('no /proc here: the checked walk has this window (see safeHostWriter.ts)');
  w.mkdir('d');
  await write(w, 'd/secret', 'written into the folder held open');
  assert.equal(treeHash(outside), before, 'nothing outside changed');
  assert.equal(fs.readFileSync(path.join(root, 'd.moved/secret'), 'utf8'), 'written into the folder held open');
  w.close();
});

test('unit: sizes and counts are bounded: a 1 TB claim is refused at once, an overlong stream is cut off', async () => {
  const { root } = setup();
  const w = new SafeHostWriter(root, { limits: { maxFileBytes: 1000, maxTotalBytes: 2500, maxEntries: 3 } });
  const t0 = performance.now();
  await refused(w.writeFile('huge', bytes(), { announced: 2 ** 40, mode: 0o644 }), /1 TiB, over the 1000 bytes limit/);
  assert.ok(performance.now() - t0 < 100);
  // claims 10 bytes, sends 2000
  await refused(w.writeFile('liar', bytes(Buffer.alloc(600), Buffer.alloc(600), Buffer.alloc(800)), { announced: 10, mode: 0o644 }), /more than the 10 bytes/);
  await refused(w.writeFile('short', bytes('abc'), { announced: 10, mode: 0o644 }), /sent 3 bytes, not the 10/);
  assert.deepEqual(fs.readdirSync(root), [], 'no partial files');
  await write(w, 'a', Buffer.alloc(900));
  await write(w, 'b', Buffer.alloc(900));
  await refused(write(w, 'c', Buffer.alloc(900)), /past its 2\.4 KiB limit/);
  await write(w, 'd', 'x');
  await refused(write(w, 'e', 'x'), /past its limit of 3 entries/);
  w.close();
});

test('unit: the free-space floor keeps the host disk from filling', async () => {
  const { root } = setup();
  const free = fs.statfsSync(root).bavail * fs.statfsSync(root).bsize;
  const w = new SafeHostWriter(root, { limits: { minFreeBytes: free + 2 ** 30, minFreeFraction: 0 } });
  await refused(write(w, 'f', 'x'), /would leave less than .* free on the host's disk/);
  assert.deepEqual(fs.readdirSync(root), []);
  w.close();
});

test('unit: a file never replaces a folder, a FIFO or a device; remove takes only files and links', async () => {
  const { root } = setup();
  fs.mkdirSync(path.join(root, 'dir'));
  execFileSync('mkfifo', [path.join(root, 'fifo')]);
  const w = new SafeHostWriter(root);
  await refused(write(w, 'dir', 'x'), /host folder has a folder/);
  await refused(write(w, 'fifo', 'x'), /device, FIFO or socket/);
  await refused(() => w.remove('fifo'), /not a file or a link/);
  await refused(() => w.remove('dir'), /not a file or a link/);
  assert.ok(fs.lstatSync(path.join(root, 'fifo')).isFIFO());
  await write(w, 'f', 'x');
  assert.equal(w.remove('f'), true);
  assert.equal(w.remove('f'), false);
  w.close();
});

test('unit: a conflict copy is committed beside the file; skip leaves nothing', async () => {
  const { root } = setup();
  const w = new SafeHostWriter(root);
  fs.writeFileSync(path.join(root, 'f.txt'), 'host');
  const r = await w.writeFile('f.txt', bytes('guest'), { announced: 5, mode: 0o644, decide: () => ({ as: 'f.guest-conflict-1.txt' }) });
  assert.equal(r.rel, 'f.guest-conflict-1.txt');
  assert.equal(fs.readFileSync(path.join(root, 'f.txt'), 'utf8'), 'host');
  assert.equal(fs.readFileSync(path.join(root, 'f.guest-conflict-1.txt'), 'utf8'), 'guest');
  const s = await w.writeFile('g', bytes('x'), { announced: 1, mode: 0o644, decide: () => 'skip' });
  assert.equal(s.rel, undefined);
  assert.deepEqual(fs.readdirSync(root).sort(), ['f.guest-conflict-1.txt', 'f.txt']);
  w.close();
});
