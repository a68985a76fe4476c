/**
 * The pull engine against a scripted hostile guest (an in-memory tree that lies at will): held-back
 * paths go to the quarantine, links that lead out, devices and bad names are refused, a 1 TB claim
 * is refused without a read, a flood refuses the whole pull, conflicts keep both versions, removals
 * and case-only renames, and a guest that sends more than it listed.
 */
import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { GuestEntry } from '../../runtime/client/guestFiles';
import { TooManyEntries, pull, type PullOptions, type PullSource } from '../../runtime/sync/pull/pullEngine';

type Node = { type: 'file'; data: Buffer; mode?: number; mtimeMs?: number; claim?: number; send?: Buffer } | { type: 'dir' } | { type: 'symlink'; target: string } | { type: 'other' };

class FakeGuest implements PullSource {
  readonly tree = new Map<string, Node>();
  reads: string[] = [];
  constructor(readonly root = '/work') {}

  file(rel: string, data: string | Buffer, extra: Partial<Extract<Node, { type: 'file' }>> = {}): this {
    this.parents(rel);
    this.tree.set(rel, { type: 'file', data: Buffer.from(data), mtimeMs: 1000, ...extra });
    return this;
  }
  link(rel: string, target: string): this {
    this.parents(rel);
    this.tree.set(rel, { type: 'symlink', target });
    return this;
  }
  other(rel: string): this {
    this.parents(rel);
    this.tree.set(rel, { type: 'other' });
    return this;
  }
  private parents(rel: string) {
    const parts = rel.split('/');
    for (let i = 1; i < parts.length; i++) this.tree.set(parts.slice(0, i).join('/'), { type: 'dir' });
  }
  private rel(p: string): string {
    return p === this.root ? '' : p.slice(this.root.length + 1);
  }
  lists = 0;
  async list(p: string): Promise<GuestEntry[]> {
    this.lists++;
    const dir = this.rel(p);
    const out: GuestEntry[] = [];
    for (const [rel, n] of this.tree) {
      const parent = rel.split('/').slice(0, -1).join('/');
      if (parent !== dir) continue;
      const size = n.type === 'file' ? n.claim ?? n.data.length : 0;
      out.push({ name: rel.split('/').pop()!, type: n.type, size, mode: n.type === 'file' ? n.mode ?? 0o644 : 0o755, mtimeMs: n.type === 'file' ? n.mtimeMs ?? 1000 : 0 });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : 1));
  }
  async readlink(p: string): Promise<string> {
    const n = this.tree.get(this.rel(p));
    if (n?.type !== 'symlink') throw new Error('EINVAL');
    return n.target;
  }
  async read(p: string, onData: (c: Buffer) => void | Promise<void>, signal?: AbortSignal): Promise<number> {
    const rel = this.rel(p);
    this.reads.push(rel);
    const n = this.tree.get(rel);
    if (n?.type !== 'file') throw new Error('ENOENT');
    const data = n.send ?? n.data;
    for (let i = 0; i < data.length && !signal?.aborted; i += 4096) await onData(data.subarray(i, i + 4096));
    return data.length;
  }
}

const made: string[] = [];
after(() => made.forEach((d) => fs.rmSync(d, { recursive: true, force: true })));

function setup() {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'pull-engine-'));
  made.push(base);
  const host = path.join(base, 'host');
  const state = path.join(base, 'state');
  fs.mkdirSync(host);
  fs.mkdirSync(path.join(base, 'sentinel'));
  fs.writeFileSync(path.join(base, 'sentinel', 'passwd'), 'root:x:0:0');
  return { base, host, state, opts: (extra: Partial<PullOptions> = {}): PullOptions => ({ vm: 'dev', guestPath: '/work', hostRoot: host, stateDir: state, caseInsensitive: false, ...extra }) };
}

const read = (p: string) => fs.readFileSync(p, 'utf8');

test('unit: a hostile guest tree: safe files land, the rest is held back or refused with reasons', async () => {
  const { base, host, state, opts } = setup();
  const g = new FakeGuest()
    .file('src/main.ts', 'code')
    .file('bin/tool', '#!/bin/sh', { mode: 0o6777 })
    .link('etc', '/etc')
    .link('up', '../../..')
    .link('src/up2', '../../sentinel')
    .link('src/ok', 'main.ts')
    .other('fifo')
    .other('dev/sda')
    .file('new\nline', 'x')
    .file('.git/hooks/post-checkout', '#!/bin/sh\ntouch /tmp/pwned')
    .file('.git/config', '[core]\nfsmonitor = evil')
    .file('.git/HEAD', 'ref: refs/heads/main')
    .file('.vscode/tasks.json', '{}')
    .file('.envrc', 'evil')
    .file('huge.img', '', { claim: 2 ** 40 });
  const s = await pull(g, opts());
  assert.equal(read(path.join(host, 'src/main.ts')), 'code');
  assert.equal(fs.statSync(path.join(host, 'bin/tool')).mode & 0o7022, 0, 'no set-id bits, no group/other write');
  assert.equal(fs.readlinkSync(path.join(host, 'src/ok')), 'main.ts');
  for (const gone of ['etc', 'up', 'src/up2', 'fifo', 'dev/sda', 'new\nline', '.git/hooks/post-checkout', '.git/config', '.vscode/tasks.json', '.envrc', 'huge.img']) {
    assert.equal(fs.existsSync(path.join(host, gone)) || !!fs.lstatSync(path.join(host, gone), { throwIfNoEntry: false }), false, `${gone} is not in the folder`);
  }
  assert.equal(read(path.join(host, '.git/HEAD')), 'ref: refs/heads/main');
  const reasons = Object.fromEntries(s.refused.map((r) => [r.path, r.reason]));
  assert.match(reasons.etc, /absolute/);
  assert.match(reasons.up, /leads out/);
  assert.match(reasons['src/up2'], /leads out/);
  assert.match(reasons.fifo, /device, FIFO or socket/);
  assert.match(reasons['new?line'], /control character/);
  assert.match(reasons['huge.img'], /1 TiB, over the 1 GiB limit/);
  assert.ok(!g.reads.includes('huge.img'), 'the 1 TB file was never read');
  assert.deepEqual(s.heldBack.map((h) => h.path).sort(), ['.envrc', '.git/config', '.git/hooks/post-checkout', '.vscode/tasks.json']);
  assert.equal(read(path.join(state, 'held', '.git/hooks/post-checkout')), '#!/bin/sh\ntouch /tmp/pwned', 'kept in the quarantine');
  assert.equal(read(path.join(base, 'sentinel', 'passwd')), 'root:x:0:0');
  // --allow writes a held-back file
  const s2 = await pull(g, opts({ allow: ['.vscode/tasks.json'] }));
  assert.equal(read(path.join(host, '.vscode/tasks.json')), '{}');
  assert.ok(!s2.heldBack.some((h) => h.path === '.vscode/tasks.json'));
});

test('unit: a flood of entries refuses the whole pull before anything is written', async () => {
  const { host, opts } = setup();
  const g = new FakeGuest();
  for (let i = 0; i < 1200; i++) g.file(`f${i}`, 'x');
  await assert.rejects(pull(g, opts({ limits: { maxEntries: 1000 } })), /holds more than 1000 files, folders and links.*nothing was written.*--max-files/);
  assert.deepEqual(fs.readdirSync(host), []);
  // A source that knows early (the agent's page count) stops at once.
  let calls = 0;
  const early = { ...g, list: async (_p: string, budget: number) => { calls++; if (budget < 1200) throw new TooManyEntries(); return []; }, read: g.read.bind(g), readlink: g.readlink.bind(g) };
  await assert.rejects(pull(early, opts({ limits: { maxEntries: 1000 } })), /holds more than 1000/);
  assert.equal(calls, 1);
});

test('unit: a guest that sends more than it listed is cut off; the file is refused, nothing partial', async () => {
  const { host, opts } = setup();
  const g = new FakeGuest().file('liar', 'tiny', { send: Buffer.alloc(1 << 20) }).file('ok', 'fine');
  const s = await pull(g, opts());
  assert.match(s.refused.find((r) => r.path === 'liar')!.reason, /more than the 4 bytes/);
  assert.deepEqual(fs.readdirSync(host).sort(), ['ok']);
});

test('unit: conflicts keep both versions; unchanged files are not read again; removals follow the guest only where the host did not change', async () => {
  const { host, opts } = setup();
  const g = new FakeGuest().file('a.txt', 'a1').file('b.txt', 'b1').file('c.txt', 'c1').file('d.txt', 'd1').file('e.txt', 'e1');
  fs.writeFileSync(path.join(host, 'e.txt'), 'host had this first');
  let s = await pull(g, opts({ now: () => new Date('2026-01-30T14:25:01Z') }));
  assert.equal(s.written, 4);
  assert.deepEqual(s.conflicts.map((c) => c.path), ['e.txt']);
  assert.equal(read(path.join(host, 'e.txt')), 'host had this first');
  assert.equal(read(path.join(host, 'e.guest-conflict-20260130-142501.txt')), 'e1');

  g.reads = [];
  s = await pull(g, opts());
  assert.equal(s.written, 0);
  assert.deepEqual(g.reads, [], 'nothing read when nothing changed');
  assert.equal(s.conflicts.length, 0, 'a conflict is reported once, not at every pull');

  g.file('a.txt', 'a2', { mtimeMs: 2000 }); // guest only
  g.file('b.txt', 'b2', { mtimeMs: 2000 }); // both
  fs.writeFileSync(path.join(host, 'b.txt'), 'b-host');
  fs.writeFileSync(path.join(host, 'c.txt'), 'c-host'); // host only
  g.tree.delete('d.txt'); // removed in the guest, unchanged on the host
  s = await pull(g, opts({ now: () => new Date('2026-01-30T15:00:00Z') }));
  assert.equal(read(path.join(host, 'a.txt')), 'a2');
  assert.equal(read(path.join(host, 'b.txt')), 'b-host');
  assert.equal(read(path.join(host, 'b.guest-conflict-20260130-150000.txt')), 'b2');
  assert.equal(read(path.join(host, 'c.txt')), 'c-host');
  assert.equal(fs.existsSync(path.join(host, 'd.txt')), false);
  assert.equal(s.removed, 1);
  assert.deepEqual(s.conflicts.map((c) => c.path), ['b.txt']);

  // removed in the guest but changed on the host: kept, and said so
  g.tree.delete('c.txt');
  s = await pull(g, opts());
  assert.equal(read(path.join(host, 'c.txt')), 'c-host');
  assert.match(s.conflicts.find((c) => c.path === 'c.txt')!.reason, /removed in the guest, changed on the host/);
});

test('unit: renames and case-only renames from the guest; names equal but for case are refused on a case-insensitive host', async () => {
  const { host, opts } = setup();
  const g = new FakeGuest().file('readme.md', 'hello').file('dir/x', 'x');
  await pull(g, opts());
  g.tree.delete('readme.md');
  g.file('README.md', 'hello');
  g.tree.delete('dir/x');
  g.tree.delete('dir');
  g.file('moved/x', 'x');
  const s = await pull(g, opts({ caseInsensitive: true }));
  assert.deepEqual(fs.readdirSync(host).sort(), ['README.md', 'moved']);
  assert.equal(s.removed, 2);
  assert.equal(s.conflicts.length, 0);

  const g2 = new FakeGuest().file('Makefile', 'a').file('makefile', 'b');
  const { opts: opts2, host: host2 } = setup();
  const s2 = await pull(g2, opts2({ caseInsensitive: true }));
  assert.match(s2.refused[0].reason, /differs from Makefile only in case/);
  assert.deepEqual(fs.readdirSync(host2), ['Makefile']);
});

test('unit: a guest that holds a read open without sending is given up on; the rest of the pull goes on', async () => {
  const { host, opts } = setup();
  const g = new FakeGuest().file('stuck', 'never comes').file('fine', 'ok');
  const read = g.read.bind(g);
  g.read = async (p, onData, signal) => {
    if (!p.endsWith('stuck')) return read(p, onData, signal);
    await new Promise<void>((resolve) => signal?.addEventListener('abort', () => resolve()));
    throw new Error('closed by the host');
  };
  const t0 = Date.now();
  const s = await pull(g, opts({ idleTimeoutMs: 300 }));
  assert.ok(Date.now() - t0 < 5000);
  assert.match(s.refused.find((r) => r.path === 'stuck')!.reason, /given up on: the guest sent nothing of it for 0.3 s/);
  assert.deepEqual(fs.readdirSync(host), ['fine']);
});
