/**
 * vm: workspace sync, host to guest (runtime/sync, service/syncManager.ts, `sandboxvm sync`).
 * Procedure: boot a VM; bad input first (a stopped VM, a missing folder, a guest path that is a
 * file: exit 1, a sentence, no sync made); sync a generated tree and compare the sha256 of every
 * file on both sides; stop and sync again into the same folder: nothing is sent (all equal);
 * then host changes (create, modify, delete, rename, case-only rename, a burst of 500 files) are
 * followed in the guest; ignore rules (--ignore, .gitignore) keep files out and leave the guest's
 * own files in ignored folders alone; changes made while the VM is saved arrive after the
 * restore, and across a pause and a kill -9 of the guest agent; three `kill -9`s of the worker with changes in flight, and a restart of the service,
 * end with both sides equal, caught up without a full copy.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import { SyncClient } from '../../runtime/client/syncClient';
import type { SyncStatus } from '../../runtime/sync/types';
import { generateTree } from '../../bench/lib/syncTree';
import { TestHome, waitFor } from './fixture';

const GUEST = '/root/work';

function hostSums(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (dir: string) => {
    for (const e of fs.readdirSync(path.join(root, dir), { withFileTypes: true })) {
      const rel = dir ? `${dir}/${e.name}` : e.name;
      if (e.isDirectory()) walk(rel);
      else if (e.isFile()) out.set(rel, createHash('sha256').update(fs.readFileSync(path.join(root, rel))).digest('hex'));
    }
  };
  walk('');
  return out;
}

describe('vm: workspace sync', { timeout: 1_800_000 }, () => {
  let home: TestHome;
  let client: ServiceClient;
  let syncs: SyncClient;
  let host: string;
  const statuses: SyncStatus[] = [];

  /** `home.ok`, riding out an agent that misses heartbeats (an overloaded machine) or is being restarted. */
  const run = async (args: string[]): Promise<string> => {
    for (let attempt = 0; ; attempt++) {
      const r = await home.cli(args, { timeoutMs: 240_000 });
      if (r.code === 0) return r.stdout;
      if (attempt >= 20 || !/agent is not responding|restarted and has not been greeted/.test(r.stderr)) throw new Error(`sandboxvm ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
      await new Promise((resolve) => setTimeout(resolve, 2000));
    }
  };
  const guestSums = async (dir = GUEST): Promise<Map<string, string>> => {
    // A file being written is a temporary that may be renamed while sha256sum looks: not counted.
    const out = await run(['exec', 'sy', '--', 'sh', '-c', `cd ${dir} && find . -type f ! -name '*.partial' -print0 | sort -z | xargs -0 -r sha256sum 2>/dev/null; true`]);
    return new Map(out.split('\n').filter(Boolean).map((l) => [l.slice(66).replace(/^\.\//, ''), l.slice(0, 64)]));
  };
  const same = (a: Map<string, string>, b: Map<string, string>) => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
  /** Waits until the guest holds exactly the host's files (every hash equal). */
  const converged = async (what: string, expected?: () => Map<string, string>, timeoutMs = 300_000) => {
    let last: Map<string, string> | undefined;
    await waitFor(what, async () => {
      const want = expected ? expected() : hostSums(host);
      last = await guestSums();
      return same(want, last) ? true : undefined;
    }, timeoutMs).catch((err) => {
      const want = expected ? expected() : hostSums(host);
      const missing = [...want.keys()].filter((k) => last?.get(k) !== want.get(k)).slice(0, 5);
      const extra = [...(last?.keys() ?? [])].filter((k) => !want.has(k)).slice(0, 5);
      throw new Error(`${(err as Error).message}: differing ${missing.join(', ')}; extra in the guest ${extra.join(', ')}`);
    });
  };
  const workerPid = () => JSON.parse(fs.readFileSync(path.join(home.vmDir('sy'), 'worker.json'), 'utf8')).workerPid as number;

  before(async () => {
    home = new TestHome();
    await home.createdVm('sy', ['--memory', '1G']);
    await home.ok(['start', 'sy']);
    await home.createdVm('off');
    host = fs.mkdtempSync('/tmp/sbxt-sync-host-');
    generateTree(host, { files: 800, bytes: 8_000_000, seed: 7 });
    client = await ServiceClient.connect({ home: home.dir, autoStart: false });
    syncs = new SyncClient(client);
    await syncs.onStatus((s) => statuses.push(s));
  });
  after(async () => {
    client?.dispose();
    await home?.dispose();
    if (host) fs.rmSync(host, { recursive: true, force: true });
  });

  test('bad input: a sentence, exit 1, no sync made', async () => {
    const stopped = await home.cli(['sync', 'off', host, '--to', GUEST]);
    assert.equal(stopped.code, 1);
    assert.match(stopped.stderr, /cannot sync a folder to off: it is stopped/);
    const missing = await home.cli(['sync', 'sy', '/nonexistent/folder', '--to', GUEST]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /no such folder \/nonexistent\/folder on the host/);
    await run(['exec', 'sy', '--', 'sh', '-c', 'echo x > /root/afile']);
    const file = await home.cli(['sync', 'sy', host, '--to', '/root/afile']);
    assert.equal(file.code, 1);
    assert.match(file.stderr, /sy:\/root\/afile is not a directory/);
    const relative = await home.cli(['sync', 'sy', host, '--to', 'rel/path']);
    assert.equal(relative.code, 1);
    assert.match(relative.stderr, /absolute guest path/);
    assert.equal((await home.ok(['sync', 'list', '--json'])).trim(), '[]');
    assert.equal(fs.existsSync(path.join(home.vmDir('sy'), 'syncs.json')), false);
  });

  test('first copy: every file hashes equal in the guest; a second start sends nothing', async () => {
    const out = await run(['sync', 'sy', host, '--to', GUEST]);
    assert.match(out, /matches .* \(800 file\(s\)/);
    assert.ok(same(hostSums(host), await guestSums()), 'guest tree equals host tree');
    await home.ok(['sync', 'stop', 'sy', host]);
    assert.equal((await syncs.list('sy')).length, 0);
    const again = await run(['sync', 'sy', host, '--to', GUEST]);
    assert.match(again, /\(0 file\(s\), 0 B sent .* 800 already there\)/);
    const list = JSON.parse(await home.ok(['sync', 'list', 'sy', '--json'])) as SyncStatus[];
    assert.equal(list.length, 1);
    assert.equal(list[0].state, 'in-sync');
  });

  test('host changes are followed: create, modify, delete, rename, case-only rename, a burst of 500', async () => {
    const src = path.join(host, 'src');
    const someFile = hostSums(host).keys().next().value as string;
    fs.writeFileSync(path.join(host, 'new.txt'), 'new file\n');
    fs.mkdirSync(path.join(host, 'newdir/deeper'), { recursive: true });
    fs.writeFileSync(path.join(host, 'newdir/deeper/x.ts'), 'export const x = 1;\n');
    fs.appendFileSync(path.join(host, someFile), 'modified\n');
    await converged('create and modify');
    fs.rmSync(path.join(host, 'new.txt'));
    fs.renameSync(path.join(host, 'newdir'), path.join(host, 'moved'));
    fs.writeFileSync(path.join(host, 'Readme.md'), 'case\n');
    await converged('delete and rename');
    fs.renameSync(path.join(host, 'Readme.md'), path.join(host, 'README.md'));
    await converged('case-only rename');
    const guestNames = (await run(['exec', 'sy', '--', 'ls', GUEST])).split('\n');
    assert.ok(guestNames.includes('README.md') && !guestNames.includes('Readme.md'), guestNames.join(' '));
    fs.mkdirSync(path.join(src, 'burst'));
    for (let i = 0; i < 500; i++) fs.writeFileSync(path.join(src, 'burst', `b${i}.txt`), `burst ${i}\n`.repeat(i % 7 + 1));
    await converged('a burst of 500 files');
    fs.rmSync(path.join(src, 'burst'), { recursive: true });
    await converged('the burst removed');
  });

  test('ignore rules: --ignore and .gitignore keep files out; the guest keeps its own files in ignored folders', async () => {
    await home.ok(['sync', 'stop', 'sy']);
    fs.writeFileSync(path.join(host, '.gitignore'), 'build/\n*.tmp\n');
    fs.mkdirSync(path.join(host, 'build'), { recursive: true });
    fs.writeFileSync(path.join(host, 'build/out.bin'), 'built on the host\n');
    fs.writeFileSync(path.join(host, 'scratch.tmp'), 'tmp\n');
    fs.writeFileSync(path.join(host, 'debug.log'), 'log\n');
    await run(['exec', 'sy', '--', 'sh', '-c', `mkdir -p ${GUEST}/build && echo guest > ${GUEST}/build/guest-made`]);
    await run(['sync', 'sy', host, '--to', GUEST, '--ignore', '*.log']);
    const expected = () => {
      const m = hostSums(host);
      for (const k of [...m.keys()]) if (k.startsWith('build/') || k.endsWith('.tmp') || k.endsWith('.log')) m.delete(k);
      m.set('build/guest-made', createHash('sha256').update('guest\n').digest('hex'));
      return m;
    };
    await converged('ignored files kept out', expected);
    fs.writeFileSync(path.join(host, 'later.log'), 'later\n');
    fs.writeFileSync(path.join(host, 'later.txt'), 'later\n');
    await converged('a new ignored file stays out', expected);
  });

  test('changes made while the VM is saved arrive after the restore, without a full copy', async () => {
    await home.ok(['save', 'sy']);
    fs.writeFileSync(path.join(host, 'while-saved.txt'), 'written while saved\n');
    fs.rmSync(path.join(host, 'later.txt'));
    await home.ok(['start', 'sy']);
    statuses.length = 0;
    await converged('caught up after restore', () => {
      const m = hostSums(host);
      for (const k of [...m.keys()]) if (k.startsWith('build/') || k.endsWith('.tmp') || k.endsWith('.log')) m.delete(k);
      m.set('build/guest-made', createHash('sha256').update('guest\n').digest('hex'));
      return m;
    });
    const caughtUp = statuses.filter((s) => s.state === 'in-sync' && s.lastSyncAt !== undefined);
    assert.ok(caughtUp.length > 0, 'an in-sync status after the restore');
    assert.ok(caughtUp.every((s) => s.files <= 2), `only the changes were sent: ${caughtUp.map((s) => s.files).join(',')}`);
  });

  test('pause and resume, and a kill -9 of the guest agent mid-sync: changes arrive, the sync carries on', async () => {
    const expected = () => {
      const m = hostSums(host);
      for (const k of [...m.keys()]) if (k.startsWith('build/') || k.endsWith('.tmp') || k.endsWith('.log')) m.delete(k);
      m.set('build/guest-made', createHash('sha256').update('guest\n').digest('hex'));
      return m;
    };
    await home.ok(['pause', 'sy']);
    fs.writeFileSync(path.join(host, 'while-paused.txt'), 'written while paused\n');
    await new Promise((r) => setTimeout(r, 1000));
    await home.ok(['resume', 'sy']);
    await converged('caught up after a pause', expected);
    const agentPid = Number((await run(['exec', 'sy', '--', 'pgrep', '-f', '^/opt/sandboxvm/bin/node .*/agent\\.js$'])).trim());
    assert.ok(agentPid > 1);
    for (let i = 0; i < 100; i++) fs.writeFileSync(path.join(host, 'src', `agent-restart-${i}.txt`), `${i}\n`.repeat(500));
    await run(['exec', 'sy', '--', 'sh', '-c', `kill -9 ${agentPid}`]);
    fs.writeFileSync(path.join(host, 'after-agent-kill.txt'), 'x\n');
    await converged('caught up after the agent was killed', expected);
  });

  test('three kill -9s of the worker with changes in flight, and a service restart: both sides end equal', async () => {
    await home.ok(['sync', 'stop', 'sy']);
    fs.rmSync(path.join(host, '.gitignore'));
    fs.rmSync(path.join(host, 'build'), { recursive: true });
    await run(['exec', 'sy', '--', 'rm', '-rf', `${GUEST}/build`]);
    await run(['sync', 'sy', host, '--to', GUEST]);
    for (let round = 0; round < 3; round++) {
      let writing = true;
      let n = 0;
      const writer = (async () => {
        while (writing) {
          fs.writeFileSync(path.join(host, 'src', `inflight-${n % 40}.txt`), `round ${round} write ${n}\n`.repeat(200));
          n++;
          await new Promise((r) => setTimeout(r, 15));
        }
      })();
      await new Promise((r) => setTimeout(r, 700));
      const pid = workerPid();
      process.kill(pid, 'SIGKILL');
      await waitFor('a new worker', () => {
        try {
          return workerPid() !== pid ? true : undefined;
        } catch {
          return undefined;
        }
      }, 120_000);
      await new Promise((r) => setTimeout(r, 500));
      writing = false;
      await writer;
      assert.ok(n > 10, `changes were in flight (${n} writes)`);
      await converged(`caught up after kill ${round + 1}`);
    }
    await home.ok(['service', 'stop']);
    fs.writeFileSync(path.join(host, 'while-no-service.txt'), 'x\n');
    client.dispose();
    await home.ok(['list']); // starts the service again
    client = await ServiceClient.connect({ home: home.dir, autoStart: false });
    syncs = new SyncClient(client);
    const after = await syncs.list('sy');
    assert.equal(after.length, 1, 'the sync is back with the new service');
    await converged('caught up after a service restart');
    const settled = await waitFor('in sync', async () => ((await syncs.list('sy'))[0].state === 'in-sync' ? (await syncs.list('sy'))[0] : undefined), 120_000);
    assert.ok(settled.files <= 45, `caught up without a full copy (${settled.files} files sent)`);
  });
});
