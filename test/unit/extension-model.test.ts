/**
 * unit: the extension's model and service connection in plain Node, with a fake service: snapshots
 * in, changes out; a lost connection reads `reconnecting`, reconnects by itself, lists afresh, and
 * events from the dead connection's listeners are never heard twice; the tree's look of each state;
 * the Create VM fields; errors as one sentence.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { VmModel } from '../../extension/model/vmModel';
import { ServiceConnection, type ConnectionState, type ServiceHandle } from '../../extension/model/serviceConnection';
import { vmLook } from '../../extension/tree/vmPresentation';
import { cpusError, diskError, memoryError, nameError, parseMemoryMiB } from '../../extension/ui/createValidation';
import { sentence } from '../../extension/ui/messages';
import type { VmInfo, VmState } from '../../runtime/common/status';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import { compareVersions } from '../../runtime/common/version';

function vm(name: string, state: VmState = 'stopped', extra: Partial<VmInfo> = {}): VmInfo {
  return {
    name,
    state,
    config: { id: `id-${name}`, cpus: 2, memoryMiB: 1024, diskGiB: 10, network: 'internet', createdAt: '2026-01-01T00:00:00Z', imageHash: 'h' },
    paths: { dir: `/d/${name}`, disk: 'x', consoleLog: 'c', workerLog: 'w' },
    ...extra,
  };
}

/** A fake service: one per connect; the test pushes events and closes it. */
class FakeService implements ServiceHandle {
  onStatus?: (i: VmInfo) => void;
  onRemoved?: (n: string) => void;
  private closeListeners: (() => void)[] = [];
  disposed = false;
  shutdowns = 0;
  constructor(private readonly vms: Map<string, VmInfo>, readonly version = '0.1.0') {}
  async serviceInfo() {
    return { pid: 1, home: '/h', version: this.version };
  }
  async shutdownService() {
    this.shutdowns++;
    setImmediate(() => this.kill());
  }
  connection = { onClose: (l: () => void) => this.closeListeners.push(l) };
  async subscribe(onStatus: (i: VmInfo) => void, onRemoved?: (n: string) => void) {
    this.onStatus = onStatus;
    this.onRemoved = onRemoved;
  }
  async list() {
    return [...this.vms.values()];
  }
  emit(info: VmInfo) {
    this.vms.set(info.name, info);
    if (!this.disposed) this.onStatus?.(info);
  }
  kill() {
    this.disposed = true;
    for (const l of this.closeListeners) l();
  }
  dispose() {
    this.disposed = true;
  }
}

function nextState(c: ServiceConnection<any>, want: ConnectionState): Promise<void> {
  if (c.state === want) return Promise.resolve();
  return new Promise((resolve) => {
    const d = c.onDidChangeState((s) => s === want && (d.dispose(), resolve()));
  });
}

test('model: snapshots replace, removals and whole lists fire changes; waitFor waits on events', async () => {
  const m = new VmModel();
  const changes: unknown[] = [];
  m.onDidChange((c) => changes.push(c));
  m.update(vm('b'));
  m.update(vm('a'));
  m.update(vm('a', 'running'));
  assert.deepEqual(m.list().map((i) => i.name), ['a', 'b']);
  assert.deepEqual(changes, [undefined, undefined, { name: 'a' }]);
  const waiting = m.waitFor('b', (i) => i?.state === 'running', 1000);
  m.update(vm('b', 'running'));
  assert.equal((await waiting)?.state, 'running');
  m.remove('a');
  assert.equal(m.get('a'), undefined);
  await assert.rejects(m.waitFor('a', (i) => !!i, 20), /did not come within 20 ms/);
});

test('connection: connects on first need, reconnects after the service dies, no event twice', async () => {
  const vms = new Map([['dev', vm('dev', 'running')]]);
  const services: FakeService[] = [];
  let refuse = 0;
  const model = new VmModel();
  const c = new ServiceConnection<FakeService>(model, {
    connect: async () => {
      if (refuse > 0) {
        refuse--;
        throw new Error('ECONNREFUSED');
      }
      const s = new FakeService(vms);
      services.push(s);
      return s;
    },
    log: () => undefined,
    backoffMs: [5, 10],
  });
  assert.equal(c.state, 'idle');
  await c.client();
  assert.equal(c.state, 'connected');
  assert.equal(model.get('dev')?.state, 'running');

  let heard = 0;
  model.onDidChange(() => heard++);
  refuse = 2; // the first two attempts find no service
  services[0].kill();
  assert.equal(c.state, 'reconnecting');
  vms.set('dev', vm('dev', 'paused')); // changed while nobody listened
  await nextState(c, 'connected');
  assert.equal(services.length, 2);
  assert.equal(model.get('dev')?.state, 'paused', 'listed afresh after reconnecting');

  assert.ok(services[0].disposed, 'the dead connection (and its listeners) is disposed');
  heard = 0;
  services[1].emit(vm('dev', 'saved'));
  assert.equal(heard, 1, 'one event, heard once');
  assert.equal(model.get('dev')?.state, 'saved');
  c.dispose();
});

test('connection: a command waiting for the service is told why it cannot be reached; later attempts go on', async () => {
  const model = new VmModel();
  let calls = 0;
  const c = new ServiceConnection<FakeService>(model, {
    connect: async () => {
      calls++;
      throw new Error('the service did not start; see /x/service.log');
    },
    log: () => undefined,
    backoffMs: [5],
    attemptsBeforeFailed: 2,
  });
  await assert.rejects(c.client(), /see \/x\/service.log/);
  await nextState(c, 'failed');
  assert.ok(calls >= 2);
  c.dispose();
});

test('tree look: icon, colour, description and menus context per state', () => {
  const running = vmLook(vm('dev', 'running', { runtime: { state: 'running', accel: 'tcg', accelReason: 'no /dev/kvm', channel: 'virtio-serial', qemuVersion: '7.2', workerPid: 1, agent: { connected: true, kernel: '6.1.0-cloud', lastHeartbeatAt: Date.now() - 1200 }, startedAt: new Date(Date.now() - 90_000).toISOString(), boot: { kind: 'boot', readyMs: 4200 } } }));
  assert.equal(running.icon, 'vm-running');
  assert.equal(running.color, 'charts.green');
  assert.equal(running.contextValue, 'runningVm');
  assert.equal(running.description, 'Running · 2 vCPUs · 1 GiB');
  assert.match(running.tooltip, /Up 1 min \(booted in 4\.2 s\)/);
  assert.match(running.tooltip, /Guest kernel: 6\\\.1\\\.0\\-cloud/);
  assert.equal(vmLook(vm('a', 'starting')).icon, 'loading~spin');
  assert.equal(vmLook(vm('a', 'saved')).contextValue, 'savedVm');
  const failed = vmLook(vm('a', 'stopped', { lastError: { code: ErrorCode.BootFailed, message: 'QEMU exited during boot (see /x/console.log)' } }));
  assert.equal(failed.icon, 'warning');
  assert.match(failed.tooltip, /Last error: QEMU exited during boot/);
  assert.equal(vmLook(vm('evil*name_[x](y)', 'stopped')).tooltip.split('\n')[0], '**evil\\*name\\_\\[x\\]\\(y\\)**: off');
});

test('create fields: validated as typed', () => {
  const exists = (n: string) => n === 'dev';
  assert.equal(nameError('web-1', exists), undefined);
  assert.match(nameError('Bad Name', exists)!, /lowercase letters/);
  assert.match(nameError('dev', exists)!, /already exists/);
  assert.match(nameError('-x', exists)!, /starting and ending/);
  assert.equal(cpusError('2', 4), undefined);
  assert.match(cpusError('8', 4)!, /has 4 CPUs/);
  assert.match(cpusError('two', 4)!, /whole number/);
  assert.equal(parseMemoryMiB('2G'), 2048);
  assert.equal(parseMemoryMiB('512M'), 512);
  assert.equal(parseMemoryMiB('2'), 2048);
  assert.equal(memoryError('1G', 8192), undefined);
  assert.match(memoryError('64M', 8192)!, /at least 128 MiB/);
  assert.match(memoryError('lots', 8192)!, /like 512M/);
  assert.equal(diskError('20G'), undefined);
  assert.match(diskError('1.5G')!, /whole GiB/);
  assert.match(diskError('0')!, /between 1 and/);
});

test('errors: one sentence', () => {
  assert.equal(sentence(new SandboxError(ErrorCode.WrongState, 'dev is paused; resume it first')), 'Dev is paused; resume it first.');
  assert.equal(sentence(new Error('line one\n  line two.')), 'Line one line two.');
});

test('version skew: an older service is replaced once (VMs stay), a newer one is used and reported', async () => {
  const vms = new Map([['dev', vm('dev', 'running')]]);
  const versions = ['0.0.9', '0.2.0'];
  const services: FakeService[] = [];
  const newer: string[] = [];
  const logs: string[] = [];
  const model = new VmModel();
  const c = new ServiceConnection<FakeService>(model, {
    connect: async () => {
      const s = new FakeService(vms, versions[Math.min(services.length, versions.length - 1)]);
      services.push(s);
      return s;
    },
    log: (m) => logs.push(m),
    version: '0.1.0',
    onNewerService: (v) => newer.push(v),
  });
  const client = await c.client();
  assert.equal(services[0].shutdowns, 1, 'the older service was asked to exit');
  assert.equal(client, services[1]);
  assert.deepEqual(newer, ['0.2.0']);
  assert.match(logs.join('\n'), /version 0\.0\.9, older than this extension's 0\.1\.0: replacing it/);
  assert.equal(model.get('dev')?.state, 'running');
  c.dispose();
});

test('versions compare numerically', () => {
  assert.ok(compareVersions('0.10.0', '0.9.1') > 0);
  assert.ok(compareVersions('1.0', '1.0.0') === 0);
  assert.ok(compareVersions('0.1.0', '0.1.1') < 0);
});
