/** unit: the CLI's pure parsers and messages (durations, sizes, wrong states, Ctrl-C counting). */
import { describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { MAX_TIMEOUT_MS, formatDuration, parseTimeout } from '../../runtime/cli/duration';
import { InterruptCounter } from '../../runtime/cli/interrupts';
import { wrongStateMessage } from '../../runtime/common/stateMessages';
import { parseDiskGiB, parseSizeMiB } from '../../runtime/common/config';

describe('unit: cli messages', () => {
  test('timeouts', () => {
    const cases: [string, number | undefined][] = [
      ['30s', 30_000], ['30', 30_000], ['500ms', 500], ['2m', 120_000], ['1.5h', 5_400_000], ['7d', MAX_TIMEOUT_MS],
      ['0', undefined], ['0s', undefined], ['0ms', undefined], ['0.0001ms', 1], [' 5s ', 5000],
    ];
    for (const [text, ms] of cases) assert.equal(parseTimeout(text), ms, text);
    assert.equal(parseTimeout(undefined), undefined);
    assert.throws(() => parseTimeout('8d'), /--timeout 8d is past the limit of 7 days/);
    assert.throws(() => parseTimeout('604800001ms'), /past the limit of 7 days/);
    for (const bad of ['', 'soon', '-5s', '5 minutes', '1e3', '5sec']) assert.throws(() => parseTimeout(bad), /invalid --timeout .*0 for no timeout/, bad);
  });

  test('disk sizes are whole GiB, and the messages say so', () => {
    const cases: [string, number][] = [['10G', 10], ['1T', 1024], ['20480M', 20], ['2GiB', 2], ['4g', 4], ['1.5T', 1536]];
    for (const [text, gib] of cases) assert.equal(parseDiskGiB(text), gib, text);
    assert.throws(() => parseDiskGiB('1K'), /disk size must be whole GiB: 1K is not; use e.g. 10G/);
    assert.throws(() => parseDiskGiB('512M'), /disk size must be whole GiB: 512M is not; use e.g. 10G/);
    assert.throws(() => parseDiskGiB('1.5G'), /disk size must be whole GiB/);
    assert.throws(() => parseDiskGiB('20'), /a number without a unit is MiB; did you mean 20G\?/);
    assert.throws(() => parseDiskGiB('big'), /invalid disk size "big": use whole GiB, e.g. 10G/);
  });

  test('memory sizes are whole MiB', () => {
    assert.equal(parseSizeMiB('2G', 'memory size'), 2048);
    assert.throws(() => parseSizeMiB('1K', 'memory size'), /memory size must be whole MiB: 1K is not/);
  });

  test('durations in messages', () => {
    assert.equal(formatDuration(500), '500 ms');
    assert.equal(formatDuration(5000), '5 s');
    assert.equal(formatDuration(90_000), '1.5 min');
    assert.equal(formatDuration(7_200_000), '2 h');
  });

  test('Ctrl-C: forward, detach within a second, kill; a pause starts over', () => {
    const c = new InterruptCounter(1000);
    assert.equal(c.next(0), 'forward');
    assert.equal(c.next(1500), 'forward');
    assert.equal(c.next(2000), 'detach');
    assert.equal(c.next(2900), 'kill');
    assert.equal(c.next(3000), 'kill');
    assert.equal(c.next(9000), 'forward');
  });

  test('wrong states say the way out', () => {
    assert.equal(wrongStateMessage('b3', 'paused', 'attach to', ['running']), 'b3 is paused; resume it with `sandboxvm resume b3`');
    assert.equal(wrongStateMessage('b3', 'stopped', 'attach to', ['running']), 'b3 is stopped; start it with `sandboxvm start b3`');
    assert.equal(wrongStateMessage('b3', 'saved', 'attach to', ['running']), 'b3 is saved; `sandboxvm start b3` restores it');
    assert.equal(wrongStateMessage('b3', 'stopped', 'pause', ['running']), 'cannot pause b3: it is stopped; start it with `sandboxvm start b3`');
    assert.equal(wrongStateMessage('b3', 'running', 'start', ['stopped', 'saved']), 'b3 is running already');
    assert.equal(wrongStateMessage('b3', 'paused', 'pause', ['running']), 'b3 is paused already');
    assert.equal(wrongStateMessage('b3', 'saved', 'pause', ['running']), 'cannot pause b3: it is saved; `sandboxvm start b3` restores it');
    assert.equal(wrongStateMessage('b3', 'starting', 'save', ['running', 'paused']), 'cannot save b3: it is starting (allowed when running or paused); try again when that is done');
  });
});
