/** `sandboxvm info`'s text: the Disk line names what the VM's disk is an overlay on. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { infoText } from '../../runtime/cli/format';
import type { VmInfo } from '../../runtime/common/status';

const vm = (config: Partial<VmInfo['config']>): VmInfo =>
  ({
    name: 'dev',
    state: 'stopped',
    config: { id: 'x', cpus: 1, memoryMiB: 1024, diskGiB: 10, network: 'internet', createdAt: '2026-11-30T00:00:00Z', ports: { auto: true, forwards: [] }, imageHash: 'abcdef0123456789', ...config },
    paths: { dir: '/d', disk: '/d/disk.qcow2', consoleLog: '/d/console.log', workerLog: '/d/worker.log' },
  }) as VmInfo;

const diskLine = (text: string) => text.split('\n').find((l) => /^Disk:/.test(l))!;

test('info says what the disk is an overlay on: the base image, a template, or the source of a linked clone', () => {
  assert.match(diskLine(infoText(vm({}))), /10G \(linked clone of base abcdef012345\)/);
  assert.match(diskLine(infoText(vm({ template: '/cache/templates/abcdef-0123-xyz' }))), /made from template abcdef-0123-xyz, on base abcdef012345/);
  assert.match(diskLine(infoText(vm({ linkedTo: { vm: 'src', vmId: 'y', checkpoint: 'c1' } }))), /linked clone of src at checkpoint c1, on base abcdef012345/);
});
