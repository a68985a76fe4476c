/**
 * vm: live metrics through the service (`vm.metrics`), for the VM details view.
 * Procedure: boot a VM; watch its metrics with ServiceClient.onMetrics; check the figures are
 * plausible (guest memory within the configured size, available below total, root filesystem and
 * overlay sizes) and samples come at most about once a second; burn a CPU in the guest and check
 * QEMU's CPU figure rises well above idle; stop watching and check no sample arrives any more;
 * `sandboxvm stats --count 2 --json` prints two samples.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { ServiceClient, type VmMetricsEvent } from '../../runtime/client/serviceClient';
import { TestHome, waitFor } from './fixture';

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

describe('vm: metrics', { timeout: 600_000 }, () => {
  let home: TestHome;
  let client: ServiceClient;
  before(async () => {
    home = new TestHome();
    await home.bootedVm('met');
    client = await ServiceClient.connect({ home: home.dir, autoStart: false });
  });
  after(async () => {
    client?.dispose();
    await home.dispose();
  });

  test('plausible figures, at most about once a second; a CPU burn in the guest raises the CPU figure; none after unwatching', async () => {
    const samples: VmMetricsEvent[] = [];
    const stop = await client.onMetrics('met', (m) => samples.push(m));
    await waitFor('6 samples', () => (samples.length >= 6 ? true : undefined), 30_000);
    const idle = samples.slice(1).map((s) => s.cpuPercent!).filter((x) => x !== undefined);
    const m = samples[samples.length - 1];
    assert.equal(m.name, 'met');
    assert.equal(m.state, 'running');
    const mem = m.guest!.memory;
    assert.ok(mem.totalBytes > 400 * 2 ** 20 && mem.totalBytes <= 512 * 2 ** 20, `guest memory total ${mem.totalBytes}`);
    assert.ok(mem.availableBytes > 100 * 2 ** 20 && mem.availableBytes < mem.totalBytes, `guest memory available ${mem.availableBytes}`);
    const root = m.guest!.rootfs;
    assert.ok(root.totalBytes > 1 * 2 ** 30 && root.usedBytes > 50 * 2 ** 20 && root.availableBytes < root.totalBytes, JSON.stringify(root));
    assert.ok(m.overlay!.allocatedBytes > 0 && m.overlay!.fileBytes > 0, JSON.stringify(m.overlay));
    assert.ok(m.hostRssBytes! > 50 * 2 ** 20, `QEMU rss ${m.hostRssBytes}`);
    for (let i = 1; i < samples.length; i++) assert.ok(samples[i].at - samples[i - 1].at >= 900, `samples ${samples[i].at - samples[i - 1].at} ms apart`);

    const burnFrom = samples.length;
    const burn = home.ok(['exec', 'met', '--', 'sh', '-c', 'timeout 8 sh -c "while :; do :; done"; true'], { timeoutMs: 120_000 });
    await burn;
    const burning = samples.slice(burnFrom + 2).map((s) => s.cpuPercent!).filter((x) => x !== undefined);
    assert.ok(burning.length >= 4, `samples during the burn: ${burning.length}`);
    const [idleMedian, burnMedian] = [median(idle), median(burning)];
    process.stderr.write(`cpu idle median ${idleMedian}% (${idle.join(', ')}), burning median ${burnMedian}% (${burning.join(', ')})\n`);
    assert.ok(burnMedian > 50 && burnMedian > idleMedian + 25, `burn ${burnMedian}% vs idle ${idleMedian}%`);

    await stop();
    await new Promise((r) => setTimeout(r, 500));
    const count = samples.length;
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(samples.length, count, 'no samples after unwatching');
  });

  test('CLI: stats prints samples; an unknown VM gets one sentence', async () => {
    const out = await home.ok(['stats', 'met', '--json', '--count', '2'], { timeoutMs: 60_000 });
    const lines = out.trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(lines.length, 2);
    assert.equal(lines[1].name, 'met');
    const bad = await home.cli(['stats', 'nope', '--count', '1']);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /no VM named nope/);
  });
});
