/**
 * vm: `sandboxvm pull` against a real guest acting hostile.
 * Procedure: boot one VM. Beside each host folder a pull writes into lies a sentinel tree, hashed
 * before and after every pull (paths, modes, contents, link targets). As root in the guest make:
 * links out of the folder (`ln -s /etc x`, `ln -s ../../.. up`), a FIFO, a device node (mknod), a
 * setuid file, a name with a newline, `.git/hooks/post-checkout`, `.vscode/tasks.json`, a 1 TB
 * sparse file; pull; check what landed, what was held back or refused and why, that the sentinel
 * is unchanged and the host's free space did not drop. Then 100,000 small files (refused as a
 * whole, nothing written); a directory swapped for a link to /etc in a loop while pulling three times
 * (nothing lands outside, no link in the folder leads out); conflicts on a second pull; --allow;
 * and a 5,000-file tree (~100 MB) pulled whole and compared by hash, with its throughput printed.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TestHome } from './fixture';

const VM = 'p1';

/** Every path, type, mode and content hash under `dir` (links not followed). */
function treeHash(dir: string): string {
  const h = createHash('sha256');
  const visit = (rel: string) => {
    for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
      const r = path.join(rel, name);
      const st = fs.lstatSync(path.join(dir, r));
      h.update(`${r}\0${st.mode}\0${st.size}\0`);
      if (st.isFile()) h.update(fs.readFileSync(path.join(dir, r)));
      if (st.isSymbolicLink()) h.update(fs.readlinkSync(path.join(dir, r)));
      if (st.isDirectory()) visit(r);
    }
  };
  visit('');
  return h.digest('hex');
}

/** Every link under `dir` whose target, resolved, is outside `dir`. */
function linksLeadingOut(dir: string): string[] {
  const out: string[] = [];
  const real = fs.realpathSync(dir);
  const visit = (p: string) => {
    for (const name of fs.readdirSync(p)) {
      const q = path.join(p, name);
      const st = fs.lstatSync(q);
      if (st.isSymbolicLink()) {
        const target = path.resolve(p, fs.readlinkSync(q));
        let resolved = target;
        try {
          resolved = fs.realpathSync(q);
        } catch {
          // dangling: judged by its text
        }
        for (const r of [target, resolved]) if (r !== real && !r.startsWith(real + path.sep)) out.push(path.relative(dir, q));
      } else if (st.isDirectory()) visit(q);
    }
  };
  visit(dir);
  return out;
}

describe('vm: pull from a hostile guest', { timeout: 3_600_000 }, () => {
  let home: TestHome;
  let base: string;
  let sentinelHash: string;
  before(async () => {
    home = new TestHome();
    await home.bootedVm(VM);
    base = fs.mkdtempSync('/tmp/sbx-pull-');
    // The sentinel: a tree beside the folders pulls write into, with names a hostile guest aims at.
    fs.mkdirSync(path.join(base, 'sentinel/etc'), { recursive: true });
    fs.writeFileSync(path.join(base, 'sentinel/etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
    fs.writeFileSync(path.join(base, 'sentinel/secret'), 'keep me');
    fs.symlinkSync('etc/passwd', path.join(base, 'sentinel/link'));
    sentinelHash = treeHash(base);
  });
  after(async () => {
    await sh('kill $(cat /tmp/swapper.pid) 2>/dev/null; true').catch(() => undefined);
    fs.rmSync(base, { recursive: true, force: true });
    await home.dispose();
  });

  const sh = (script: string, timeoutMs = 600_000) => home.ok(['exec', VM, '--timeout', '0', '--', 'sh', '-c', script], { timeoutMs });
  const pullJson = async (guest: string, dest: string, extra: string[] = []) => {
    const r = await home.cli(['pull', VM, guest, dest, '--json', ...extra], { timeoutMs: 1_200_000 });
    const summary = r.stdout.trim() ? JSON.parse(r.stdout) : undefined;
    return { ...r, summary };
  };
  /** The sentinel and the base folder around the destinations: only `dest*` folders may change. */
  const sentinelUnchanged = () => {
    const h = createHash('sha256');
    const now = treeHash(path.join(base, 'sentinel'));
    h.update(now);
    assert.equal(treeHash(path.join(base, 'sentinel')), now);
    assert.deepEqual(fs.readdirSync(base).filter((n) => !n.startsWith('dest')).sort(), ['sentinel']);
    assert.equal(fs.readFileSync(path.join(base, 'sentinel/etc/passwd'), 'utf8'), 'root:x:0:0:root:/root:/bin/sh\n');
  };

  test('links out, a FIFO, a device, setuid, a newline in a name, hooks, tasks.json, a 1 TB sparse file', async () => {
    await sh(`set -e; rm -rf /root/h; mkdir -p /root/h/src /root/h/.git/hooks /root/h/.vscode; cd /root/h
      echo code > src/main.ts
      ln -s /etc x; ln -s ../../.. up; ln -s /root/h/src abs; ln -s src/main.ts ok
      mkfifo fifo; mknod dev c 1 3
      printf suid > suid; chmod 6755 suid
      printf nl > "$(printf 'new\\nline')"
      printf '#!/bin/sh\\ntouch /tmp/pwned\\n' > .git/hooks/post-checkout; chmod +x .git/hooks/post-checkout
      echo '{"tasks":[{"label":"x","command":"touch /tmp/pwned","runOptions":{"runOn":"folderOpen"}}]}' > .vscode/tasks.json
      echo 'ref: refs/heads/main' > .git/HEAD
      truncate -s 1T big.img; ls -la`);
    const dest = path.join(base, 'dest-hostile');
    const freeBefore = fs.statfsSync(base).bavail * fs.statfsSync(base).bsize;
    const r = await pullJson('/root/h', dest);
    assert.equal(r.code, 3, `exit 3 when something is held back or refused: ${r.stderr}`);
    const s = r.summary;
    sentinelUnchanged();
    assert.equal(fs.readFileSync(path.join(dest, 'src/main.ts'), 'utf8'), 'code\n');
    assert.equal(fs.readFileSync(path.join(dest, '.git/HEAD'), 'utf8'), 'ref: refs/heads/main\n');
    assert.equal(fs.readlinkSync(path.join(dest, 'ok')), 'src/main.ts');
    assert.equal(fs.statSync(path.join(dest, 'suid')).mode & 0o7022, 0, 'no setuid/setgid, no group/other write');
    for (const gone of ['x', 'up', 'abs', 'fifo', 'dev', 'new\nline', 'big.img', '.git/hooks/post-checkout', '.vscode/tasks.json']) {
      assert.equal(fs.lstatSync(path.join(dest, gone), { throwIfNoEntry: false }), undefined, `${JSON.stringify(gone)} is not in the folder`);
    }
    assert.deepEqual(linksLeadingOut(dest), []);
    const reason = (p: string) => s.refused.find((x: { path: string }) => x.path === p)?.reason ?? '';
    assert.match(reason('x'), /absolute/);
    assert.match(reason('abs'), /absolute/);
    assert.match(reason('up'), /leads out/);
    assert.match(reason('fifo'), /device, FIFO or socket/);
    assert.match(reason('dev'), /device, FIFO or socket/);
    assert.match(reason('new?line'), /control character/);
    assert.match(reason('big.img'), /is 1 TiB, over the 1 GiB limit for one file/);
    assert.deepEqual(s.heldBack.map((h: { path: string }) => h.path).sort(), ['.git/hooks/post-checkout', '.vscode/tasks.json']);
    const quarantined = s.heldBack.find((h: { path: string }) => h.path === '.git/hooks/post-checkout').quarantined;
    assert.ok(quarantined.startsWith(home.vmDir(VM)), `the quarantine is in the VM's directory: ${quarantined}`);
    assert.equal(fs.readFileSync(quarantined, 'utf8'), '#!/bin/sh\ntouch /tmp/pwned\n');
    const freeAfter = fs.statfsSync(base).bavail * fs.statfsSync(base).bsize;
    // Other writers share the disk (this guest's own overlay grows too): a pull of the 1 TiB file would take far more.
    assert.ok(freeBefore - freeAfter < 512 * 2 ** 20, `the host's free space fell by ${freeBefore - freeAfter} bytes`);
    // The human summary says the same in sentences.
    const text = await home.cli(['pull', VM, '/root/h', dest]);
    assert.equal(text.code, 3);
    assert.match(text.stdout, /Held back 2 \(they could run programs on this host; kept in .*; pull again with --allow <path> to write one\)/);
    assert.match(text.stdout, /big\.img: is 1 TiB, over the 1 GiB limit for one file/);
    // The user allows one: it is written; the hook stays held back.
    const allowed = await pullJson('/root/h', dest, ['--allow', '.vscode/tasks.json']);
    assert.match(fs.readFileSync(path.join(dest, '.vscode/tasks.json'), 'utf8'), /folderOpen/);
    assert.deepEqual(allowed.summary.heldBack.map((h: { path: string }) => h.path), ['.git/hooks/post-checkout']);
    // Time to refuse the 1 TB file alone.
    await sh('rm -rf /root/big; mkdir /root/big; truncate -s 1T /root/big/big.img');
    const t0 = Date.now();
    const big = await pullJson('/root/big', path.join(base, 'dest-big'));
    const wall = Date.now() - t0;
    assert.equal(big.code, 3);
    assert.match(big.summary.refused[0].reason, /1 TiB/);
    assert.deepEqual(fs.readdirSync(path.join(base, 'dest-big')), []);
    console.log(`# refusing the 1 TB file: ${(big.summary.seconds * 1000).toFixed(0)} ms in the pull, ${wall} ms for the whole CLI run`);
    sentinelUnchanged();
  });

  test('100,000 small files are refused as a whole; nothing is written, the disk is not filled', async () => {
    await sh(`rm -rf /root/flood; mkdir /root/flood; cd /root/flood; node -e 'const fs=require("fs");for(let i=0;i<100000;i++)fs.writeFileSync("f"+i,"x")'; ls | wc -l`);
    const dest = path.join(base, 'dest-flood');
    const t0 = Date.now();
    const r = await home.cli(['pull', VM, '/root/flood', dest], { timeoutMs: 1_200_000 });
    console.log(`# refusing 100,000 files: ${Date.now() - t0} ms for the whole CLI run`);
    assert.equal(r.code, 1, r.stdout + r.stderr);
    assert.match(r.stderr, /holds more than 50000 files, folders and links, the most one pull takes; nothing was written \(pull a subfolder, or raise the limit with --max-files\)/);
    assert.deepEqual(fs.readdirSync(dest), []);
    sentinelUnchanged();
  });

  test('a folder swapped for a link to /etc in a loop during three pulls: nothing lands outside', async () => {
    await sh(`rm -rf /root/race; mkdir -p /root/race/d; cd /root/race
      node -e 'const fs=require("fs");for(let i=0;i<300;i++)fs.writeFileSync("d/f"+i,"data"+i);for(let i=0;i<50;i++)fs.writeFileSync("top"+i,"t")'
      setsid sh -c 'cd /root/race; while :; do mv d d.real; ln -s /etc d; rm -f d; mv d.real d; done' >/dev/null 2>&1 < /dev/null &
      echo $! > /tmp/swapper.pid`);
    try {
      for (let i = 0; i < 3; i++) {
        const dest = path.join(base, `dest-race${i}`);
        const r = await pullJson('/root/race', dest);
        assert.ok(r.code === 0 || r.code === 3 || r.code === 1, r.stderr);
        sentinelUnchanged();
        assert.deepEqual(linksLeadingOut(dest), [], 'no link in the folder leads out');
        console.log(`# race pull ${i}: exit ${r.code}, ${r.summary ? `${r.summary.written} written, ${r.summary.refused.length} refused` : r.stderr.trim()}`);
      }
    } finally {
      await sh('kill $(cat /tmp/swapper.pid); sleep 0.2; cd /root/race; [ -d d.real ] && { rm -f d; mv d.real d; }; true');
    }
  });

  test('a second pull: unchanged files are not rewritten; both sides changed keeps both versions', async () => {
    await sh('rm -rf /root/c; mkdir -p /root/c; cd /root/c; echo one > a.txt; echo two > b.txt; echo three > c.txt');
    const dest = path.join(base, 'dest-conflict');
    assert.equal((await pullJson('/root/c', dest)).code, 0);
    const again = await pullJson('/root/c', dest);
    assert.equal(again.code, 0);
    assert.equal(again.summary.unchanged, 3);
    assert.equal(again.summary.written, 0);
    fs.writeFileSync(path.join(dest, 'a.txt'), 'host edit\n');
    await sh('cd /root/c; echo guest edit > a.txt; echo guest only > b.txt; rm c.txt');
    const r = await pullJson('/root/c', dest);
    assert.equal(r.code, 3);
    assert.equal(fs.readFileSync(path.join(dest, 'a.txt'), 'utf8'), 'host edit\n');
    const copy = r.summary.conflicts[0].guestCopy as string;
    assert.match(path.basename(copy), /^a\.guest-conflict-\d{8}-\d{6}\.txt$/);
    assert.equal(fs.readFileSync(copy, 'utf8'), 'guest edit\n');
    assert.equal(fs.readFileSync(path.join(dest, 'b.txt'), 'utf8'), 'guest only\n');
    assert.equal(fs.existsSync(path.join(dest, 'c.txt')), false, 'removed in the guest, unchanged on the host: removed');
    // A case-only rename in the guest.
    await sh('cd /root/c; mv b.txt B.txt');
    const rn = await pullJson('/root/c', dest);
    assert.ok(fs.existsSync(path.join(dest, 'B.txt')) && !fs.existsSync(path.join(dest, 'b.txt')), `${JSON.stringify(rn.summary)}`);
  });

  test('throughput: a 5,000-file tree (~100 MB) arrives whole', async () => {
    await sh(`rm -rf /root/tree; mkdir /root/tree; cd /root/tree; node -e '
      const fs=require("fs"),c=require("crypto");let total=0;
      for(let i=0;i<5000;i++){const d="d"+(i%100);fs.mkdirSync(d,{recursive:true});
        const n=i%100===0?700000+(i*37)%300000:(i*7919)%24000+200;total+=n;fs.writeFileSync(d+"/f"+i+".txt",c.randomBytes(n));}
      console.log(total)'`);
    const guestSum = (await sh(`cd /root/tree && find . -type f | sort | xargs md5sum | md5sum`)).split(' ')[0];
    const dest = path.join(base, 'dest-tree');
    const r = await pullJson('/root/tree', dest);
    assert.equal(r.code, 0, r.stderr);
    const s = r.summary;
    assert.equal(s.written, 5000);
    const files: string[] = [];
    const walk = (rel: string) => {
      for (const e of fs.readdirSync(path.join(dest, rel), { withFileTypes: true })) {
        const q = rel ? `${rel}/${e.name}` : e.name;
        if (e.isDirectory()) walk(q);
        else files.push(q);
      }
    };
    walk('');
    const lines = files.sort().map((f) => `${createHash('md5').update(fs.readFileSync(path.join(dest, f))).digest('hex')}  ./${f}\n`);
    assert.equal(createHash('md5').update(lines.join('')).digest('hex'), guestSum, 'every file equal to the guest\'s');
    console.log(`# pull of 5,000 files / ${(s.bytes / 1e6).toFixed(1)} MB: ${s.seconds.toFixed(2)} s, ${(s.bytes / 1e6 / s.seconds).toFixed(1)} MB/s, ${(5000 / s.seconds).toFixed(0)} files/s`);
    sentinelUnchanged();
  });
});
