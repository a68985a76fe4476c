/**
 * vm: version skew between a client and a running service.
 * Procedure: boot a VM; stop the service and start one that reports an older version (the service
 * bundle with SANDBOXVM_TEST_SERVICE_VERSION, a test-only override); connect the current client:
 * it replaces that service (the old pid is gone, the new one reports the current version) and the
 * VM runs on, adopted by the new service (same worker, same QEMU, exec works, its serial console
 * too). Then start a service that reports a newer version (and one with a newer protocol): the
 * current client refuses in one sentence and leaves it running; the CLI exits 1 with that sentence.
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import { SerialClient } from '../../runtime/client/serialClient';
import { RUNTIME_VERSION } from '../../runtime/common/version';
import { REPO, TestHome, waitFor } from './fixture';

const SERVICE = path.join(REPO, 'dist', 'service.js');

describe('vm: version skew', { timeout: 600_000 }, () => {
  let home: TestHome;
  before(async () => {
    home = new TestHome();
    await home.bootedVm('skew');
  });
  after(() => home.dispose());

  /** Stops the running service and starts one with `env` added; resolves with its pid once it answers. */
  async function startServiceWith(env: Record<string, string>): Promise<number> {
    await home.ok(['service', 'stop']);
    const child = spawn(process.execPath, [SERVICE], { env: { ...home.env, ...env }, detached: true, stdio: 'ignore' });
    child.unref();
    const client = await waitFor('the pretend service', () => ServiceClient.connect({ home: home.dir, autoStart: false, checkVersion: false }).catch(() => undefined), 30_000);
    const info = await client.serviceInfo();
    client.dispose();
    assert.equal(info.pid, child.pid);
    return info.pid;
  }

  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };

  test('a newer client replaces an older service; the VM runs on, adopted', async () => {
    const before = JSON.parse(fs.readFileSync(path.join(home.vmDir('skew'), 'worker.json'), 'utf8'));
    const oldPid = await startServiceWith({ SANDBOXVM_TEST_SERVICE_VERSION: '0.0.1' });
    const client = await ServiceClient.connect({ home: home.dir, serviceScript: SERVICE });
    try {
      const info = await client.serviceInfo();
      assert.equal(client.replacedService?.version, '0.0.1');
      assert.notEqual(info.pid, oldPid, 'a new service answers');
      assert.equal(info.version, RUNTIME_VERSION);
      assert.equal(alive(oldPid), false, 'the old service exited');
      const vm = await client.info('skew');
      assert.equal(vm.state, 'running');
      assert.equal(vm.runtime?.workerPid, before.workerPid, 'the same worker, adopted');
      assert.equal(vm.runtime?.qemuPid, before.qemuPid, 'the same QEMU');
    } finally {
      client.dispose();
    }
    assert.match(await home.ok(['exec', 'skew', '--', 'echo', 'still-here']), /still-here/);
    const serial = await SerialClient.connect(home.vmDir('skew'));
    serial.close();
  });

  test('an older client refuses a newer service in one sentence and leaves it running', async () => {
    const newer: Record<string, string>[] = [{ SANDBOXVM_TEST_SERVICE_VERSION: '99.0.0' }, { SANDBOXVM_TEST_SERVICE_PROTOCOL: '99' }];
    for (const env of newer) {
      const newPid = await startServiceWith(env);
      await assert.rejects(ServiceClient.connect({ home: home.dir, serviceScript: SERVICE }), (err: Error) => {
        assert.match(err.message, /newer than this client's .*; update this client/);
        assert.equal(err.message.split('\n').length, 1);
        return true;
      });
      assert.equal(alive(newPid), true, 'the newer service keeps running');
      const cli = await home.cli(['list']);
      assert.equal(cli.code, 1);
      assert.match(cli.stderr, /^sandboxvm: the running Sandbox VMs service is version .* newer than this client's/);
      assert.equal(cli.stderr.trim().split('\n').length, 1);
    }
    // Back to a service of this version: the VM is still there and running.
    await startServiceWith({});
    assert.match(await home.ok(['info', 'skew']), /running/);
  });
});
