/**
 * `npm run bench -- workspace`: the workspace in the guest, side by side in one run (issue 9).
 *   first_sync_s, change_visible_ms, change_visible_p95_ms
 *                       bench/sync.ts as it is (runtime vs rsync over ssh and tar over ssh)
 *   find_read_cold_ms   `find` + read every file of the tree, the guest's page cache dropped first
 *   find_read_warm_ms   the same again (median of --runs)
 *   git_status_first_ms `git status` on the synced repository the first time (git refreshes its
 *                       index: the stat data recorded on the host never matches the guest's)
 *   git_status_ms       `git status` again (median of --runs)
 * Then bench/ports.ts as it is: a forwarded port's connect latency and throughput vs ssh -L.
 * value: the tree synced into the guest's own disk (the runtime's copy); peer: the host folder
 * mounted in the same guest with virtiofs (QEMU 7.2's C virtiofsd, cache=auto; the cloud kernel has
 * no 9p, so virtiofs stands in for the shared-folder approach). The tree is made a git repository on
 * the host after the change latencies; the engine syncs its .git, the rsync and tar peers leave it
 * out so their first-sync figures cover the same 5,000 files.
 */
import * as path from 'node:path';
import type { BenchOptions } from './lib/options';
import { describe, emit, log } from './lib/output';
import { mustRun } from './lib/proc';
import type { Ssh } from './lib/ssh';
import { median } from './lib/stats';
import { kernelModules, VIRTIOFS_TAG, Virtiofsd, virtiofsArgs } from './lib/virtiofs';
import { run as runPorts } from './ports';
import { run as runSync } from './sync';

export const summary = 'workspace: first sync and change latency (vs rsync, tar over ssh), find+read and git status on the synced tree vs a virtiofs mount, a forwarded port vs ssh -L';

const BENCH = 'workspace';
const MOUNT = '/mnt/hostfs';
const GIT = "git -c safe.directory='*'";

/** Runs `command` in the guest and returns the milliseconds it took there (timed by the guest). */
async function timed(ssh: Ssh, command: string): Promise<number> {
  const r = await ssh.run(`s=$(date +%s%N); ${command} >/dev/null 2>/tmp/bench-err || { cat /tmp/bench-err >&2; exit 1; }; e=$(date +%s%N); echo $(( (e - s) / 1000 ))`, { timeoutMs: 900_000 });
  if (r.code !== 0) throw new Error(`${command} failed in the guest: ${r.stderr.trim()}`);
  return Number(r.stdout.trim()) / 1000;
}

export async function run(options: BenchOptions): Promise<void> {
  let virtiofsd: Virtiofsd | undefined;
  const results: Record<string, { cold: number; warm: number; gitFirst: number; git: number }> = {};
  try {
    await runSync(options, {
      bench: BENCH,
      extraPackages: 'openssh-server qemu-guest-agent rsync git',
      peerExcludes: ['.git'],
      afterChanges: async (tree) => {
        const git = ['-C', tree, '-c', 'user.name=bench', '-c', 'user.email=bench@localhost', '-c', 'gc.auto=0'];
        await mustRun('git', [...git, 'init', '-q'], { timeoutMs: 120_000 });
        await mustRun('git', [...git, 'add', '-A'], { timeoutMs: 300_000 });
        await mustRun('git', [...git, 'commit', '-q', '-m', 'tree'], { timeoutMs: 300_000 });
        log('host: the tree is a git repository now; waiting for its .git to sync');
        // Every file of .git but the lock files (ignored by the sync): their count and bytes.
        const command = "find .git -type f ! -name '*.lock' -printf '%s\\n' | awk '{ n++; s += $1 } END { print n, s }'";
        const host = await mustRun('sh', ['-c', `cd '${tree}' && ${command}`]);
        return { command, expect: host.stdout.trim() };
      },
      peerArgs: async (dir, tree, memoryMiB) => {
        virtiofsd = new Virtiofsd(path.join(dir, 'virtiofsd.sock'), tree);
        await virtiofsd.start();
        return virtiofsArgs(virtiofsd.socket, memoryMiB);
      },
      onPeer: async ({ ssh, guestTree, dir }) => {
        const release = await ssh.run('uname -r');
        for (const m of await kernelModules(dir, release.stdout.trim())) {
          const r = await ssh.run(`cat > /tmp/${path.basename(m)} && insmod /tmp/${path.basename(m)}`, { stdinFile: m, timeoutMs: 120_000 });
          if (r.code !== 0 && !/File exists/.test(r.stderr)) throw new Error(`insmod ${path.basename(m)} in the guest failed: ${r.stderr.trim()}`);
        }
        const mounted = await ssh.run(`mkdir -p ${MOUNT} && mount -t virtiofs ${VIRTIOFS_TAG} ${MOUNT} && test -d ${MOUNT}/.git`, { timeoutMs: 120_000 });
        if (mounted.code !== 0) throw new Error(`mounting the host folder with virtiofs failed: ${mounted.stderr.trim()}`);
        const count = await ssh.run(`find ${guestTree} -path '*/.git' -prune -o -type f -print | wc -l; find ${MOUNT} -path '*/.git' -prune -o -type f -print | wc -l`);
        const [here, there] = count.stdout.trim().split('\n').map(Number);
        if (here !== there) throw new Error(`the synced tree has ${here} files, the virtiofs mount ${there}`);
        log(`virtiofs: ${MOUNT} mounted, ${there} files on both sides`);

        const readAll = (d: string) => `find ${d} -type f -print0 | xargs -0 cat`;
        for (const [label, d] of [['synced', guestTree], ['virtiofs', MOUNT]] as const) {
          await ssh.run('sync; echo 3 > /proc/sys/vm/drop_caches');
          const cold = await timed(ssh, readAll(d));
          const warm: number[] = [];
          for (let i = 0; i < options.runs; i++) warm.push(await timed(ssh, readAll(d)));
          const gitFirst = await timed(ssh, `${GIT} -C ${d} status --porcelain`);
          const git: number[] = [];
          for (let i = 0; i < options.runs; i++) git.push(await timed(ssh, `${GIT} -C ${d} status --porcelain`));
          const dirty = await ssh.run(`${GIT} -C ${d} status --porcelain | wc -l`);
          log(`${label}: find+read cold ${cold.toFixed(0)} ms, ${describe('warm', warm)}; git status first ${gitFirst.toFixed(0)} ms, ${describe('again', git)}; ${dirty.stdout.trim()} path(s) dirty`);
          results[label] = { cold, warm: median(warm), gitFirst, git: median(git) };
        }
        const a = results.synced;
        const b = results.virtiofs;
        emit({ bench: BENCH, metric: 'find_read_cold_ms', unit: 'ms', value: a.cold, peer: 'virtiofs', peer_value: b.cold });
        emit({ bench: BENCH, metric: 'find_read_warm_ms', unit: 'ms', value: a.warm, peer: 'virtiofs', peer_value: b.warm });
        emit({ bench: BENCH, metric: 'git_status_first_ms', unit: 'ms', value: a.gitFirst, peer: 'virtiofs', peer_value: b.gitFirst });
        emit({ bench: BENCH, metric: 'git_status_ms', unit: 'ms', value: a.git, peer: 'virtiofs', peer_value: b.git });
        await ssh.run(`umount ${MOUNT}`);
      },
    });
  } finally {
    await virtiofsd?.stop();
  }
  // A forwarded port, as bench/ports.ts measures it (channel forward vs QEMU hostfwd vs ssh -L).
  await runPorts(options);
}
