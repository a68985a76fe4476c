/** The walkthrough in package.json: its buttons and completion events name real commands, its images exist and are small. */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command } from '../../extension/ids';

const REPO = path.resolve(__dirname, '..', '..');
const pkg = JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8'));
const commands = new Set<string>(Object.values(Command));

const contextKeys = ['sandboxvm.vmCount > 0', 'sandboxvm.walkthrough.terminalOpened', 'sandboxvm.walkthrough.saved'];

test('walkthrough: create a VM, open a terminal, save and restore, each completed by its command or by what it does', () => {
  const [w] = pkg.contributes.walkthroughs;
  assert.deepEqual(w.steps.map((s: any) => s.id), ['createVm', 'openTerminal', 'saveRestore']);
  const expected = [Command.create, Command.openTerminal, Command.save];
  w.steps.forEach((s: any, i: number) => {
    assert.equal(s.completionEvents[0], `onCommand:${expected[i]}`);
    assert.equal(s.completionEvents[1], `onContext:${contextKeys[i]}`);
    for (const m of s.description.matchAll(/\(command:([^)?]+)\)/g)) assert.ok(commands.has(m[1]), `${s.id}: unknown command ${m[1]}`);
    const image = path.join(REPO, s.media.image);
    assert.ok(fs.existsSync(image), `${s.id}: ${s.media.image} is missing`);
    assert.ok(fs.statSync(image).size < 150_000, `${s.id}: ${s.media.image} is over 150 kB`);
    assert.equal(fs.readFileSync(image).subarray(1, 4).toString(), 'PNG');
    assert.ok(s.media.altText);
  });
});

test('the packaged extension carries the walkthrough images', () => {
  const ignore = fs.readFileSync(path.join(REPO, '.vscodeignore'), 'utf8');
  assert.match(ignore, /^!media\/\*\*$/m);
});
