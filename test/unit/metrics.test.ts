/** unit: metrics parsing: QEMU's /proc/<pid>/stat, and the guest's `metrics` answer (the guest is hostile). */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import { parseProcStat } from '../../runtime/worker/metrics';
import { checkCallResult } from '../../runtime/protocol/messages';

test('proc stat: utime+stime and rss, with a command name holding spaces and parentheses', () => {
  const rest = 'S 1 2 3 0 -1 4194560 100 0 0 0 1234 567 0 0 20 0 3 0 500 900000000 88000 18446744073709551615';
  assert.deepEqual(parseProcStat(`4242 (qemu-system-x86) ${rest}`), { ticks: 1801, rssPages: 88000 });
  assert.deepEqual(parseProcStat(`4242 (a) b (c) ${rest}`), { ticks: 1801, rssPages: 88000 });
  assert.equal(parseProcStat('garbage'), undefined);
  assert.equal(parseProcStat('1 (x) S 1 2'), undefined);
});

test('guest metrics: well-formed figures pass; anything else is rejected with a reason', () => {
  const good = { memory: { totalBytes: 500e6, availableBytes: 400e6 }, rootfs: { totalBytes: 4e9, availableBytes: 3e9, usedBytes: 1e9 } };
  assert.equal(checkCallResult('metrics', good), undefined);
  const bad: unknown[] = [
    null,
    'x',
    {},
    { ...good, memory: { totalBytes: 1, availableBytes: 2 } },
    { ...good, memory: { totalBytes: -1, availableBytes: 0 } },
    { ...good, memory: { totalBytes: 1.5, availableBytes: 0 } },
    { ...good, memory: { totalBytes: '1', availableBytes: 0 } },
    { ...good, memory: { totalBytes: 2 ** 60, availableBytes: 0 } },
    { ...good, rootfs: { totalBytes: 10, availableBytes: 5, usedBytes: 11 } },
    { ...good, rootfs: { totalBytes: 10, availableBytes: 5 } },
  ];
  for (const v of bad) assert.match(checkCallResult('metrics', v) ?? '', /metrics:/, JSON.stringify(v));
});
