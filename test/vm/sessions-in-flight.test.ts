/**
 * vm: sessions keep every byte through a worker crash and through a save, with output streaming.
 * Procedure: boot a VM and write a 48 MiB random file in the guest (its sha256 taken there). Then:
 * - stream it with `exec -- sh -c 'cat f; exit 4'` and kill -9 the VM's worker three times while
 *   the bytes flow (at 8, 20 and 32 MiB received): the CLI must deliver every byte once, in order
 *   (count and sha256 against the guest's) and exit 4;
 * - a slow stream (40 numbered lines at 4 a second) with a kill 5 s in and another 3 s later:
 *   every line once;
 * - stream it again and `save` the VM at 6 MiB; the cut-off exec names `sandboxvm attach`; `start`
 *   restores the VM; `attach` delivers the rest (saved again at 22 MiB, started, attached again):
 *   everything the CLIs wrote, concatenated, is the file, and the last one exits 4;
 * - sessions that ended or were closed are gone: after they end, a takeover lists none kept.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CLI, TestHome, waitFor } from './fixture';

const MiB = 1024 * 1024;
const FILE = '/root/stream.bin';
const SIZE = 48 * MiB;

interface Streamed {
  code: number;
  bytes: number;
  sha256: string;
  stderr: string;
  chunks: Buffer[];
}

describe('vm: sessions with data in flight', { timeout: 1_200_000 }, () => {
  let home: TestHome;
  let digest: string;

  before(async () => {
    home = new TestHome();
    await home.bootedVm('flow');
    await home.ok(['exec', 'flow', '--', 'sh', '-c', `head -c ${SIZE} /dev/urandom > ${FILE}`], { timeoutMs: 300_000 });
    digest = (await home.ok(['exec', 'flow', '--', 'sha256sum', FILE], { timeoutMs: 300_000 })).split(' ')[0];
    assert.match(digest, /^[0-9a-f]{64}$/);
  });
  after(() => home.dispose());

  const info = async () => JSON.parse(await home.ok(['info', 'flow', '--json']));
  const waitTakenOver = (oldWorker: number) =>
    waitFor('a new worker to take the VM over', async () => {
      const i = await info();
      return i.state === 'running' && i.runtime?.workerPid !== oldWorker && i.runtime?.agent?.connected ? i : undefined;
    }, 60_000);

  /**
   * Runs the CLI with stdout collected; `onProgress(bytes)` runs on every chunk, and the stream is
   * paused while a promise it returns is pending (so actions happen at exact byte counts, with the
   * guest's output backed up behind the pause).
   */
  function stream(args: string[], onProgress?: (bytes: number) => Promise<void> | void): Promise<Streamed> {
    return new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, ...args], { env: home.env, stdio: ['ignore', 'pipe', 'pipe'] });
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      let bytes = 0;
      let stderr = '';
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`sandboxvm ${args.join(' ')} hung after ${bytes} bytes; stderr: ${stderr}`));
      }, 400_000);
      child.stdout.on('data', (d: Buffer) => {
        hash.update(d);
        chunks.push(d);
        bytes += d.length;
        const pending = onProgress?.(bytes);
        if (pending) {
          child.stdout.pause();
          pending.then(() => child.stdout.resume(), (err) => {
            child.kill('SIGKILL');
            reject(err);
          });
        }
      });
      child.stderr.on('data', (d) => (stderr += d));
      child.on('close', (code) => {
        clearTimeout(timer);
        resolve({ code: code ?? -1, bytes, sha256: hash.digest('hex'), stderr, chunks });
      });
    });
  }

  /** Calls `action` once each time the byte count first passes one of `marks`. */
  function atMarks(marks: number[], action: (mark: number) => Promise<void>): (bytes: number) => Promise<void> | void {
    const left = [...marks];
    return (bytes) => {
      if (left.length === 0 || bytes < left[0]) return;
      return action(left.shift()!);
    };
  }

  test('kill -9 of the worker three times while an exec streams 48 MiB: every byte once, and the exit code', async () => {
    let worker = (await info()).runtime.workerPid as number;
    const kills: number[] = [];
    const r = await stream(['exec', 'flow', '--', 'sh', '-c', `cat ${FILE}; exit 4`], atMarks([8 * MiB, 20 * MiB, 32 * MiB], async (mark) => {
      process.kill(worker, 'SIGKILL');
      kills.push(mark);
      // Reading goes on at once: the client waits out the takeover by itself.
      void waitTakenOver(worker).then((i) => (worker = i.runtime.workerPid));
      await new Promise((r) => setTimeout(r, 50));
    }));
    assert.equal(kills.length, 3, `the worker was killed at ${kills.join(', ')}`);
    assert.equal(r.bytes, SIZE, `bytes received (stderr: ${r.stderr})`);
    assert.equal(r.sha256, digest, 'the bytes are the file, in order, none doubled');
    assert.equal(r.code, 4, r.stderr);
  });

  test('a slow stream with two worker crashes: every line once, in order', async () => {
    const started = Date.now();
    let killed = 0;
    const killer = (async () => {
      for (const at of [5000, 8000]) {
        await new Promise((r) => setTimeout(r, started + at - Date.now()));
        const i = await waitTakenOver(-1);
        process.kill(i.runtime.workerPid, 'SIGKILL');
        killed++;
      }
    })();
    const r = await stream(['exec', 'flow', '--', 'sh', '-c', 'i=1; while [ $i -le 40 ]; do echo line-$i; i=$((i+1)); sleep 0.25; done; exit 6']);
    await killer;
    assert.equal(killed, 2);
    const lines = Buffer.concat(r.chunks).toString('utf8');
    assert.equal(lines, Array.from({ length: 40 }, (_, k) => `line-${k + 1}\n`).join(''), r.stderr);
    assert.equal(r.code, 6, r.stderr);
  });

  test('save during a streaming exec, twice: attach after each start delivers the rest and the exit code', async () => {
    const parts: Buffer[] = [];
    const saveAt = (first: Streamed | undefined) => async () => {
      await home.ok(['save', 'flow']);
    };
    let r = await stream(['exec', 'flow', '--', 'sh', '-c', `cat ${FILE}; exit 4`], atMarks([6 * MiB], saveAt(undefined)));
    parts.push(...r.chunks);
    assert.notEqual(r.code, 4, 'the exec was cut off by the save');
    const id = /sandboxvm attach flow (\d+)/.exec(r.stderr)?.[1];
    assert.ok(id, `the cut-off exec names the attach command: ${r.stderr}`);
    await home.ok(['start', 'flow']);
    const already = parts.reduce((n, b) => n + b.length, 0);
    r = await stream(['attach', 'flow', id!], atMarks([22 * MiB - already], saveAt(r)));
    parts.push(...r.chunks);
    assert.notEqual(r.code, 4, `the attach was cut off by the second save: ${r.stderr}`);
    await home.ok(['start', 'flow']);
    r = await stream(['attach', 'flow', id!]);
    parts.push(...r.chunks);
    assert.equal(r.code, 4, r.stderr);
    const all = Buffer.concat(parts);
    assert.equal(all.length, SIZE, 'bytes received over the three clients');
    assert.equal(createHash('sha256').update(all).digest('hex'), digest, 'the bytes are the file, in order, none doubled');
  });

  test('ended and closed sessions are gone: a takeover afterwards keeps none', async () => {
    assert.equal((await home.cli(['exec', 'flow', '--', 'sh', '-c', 'exit 5'])).code, 5);
    // A session closed while its output is not being read (the guest holds it, out of credit).
    const big = spawn(process.execPath, [CLI, 'exec', 'flow', '--', 'cat', FILE], { env: home.env, stdio: ['ignore', 'pipe', 'ignore'] });
    await new Promise((r) => big.stdout.once('data', r));
    big.stdout.pause();
    await new Promise((r) => setTimeout(r, 1000));
    big.kill('SIGKILL');
    await new Promise((r) => big.once('close', r));
    await waitFor('the guest cat to end', async () => ((await home.cli(['exec', 'flow', '--', 'pgrep', '-x', 'cat'])).code === 1 ? true : undefined), 30_000);
    const before = await info();
    const log = path.join(home.vmDir('flow'), 'worker.log');
    const mark = fs.readFileSync(log, 'utf8').length;
    process.kill(before.runtime.workerPid, 'SIGKILL');
    await waitTakenOver(before.runtime.workerPid);
    const tail = fs.readFileSync(log, 'utf8').slice(mark);
    assert.doesNotMatch(tail, /the agent kept \d+ session/, tail);
  });
});
