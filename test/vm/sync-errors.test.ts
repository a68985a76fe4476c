/**
 * vm: what the guest cannot apply turns a sync's status into an error, and the sync recovers by
 * itself once the cause is gone (runtime/sync/engine.ts).
 * Procedure: sync a small tree; in the guest replace the synced folder by a file and edit on the
 * host: `sync list --json` reports an error naming the folder within seconds, stays so across
 * retries, and the file in the guest is left alone; remove it in the guest and edit again: in sync,
 * every file hashes equal. Then a guest file a change cannot replace (chattr +i, or a read-only
 * bind mount where chattr is missing): an error naming that path; undo it and the periodic retry
 * brings the sync back without another edit.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SyncStatus } from '../../runtime/sync/types';
import { generateTree } from '../../bench/lib/syncTree';
import { TestHome, waitFor } from './fixture';

const GUEST = '/root/workspace';

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

describe('vm: sync errors are shown and recovered from', { timeout: 900_000 }, () => {
  let home: TestHome;
  let host: string;

  const run = async (args: string[]): Promise<string> => {
    const r = await home.cli(args, { timeoutMs: 240_000 });
    if (r.code !== 0) throw new Error(`sandboxvm ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  const sh = (script: string) => run(['exec', 'se', '--', 'sh', '-c', script]);
  const status = async (): Promise<SyncStatus> => {
    const list = JSON.parse(await run(['sync', 'list', 'se', '--json'])) as SyncStatus[];
    assert.equal(list.length, 1);
    return list[0];
  };
  const guestSums = async (): Promise<Map<string, string>> => {
    const out = await sh(`cd ${GUEST} && find . -type f ! -name '*.partial' -print0 | sort -z | xargs -0 -r sha256sum 2>/dev/null; true`);
    return new Map(out.split('\n').filter(Boolean).map((l) => [l.slice(66).replace(/^\.\//, ''), l.slice(0, 64)]));
  };
  const same = (a: Map<string, string>, b: Map<string, string>) => a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
  /** Waits for an error status whose message matches `re`; returns it and how long it took. */
  const errorShown = async (re: RegExp, since: number): Promise<[SyncStatus, number]> => {
    let last: SyncStatus | undefined;
    const s = await waitFor('an error status', async () => {
      last = await status();
      return last.state === 'error' && re.test(last.message) ? last : undefined;
    }, 60_000).catch((err) => {
      throw new Error(`${(err as Error).message}; last: ${JSON.stringify(last && { state: last.state, message: last.message })}`);
    });
    return [s, Date.now() - since];
  };
  /** Waits until in sync with every file equal; returns how long it took. */
  const recovered = async (since: number): Promise<number> => {
    let last: SyncStatus | undefined;
    await waitFor('in sync, every file equal', async () => {
      last = await status();
      return last.state === 'in-sync' && same(hostSums(host), await guestSums()) ? true : undefined;
    }, 120_000).catch((err) => {
      throw new Error(`${(err as Error).message}; last: ${JSON.stringify(last && { state: last.state, message: last.message })}`);
    });
    return Date.now() - since;
  };

  before(async () => {
    home = new TestHome();
    await home.createdVm('se', ['--memory', '1G']);
    await home.ok(['start', 'se']);
    host = fs.mkdtempSync('/tmp/sbxt-syncerr-host-');
    generateTree(host, { files: 60, bytes: 300_000, seed: 11 });
    fs.writeFileSync(path.join(host, 'top.txt'), 'top 0\n');
    await run(['sync', 'se', host, '--to', GUEST]);
    assert.equal((await status()).state, 'in-sync');
  });
  after(async () => {
    await home?.dispose();
    if (host) fs.rmSync(host, { recursive: true, force: true });
  });

  test('the guest folder replaced by a file: an error naming it, kept across retries; removed in the guest: in sync again', async (t) => {
    await sh(`rm -rf ${GUEST} && echo in-the-way > ${GUEST}`);
    const t0 = Date.now();
    fs.writeFileSync(path.join(host, 'top.txt'), 'top 1\n');
    const [shown, ms] = await errorShown(/the guest folder \/root\/workspace is no longer a folder.*remove/, t0);
    t.diagnostic(`error shown after ${ms} ms: ${shown.message}`);
    // Past a few retries (the longest pause is 5 s) it stays an error, and the guest's file is left alone.
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      const s = await status();
      assert.equal(s.state, 'error', `still an error while the file is in the way: ${s.message}`);
      await new Promise((r) => setTimeout(r, 500));
    }
    assert.equal((await sh(`cat ${GUEST}`)).trim(), 'in-the-way');
    await sh(`rm ${GUEST}`);
    const t1 = Date.now();
    fs.writeFileSync(path.join(host, 'top.txt'), 'top 2\n');
    t.diagnostic(`in sync again ${await recovered(t1)} ms after the file was removed and the host edited`);
  });

  test('a guest file a change cannot replace: an error naming it; once replaceable, the retry brings it in sync without another edit', async (t) => {
    const victim = [...hostSums(host).keys()].find((k) => k.includes('/'))!;
    const dir = path.posix.dirname(`${GUEST}/${victim}`);
    const chattr = (await sh('command -v chattr || true')).trim() !== '';
    const lock = chattr ? `chattr +i ${GUEST}/${victim}` : `mount --bind ${dir} ${dir} && mount -o remount,bind,ro ${dir}`;
    const unlock = chattr ? `chattr -i ${GUEST}/${victim}` : `umount ${dir}`;
    t.diagnostic(`locking with ${lock}`);
    await sh(lock);
    try {
      const t0 = Date.now();
      fs.appendFileSync(path.join(host, victim), 'changed on the host\n');
      const [shown, ms] = await errorShown(new RegExp(`cannot write ${GUEST}/${victim.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} in the guest: (operation not permitted|read-only file system)`), t0);
      t.diagnostic(`error shown after ${ms} ms: ${shown.message}`);
    } finally {
      await sh(unlock);
    }
    t.diagnostic(`in sync again ${await recovered(Date.now())} ms after the guest file was made replaceable (no host edit)`);
  });
});
