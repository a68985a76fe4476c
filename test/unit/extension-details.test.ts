/**
 * unit: the extension's live figures in plain Node: the tree's look with live CPU % and guest info
 * (description, tooltip, ports as children), the details panel's facts and samples, and the
 * metrics store (counted watches, the service asked once per VM, again after a reconnect, a
 * bounded history, nothing after the last watch ends).
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { detailsSample, detailsStatus } from '../../extension/details/detailsMessages';
import { Emitter } from '../../extension/model/event';
import { HISTORY_MS, MetricsStore, type MetricsClient } from '../../extension/model/metricsStore';
import type { ConnectionState } from '../../extension/model/serviceConnection';
import { formatCpu, portLooks, vmLook } from '../../extension/tree/vmPresentation';
import type { VmMetricsEvent } from '../../runtime/client/serviceClient';
import type { VmInfo, VmState } from '../../runtime/common/status';
import type { GuestSummary } from '../../runtime/worker/metrics';

const NOW = Date.parse('2026-01-01T01:00:00Z');

function vm(state: VmState = 'running', extra: Partial<VmInfo> = {}): VmInfo {
  return {
    name: 'dev',
    state,
    config: { id: 'id-dev', cpus: 2, memoryMiB: 1024, diskGiB: 10, network: 'internet', createdAt: '2026-01-01T00:00:00Z', imageHash: 'h' },
    runtime: state === 'running' || state === 'paused' ? {
      state, accel: 'tcg', accelReason: 'no /dev/kvm', channel: 'virtio-serial', qemuVersion: '7.2', workerPid: 10, qemuPid: 11,
      agent: { connected: true, kernel: '6.1.0-cloud-amd64', hostname: 'dev', lastHeartbeatAt: NOW - 800, responding: true },
      startedAt: '2026-01-01T00:55:00Z', boot: { kind: 'boot', readyMs: 6100 },
    } : undefined,
    paths: { dir: '/d/dev', disk: 'x', consoleLog: 'c', workerLog: 'w' },
    ...extra,
  };
}

const guest: GuestSummary = {
  hostname: 'dev',
  os: 'Debian GNU/Linux 12 (bookworm)',
  kernel: '6.1.0-cloud-amd64',
  addresses: [{ iface: 'eth0', family: 'IPv4', address: '10.0.2.15' }],
  listening: ['tcp 0.0.0.0:22', 'tcp6 [::]:22', 'tcp 127.0.0.1:5432', 'tcp 10.0.2.15:8080', 'garbage', 'tcp 0.0.0.0:99999', 'tcp <b>x</b>:1'],
};

test('ports: one entry per port, ascending, what it listens on; what does not parse is left out', () => {
  assert.deepEqual(portLooks(guest.listening), [
    { port: 1, label: '1/tcp', description: '<b>x</b>' },
    { port: 22, label: '22/tcp', description: 'all addresses' },
    { port: 5432, label: '5432/tcp', description: 'localhost only' },
    { port: 8080, label: '8080/tcp', description: '10.0.2.15' },
  ]);
  assert.deepEqual(portLooks([]), []);
});

test('tree look: live CPU % in the description of a running VM only; guest OS, addresses and ports in the tooltip', () => {
  assert.equal(vmLook(vm(), NOW).description, 'Running · 2 vCPUs · 1 GiB');
  assert.equal(vmLook(vm(), NOW, { cpuPercent: 4.26 }).description, 'Running · 2 vCPUs · 1 GiB · 4% CPU');
  assert.equal(vmLook(vm(), NOW, { cpuPercent: 99.6 }).description, 'Running · 2 vCPUs · 1 GiB · 100% CPU');
  assert.equal(vmLook(vm('paused'), NOW, { cpuPercent: 0 }).description, 'Paused · 2 vCPUs · 1 GiB');
  assert.equal(vmLook(vm('stopped'), NOW, { cpuPercent: 3, guestInfo: guest }).description, 'Off · 2 vCPUs · 1 GiB');
  assert.equal(formatCpu(0), '0% CPU');
  assert.equal(formatCpu(0.4), '0% CPU');
  const tip = vmLook(vm(), NOW, { cpuPercent: 3, guestInfo: guest }).tooltip;
  assert.match(tip, /- Guest OS: Debian GNU\/Linux 12 \\\(bookworm\\\)/);
  assert.match(tip, /- Addresses: 10\\\.0\\\.2\\\.15 \\\(eth0\\\)/);
  assert.match(tip, /- Listening ports: 1, 22, 5432, 8080/);
  assert.doesNotMatch(vmLook(vm('stopped'), NOW, { guestInfo: guest }).tooltip, /Guest OS/, 'a stopped VM has no guest info');
  assert.doesNotMatch(vmLook(vm(), NOW).tooltip, /Guest OS/, 'nothing known, nothing said');
  const failed = vmLook(vm('stopped', { lastError: { code: 'QemuFailed' as any, message: 'QEMU exited' } }), NOW).tooltip;
  assert.match(failed, /Last error: QEMU exited/);
});

test('tree tooltip: a pushed snapshot\'s old heartbeat time reads "under 5 s" while the agent responds', () => {
  const stale = vm();
  stale.runtime!.agent.lastHeartbeatAt = NOW - 60_000;
  assert.match(vmLook(stale, NOW).tooltip, /- Agent: connected, last heartbeat under 5 s ago/);
  stale.runtime!.agent.responding = false;
  assert.match(vmLook(stale, NOW).tooltip, /- Agent: not responding, last heartbeat 1 min ago/);
});

test('details facts: uptime from startedAt, boot, accelerator, agent, heartbeat time; none while stopped', () => {
  const s = detailsStatus(vm());
  assert.equal(s.summary, 'Running · 2 vCPUs · 1 GiB memory · 10 GiB disk · network internet');
  assert.equal(s.startedAt, Date.parse('2026-01-01T00:55:00Z'));
  assert.equal(s.boot, 'booted in 6.1 s');
  assert.equal(s.accelerator, 'TCG (no /dev/kvm)');
  assert.equal(s.agent, 'connected');
  assert.equal(s.lastHeartbeatAt, NOW - 800);
  assert.equal(s.agentResponding, true);
  assert.equal(s.heartbeatWithinMs, 5000);
  const off = detailsStatus(vm('stopped'));
  assert.deepEqual(Object.keys(off).sort(), ['cpus', 'memoryMiB', 'name', 'state', 'summary']);
});

test('details samples: the figures the plots need, guest info as text', () => {
  const m: VmMetricsEvent = {
    name: 'dev', at: NOW, state: 'running', cpuPercent: 12.5, hostRssBytes: 300e6,
    guest: { memory: { totalBytes: 1e9, availableBytes: 6e8 }, rootfs: { totalBytes: 4e9, availableBytes: 3e9, usedBytes: 1e9 } },
    overlay: { allocatedBytes: 5e7, fileBytes: 1e10 }, guestInfo: guest,
  };
  assert.deepEqual(detailsSample(m), {
    at: NOW, state: 'running', cpuPercent: 12.5, hostRssBytes: 300e6,
    memory: { totalBytes: 1e9, availableBytes: 6e8 }, rootfs: { totalBytes: 4e9, usedBytes: 1e9 }, overlayBytes: 5e7,
    guest: { os: guest.os, addresses: ['10.0.2.15 (eth0)'], listening: guest.listening },
  });
  assert.deepEqual(detailsSample({ name: 'dev', at: NOW, state: 'stopped' }), { at: NOW, state: 'stopped' });
});

/** A fake service client: counts watches per VM and lets the test send samples. */
class FakeMetricsClient implements MetricsClient {
  readonly listeners = new Map<string, Set<(m: VmMetricsEvent) => void>>();
  watches = 0;
  unwatches = 0;
  async onMetrics(name: string, listener: (m: VmMetricsEvent) => void) {
    this.watches++;
    let set = this.listeners.get(name);
    if (!set) this.listeners.set(name, (set = new Set()));
    set.add(listener);
    return async () => {
      this.unwatches++;
      set!.delete(listener);
    };
  }
  send(name: string, m: Omit<VmMetricsEvent, 'name'>) {
    for (const l of this.listeners.get(name) ?? []) l({ ...m, name });
  }
}

function fakeConnection(first: FakeMetricsClient) {
  const states = new Emitter<ConnectionState>();
  const conn = { current: first, state: 'connected' as ConnectionState, onDidChangeState: states.event, client: async () => conn.current };
  return { conn, reconnect: (c: FakeMetricsClient) => { conn.current = c; states.fire('connected'); } };
}

const tick = () => new Promise((r) => setImmediate(r));

test('metrics store: watches are counted, the service is asked once per VM, again after a reconnect; history is bounded', async () => {
  const c1 = new FakeMetricsClient();
  const { conn, reconnect } = fakeConnection(c1);
  const store = new MetricsStore(conn, () => undefined);
  const changes: string[] = [];
  store.onDidChange((n) => changes.push(n));
  const a = store.watch('dev');
  const b = store.watch('dev');
  await tick();
  assert.equal(c1.watches, 1, 'two watches of one VM: one subscription');
  c1.send('dev', { at: NOW - HISTORY_MS - 1, state: 'running', cpuPercent: 1 });
  c1.send('dev', { at: NOW, state: 'running', cpuPercent: 2, guestInfo: guest });
  c1.send('dev', { at: NOW + 1000, state: 'running', cpuPercent: 3 });
  assert.deepEqual(store.history('dev').map((m) => m.cpuPercent), [2, 3], 'older than HISTORY_MS dropped');
  assert.equal(store.latest('dev')?.cpuPercent, 3);
  assert.equal(store.guestInfo('dev'), guest, 'the last guest info stays until the VM stops running');
  assert.deepEqual(changes, ['dev', 'dev', 'dev']);
  c1.send('dev', { at: NOW + 2000, state: 'stopped' });
  assert.equal(store.guestInfo('dev'), undefined);

  const c2 = new FakeMetricsClient();
  reconnect(c2);
  await tick();
  assert.equal(c2.watches, 1, 'subscribed again on the new connection');
  c2.send('dev', { at: NOW + 3000, state: 'running', cpuPercent: 4 });
  assert.equal(store.latest('dev')?.cpuPercent, 4);

  a.dispose();
  a.dispose();
  await tick();
  assert.equal(c2.unwatches, 0, 'one watch is still open');
  b.dispose();
  await tick();
  assert.equal(c2.unwatches, 1, 'the last watch ended: unsubscribed');
  assert.equal(store.isWatched('dev'), false);
  c2.send('dev', { at: NOW + 4000, state: 'running', cpuPercent: 5 });
  assert.deepEqual(store.history('dev'), []);
  store.dispose();
});

test('metrics store: a watch ended before the subscription answered leaves no subscription behind', async () => {
  const c1 = new FakeMetricsClient();
  const { conn } = fakeConnection(c1);
  const store = new MetricsStore(conn, () => undefined);
  store.watch('dev').dispose();
  await tick();
  await tick();
  assert.equal(c1.watches - c1.unwatches, 0);
  assert.equal(c1.listeners.get('dev')?.size ?? 0, 0);
  store.dispose();
});
