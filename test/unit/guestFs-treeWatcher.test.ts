/**
 * unit: the guest agent's watcher (guest-agent/src/treeWatcher.ts) on this host's file system:
 * a recursive watch reports a file made in a folder created after the watch began, a change, a
 * delete; a watched file reports its own name; 1,000 files made in one folder are all reported
 * without stalling the event loop (Node 20's own recursive watch re-read the folder on every event).
 */
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { TreeWatcher } from '../../guest-agent/src/treeWatcher';

function collector() {
  const events: string[] = [];
  const waiters: { want: string; resolve: () => void }[] = [];
  return {
    events,
    push(kind: string, rel: string) {
      events.push(`${kind} ${rel}`);
      for (const w of waiters.splice(0)) (events.includes(w.want) ? w.resolve() : waiters.push(w));
    },
    seen(want: string, ms = 5000) {
      if (events.includes(want)) return Promise.resolve();
      return new Promise<void>((resolve, reject) => {
        waiters.push({ want, resolve });
        setTimeout(() => reject(new Error(`no "${want}" in ${JSON.stringify(events.slice(-20))}`)), ms);
      });
    },
  };
}

test('recursive: new folders are watched; create, change, delete are reported with relative paths', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tw-'));
  const c = collector();
  const w = new TreeWatcher(root, true, (k, r) => c.push(k, r), (m) => assert.fail(m));
  try {
    fs.mkdirSync(path.join(root, 'a/b'), { recursive: true });
    await c.seen('rename a');
    await new Promise((r) => setTimeout(r, 100));
    fs.writeFileSync(path.join(root, 'a/b/f.txt'), 'x');
    await c.seen('rename a/b/f.txt');
    fs.appendFileSync(path.join(root, 'a/b/f.txt'), 'y');
    await c.seen('change a/b/f.txt');
    fs.rmSync(path.join(root, 'a'), { recursive: true });
    await c.seen('rename a');
  } finally {
    w.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('a watched file reports its own name', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tw-'));
  const file = path.join(dir, 'one.txt');
  fs.writeFileSync(file, 'a');
  const c = collector();
  const w = new TreeWatcher(file, false, (k, r) => c.push(k, r), (m) => assert.fail(m));
  try {
    fs.appendFileSync(file, 'b');
    await c.seen('change one.txt');
  } finally {
    w.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('1,000 files made in one folder: every one reported, the event loop stays free', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'tw-'));
  fs.mkdirSync(path.join(root, 'many'));
  const c = collector();
  const w = new TreeWatcher(root, true, (k, r) => c.push(k, r), (m) => assert.fail(m));
  let worstGap = 0;
  let last = Date.now();
  const tick = setInterval(() => {
    worstGap = Math.max(worstGap, Date.now() - last);
    last = Date.now();
  }, 10);
  try {
    await new Promise((r) => setTimeout(r, 100));
    for (let i = 0; i < 1000; i++) fs.writeFileSync(path.join(root, 'many', `f${i}`), '');
    last = Date.now();
    await c.seen('rename many/f999');
    const names = new Set(c.events.filter((e) => e.startsWith('rename many/f')));
    assert.equal(names.size, 1000);
    assert.ok(worstGap < 500, `the event loop was blocked for ${worstGap} ms`);
  } finally {
    clearInterval(tick);
    w.close();
    fs.rmSync(root, { recursive: true, force: true });
  }
});
