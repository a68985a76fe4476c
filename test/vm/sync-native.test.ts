/**
 * vm: the guest's native bulk writer (guest-agent/native/syncWrite.c) survives being killed mid-copy.
 * Procedure: a VM with 2 vCPUs (the writer then runs 2 writer threads); a host tree of 1,500 files
 * (~60 MB, bench/lib/syncTree.ts) and a guest folder already holding an older copy of 200 of them
 * (so both the O_EXCL path for new files and the rename path for existing ones run); the sync is
 * added while a guest loop `kill -9`s each writer run once it has written 1 MB, three times
 * (each retry's comparison finds what the killed one applied). Then: in sync, the last copy made
 * by the native writer, every file hashes equal on both sides with the host's size and whole-ms
 * mtime, and no temporary (`*.partial`) is left. Repeated twice, into fresh folders.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SyncStatus } from '../../runtime/sync/types';
import { generateTree } from '../../bench/lib/syncTree';
import { TestHome, waitFor } from './fixture';

const VM = 'sn';

describe('vm: the native sync writer killed mid-copy', { timeout: 1_500_000 }, () => {
  let home: TestHome;
  let host: string;

  const run = async (args: string[], timeoutMs = 240_000): Promise<{ code: number | null; stdout: string; stderr: string }> => home.cli(args, { timeoutMs });
  const ok = async (args: string[]): Promise<string> => {
    const r = await run(args);
    if (r.code !== 0) throw new Error(`sandboxvm ${args.join(' ')} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  };
  const sh = (script: string) => ok(['exec', VM, '--', 'sh', '-c', script]);

  before(async () => {
    home = new TestHome();
    await home.createdVm(VM, ['--memory', '1G', '--cpus', '2']);
    await home.ok(['start', VM]);
    host = fs.mkdtempSync('/tmp/sbxt-syncnative-host-');
    generateTree(host, { files: 1500, bytes: 60_000_000, seed: 21 });
  });
  after(async () => {
    await home?.dispose();
    if (host) fs.rmSync(host, { recursive: true, force: true });
  });

  for (const round of [1, 2]) {
    test(`round ${round}: three kill -9s of the writer mid-copy; in sync, every file equal, no temporaries`, async (t) => {
      const guest = `/root/native-${round}`;
      // An older copy of some files: these take the temporary-and-rename path.
      const some = fs.readdirSync(path.join(host, 'src'), { recursive: true, encoding: 'utf8' }).filter((p) => fs.statSync(path.join(host, 'src', p)).isFile()).slice(0, 200);
      await sh(`mkdir -p ${guest} && cd ${guest} && ${some.map((p) => `mkdir -p 'src/${path.posix.dirname(p)}' && echo old > 'src/${p}'`).join(' && ')}`);
      // The killer: each writer run is killed once it has written 1 MB (its /proc io counter: cheap to
      // read, unlike counting files, so a fast run cannot finish between two looks), three times;
      // a look takes ~0.2 s under TCG (5.7 MB written at most between two, measured), and every run
      // before the fourth has more than 40 MB left to write, so each kill lands mid-copy.
      const killer = run(['exec', VM, '--', 'sh', '-c', [
        'kills=0; last=; end=$(( $(date +%s) + 300 ))',
        'while [ $kills -lt 3 ] && [ $(date +%s) -lt $end ]; do',
        // (`writ[e]`: the pattern does not match this shell's own command line)
        `  p=$(pgrep -f '^/opt/sandboxvm/agent/bin/sandboxvm-sync-writ[e]' | head -1)`,
        '  if [ -n "$p" ] && [ "$p" != "$last" ]; then',
        "    w=$(awk '/^wchar/ {print $2}' /proc/$p/io 2>/dev/null)",
        '    if [ "${w:-0}" -gt 1000000 ]; then kill -9 $p && kills=$((kills + 1)) && last=$p && echo "killed after $w bytes written"; fi',
        '  fi',
        '  sleep 0.02',
        'done; echo "kills=$kills"',
      ].join('\n')], 600_000);
      const t0 = Date.now();
      const added = run(['sync', VM, host, '--to', guest], 600_000);
      const k = await killer;
      t.diagnostic(k.stdout.trim().replace(/\n/g, '; '));
      assert.match(k.stdout, /kills=3/, `the writer was not killed three times: ${k.stdout} ${k.stderr}`);
      await added;
      let last: SyncStatus | undefined;
      await waitFor('in sync after the kills', async () => {
        const list = JSON.parse(await ok(['sync', 'list', VM, '--json'])) as SyncStatus[];
        last = list.find((s) => s.guestPath === guest);
        return last?.state === 'in-sync' ? true : undefined;
      }, 600_000);
      t.diagnostic(`in sync ${Date.now() - t0} ms after the sync was added; last copy: ${JSON.stringify(last?.phases)}`);
      assert.equal(last?.phases?.writer, 'native', 'the last catch-up went through the native writer');
      // Host: sha256, size, whole-ms mtime per file; guest: the same from find + sha256sum.
      const want = new Map<string, string>();
      for (const rel of fs.readdirSync(host, { recursive: true, encoding: 'utf8' })) {
        const st = fs.statSync(path.join(host, rel));
        if (st.isFile()) want.set(rel, `${createHash('sha256').update(fs.readFileSync(path.join(host, rel))).digest('hex')} ${st.size} ${Math.floor(st.mtimeMs)}`);
      }
      const out = await sh(`cd ${guest} && find . -type f -printf '%P\\t%s\\t%T@\\n' | sort > /tmp/meta && find . -type f -print0 | sort -z | xargs -0 -r sha256sum`);
      const meta = new Map((await sh('cat /tmp/meta')).split('\n').filter(Boolean).map((l) => {
        const [p, size, mtime] = l.split('\t');
        return [p, `${size} ${Math.floor(Number(mtime) * 1000)}`];
      }));
      const got = new Map(out.split('\n').filter(Boolean).map((l) => {
        const p = l.slice(66).replace(/^\.\//, '');
        return [p, `${l.slice(0, 64)} ${meta.get(p)}`];
      }));
      assert.deepEqual([...got.keys()].filter((p) => p.endsWith('.partial')), [], 'no temporaries left');
      assert.equal(got.size, want.size, 'as many files in the guest as on the host');
      const wrong = [...want].filter(([p, v]) => got.get(p) !== v).map(([p, v]) => `${p}: host ${v}, guest ${got.get(p)}`);
      assert.deepEqual(wrong.slice(0, 5), [], `${wrong.length} file(s) differ`);
      await ok(['sync', 'stop', VM]);
    });
  }
});
