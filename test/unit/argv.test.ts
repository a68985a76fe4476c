/** unit: QEMU argv builder, table-driven. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { buildQemuArgv, escapeOption, macForVm, shellQuote, type LaunchSpec } from '../../runtime/qemu/argv';

const base: LaunchSpec = {
  accel: 'tcg',
  cpus: 2,
  memoryMiB: 1024,
  kernel: '/img/vmlinuz',
  initrd: '/img/initrd.img',
  disk: '/vms/dev/disk.qcow2',
  consoleLog: '/vms/dev/console.log',
  hostname: 'dev',
  network: 'host',
  channelFd: 3,
  qmpFd: 4,
};

function valueAfter(argv: string[], flag: string, nth = 0): string | undefined {
  let seen = 0;
  for (let i = 0; i < argv.length; i++) if (argv[i] === flag && seen++ === nth) return argv[i + 1];
  return undefined;
}

const cases: { name: string; spec: Partial<LaunchSpec>; check: (argv: string[]) => void }[] = [
  { name: 'tcg gets a bounded translation cache and -cpu max', spec: {}, check: (a) => (assert.equal(valueAfter(a, '-accel'), 'tcg,tb-size=128'), assert.equal(valueAfter(a, '-cpu'), 'max')) },
  { name: 'kvm uses the host cpu', spec: { accel: 'kvm' }, check: (a) => (assert.equal(valueAfter(a, '-accel'), 'kvm'), assert.equal(valueAfter(a, '-cpu'), 'host')) },
  { name: 'hvf uses the host cpu', spec: { accel: 'hvf' }, check: (a) => assert.equal(valueAfter(a, '-accel'), 'hvf') },
  { name: 'whpx', spec: { accel: 'whpx' }, check: (a) => assert.equal(valueAfter(a, '-accel'), 'whpx') },
  { name: 'memory and cpus', spec: { memoryMiB: 2048, cpus: 4 }, check: (a) => (assert.equal(valueAfter(a, '-m'), '2048'), assert.equal(valueAfter(a, '-smp'), '4')) },
  { name: 'microvm with legacy timers', spec: {}, check: (a) => assert.equal(valueAfter(a, '-M'), 'microvm,pit=on,pic=on,rtc=on') },
  { name: 'channel and qmp are inherited listening sockets', spec: { channelFd: 5, qmpFd: 6 }, check: (a) => {
    assert.ok(a.includes('socket,id=agent,fd=5,server=on,wait=off'));
    assert.ok(a.includes('socket,id=qmp,fd=6,server=on,wait=off'));
  } },
  { name: 'or connected socketpairs when asked', spec: { channelFd: 5, qmpFd: 6, fdSockets: 'connected' }, check: (a) => {
    assert.ok(a.includes('socket,id=agent,fd=5,server=off'));
    assert.ok(a.includes('socket,id=qmp,fd=6,server=off'));
    assert.ok(a.includes('virtserialport,chardev=agent,name=org.sandboxvm.agent'));
  } },
  { name: 'TCG guests run without ASLR (translated code is cached by address)', spec: { accel: 'tcg' }, check: (a) => assert.match(valueAfter(a, '-append')!, / norandmaps /) },
  { name: 'KVM guests keep ASLR', spec: { accel: 'kvm' }, check: (a) => assert.doesNotMatch(valueAfter(a, '-append')!, /norandmaps/) },
  { name: 'hostname on the kernel command line', spec: { hostname: 'web-1' }, check: (a) => assert.match(valueAfter(a, '-append')!, / sandboxvm\.hostname=web-1$/) },
  { name: 'commas in the disk path are doubled', spec: { disk: '/a,b/disk.qcow2' }, check: (a) => assert.ok(valueAfter(a, '-drive')!.startsWith('id=root,file=/a,,b/disk.qcow2,format=qcow2')) },
  { name: 'console log appends', spec: { consoleLog: '/x,y/console.log' }, check: (a) => assert.equal(valueAfter(a, '-chardev'), 'file,id=console,path=/x,,y/console.log,append=on') },
  { name: 'serial line on an inherited listening socket, still logged to console.log, vCPUs held until cont', spec: { serialFd: 5, consoleLog: '/x,y/console.log' }, check: (a) => {
    assert.equal(valueAfter(a, '-chardev'), 'socket,id=console,fd=5,server=on,wait=off,logfile=/x,,y/console.log,logappend=on');
    assert.equal(valueAfter(a, '-serial'), 'chardev:console');
    assert.ok(a.includes('-S'));
  } },
  { name: 'a restore with the serial socket is held by -incoming, not -S', spec: { serialFd: 5, incomingFile: '/v/saved.state' }, check: (a) => assert.equal(a.includes('-S'), false) },
  { name: 'isolated: no netdev and no NIC', spec: { network: 'isolated', passtFd: 6 }, check: (a) => (assert.equal(a.includes('-netdev'), false), assert.equal(a.some((x) => x.includes('virtio-net')), false)) },
  { name: 'host: user-mode networking (10.0.2.2 is the host loopback) on virtio-net', spec: { network: 'host' }, check: (a) => (assert.equal(valueAfter(a, '-netdev'), 'user,id=net0'), assert.ok(a.includes('virtio-net-device,netdev=net0'))) },
  { name: 'internet: a stream netdev on the inherited passt socket, never user networking', spec: { network: 'internet', passtFd: 6 }, check: (a) => {
    assert.equal(valueAfter(a, '-netdev'), 'stream,id=net0,server=off,addr.type=fd,addr.str=6');
    assert.ok(a.includes('virtio-net-device,netdev=net0'));
    assert.equal(a.some((x) => x.startsWith('user,')), false);
  } },
  { name: 'internet on QEMU before 7.2: the socket netdev (same framing)', spec: { network: 'internet', passtFd: 7, legacySocketNetdev: true }, check: (a) => assert.equal(valueAfter(a, '-netdev'), 'socket,id=net0,fd=7') },
  { name: 'no vsock device unless asked', spec: {}, check: (a) => assert.equal(a.some((x) => x.includes('vsock')), false) },
  { name: 'a vhost-vsock device with the CID', spec: { vsockCid: 42 }, check: (a) => assert.ok(a.includes('vhost-vsock-device,guest-cid=42')) },
  { name: 'no -incoming on a cold boot', spec: {}, check: (a) => assert.equal(a.includes('-incoming'), false) },
  { name: 'restore reads the saved state through a quoted path', spec: { incomingFile: "/v/it's/saved.state" }, check: (a) => assert.equal(valueAfter(a, '-incoming'), `exec:cat '/v/it'\\''s/saved.state'`) },
  { name: 'the NIC takes the MAC it is given', spec: { network: 'host', mac: '52:54:00:ab:cd:ef' }, check: (a) => assert.ok(a.includes('virtio-net-device,netdev=net0,mac=52:54:00:ab:cd:ef')) },
  { name: 'RAM in a shared file (a template) keeps the machine RAM id', spec: { memoryMiB: 1024, memoryFile: { path: '/t,x/ram', share: true } }, check: (a) => {
    assert.equal(valueAfter(a, '-object'), 'memory-backend-file,id=microvm.ram,size=1024M,mem-path=/t,,x/ram,share=on');
    assert.equal(valueAfter(a, '-M'), 'microvm,pit=on,pic=on,rtc=on,memory-backend=microvm.ram');
  } },
  { name: 'a restore from a template maps its RAM file privately and defers the incoming side', spec: { memoryFile: { path: '/t/ram', share: false }, incomingDefer: true, incomingFile: '/v/saved.state', serialFd: 5 }, check: (a) => {
    assert.match(valueAfter(a, '-object')!, /share=off$/);
    assert.equal(valueAfter(a, '-incoming'), 'defer');
    assert.equal(a.includes('-S'), false);
  } },
  { name: 'anonymous RAM by default: no backend object', spec: {}, check: (a) => (assert.equal(a.includes('-object'), false), assert.equal(valueAfter(a, '-M'), 'microvm,pit=on,pic=on,rtc=on')) },
  { name: 'never reboots, never opens a window', spec: {}, check: (a) => (assert.ok(a.includes('-no-reboot')), assert.ok(a.includes('-nographic')), assert.ok(a.includes('-nodefaults'))) },
];

for (const c of cases) {
  test(`argv: ${c.name}`, () => c.check(buildQemuArgv({ ...base, ...c.spec })));
}

test('argv: escapeOption and shellQuote', () => {
  assert.equal(escapeOption('a,b,,c'), 'a,,b,,,,c');
  assert.equal(shellQuote('plain'), "'plain'");
  assert.equal(shellQuote("a'b"), `'a'\\''b'`);
});

import { chooseTransport, guestCid } from '../../runtime/accel/transport';

test('transport: vsock only where vhost-vsock is usable, and only if not overridden', () => {
  assert.equal(chooseTransport(false).transport, 'virtio-serial');
  assert.equal(chooseTransport(true).transport, 'vsock');
  assert.equal(chooseTransport(true, 'virtio-serial').transport, 'virtio-serial');
  assert.equal(chooseTransport(false, 'vsock').transport, 'virtio-serial', 'asking cannot force vsock without the device');
});

test('transport: guest CIDs are stable and never reserved', () => {
  assert.equal(guestCid('0000002a-aaaa'), guestCid('0000002a-aaaa'));
  for (const id of ['00000000-0', 'ffffffff-f', '00000001-1', 'not-hex']) assert.ok(guestCid(id) >= 3, id);
});

test('argv: macForVm is stable per id, differs between ids, and is a locally administered unicast address', () => {
  const a = macForVm('8e4c1f2a-0000-4000-8000-000000000001');
  assert.equal(a, macForVm('8e4c1f2a-0000-4000-8000-000000000001'));
  assert.notEqual(a, macForVm('8e4c1f2a-0000-4000-8000-000000000002'));
  assert.match(a, /^52:54:00(:[0-9a-f]{2}){3}$/);
});
