/**
 * unit: package.json's `contributes` and extension/ids.ts name the same commands, views, settings,
 * context keys and terminal profile, both ways; menus only use known commands and contextValues;
 * activation is never `*`.
 */
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Command, ContextKey, EXTENSION_ID, ItemContext, SECTION, Setting, TerminalProfile, View, ViewContainer } from '../../extension/ids';
import { vmActions } from '../../extension/ui/vmActions';

const pkg = JSON.parse(fs.readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8'));
const c = pkg.contributes;
const sorted = (xs: Iterable<string>) => [...xs].sort();

test('the extension id is publisher.name', () => {
  assert.equal(EXTENSION_ID, `${pkg.publisher}.${pkg.name}`);
});

test('commands in package.json and ids.ts agree, each with the category', () => {
  assert.deepEqual(sorted(c.commands.map((x: any) => x.command)), sorted(Object.values(Command)));
  for (const cmd of c.commands) assert.equal(cmd.category, 'Sandbox VMs', cmd.command);
});

test('views and the container agree', () => {
  assert.deepEqual(Object.keys(c.viewsContainers.activitybar.reduce((o: any, v: any) => ({ ...o, [v.id]: 1 }), {})), Object.values(ViewContainer));
  assert.deepEqual(sorted(Object.values<any[]>(c.views).flat().map((v) => v.id)), sorted(Object.values(View)));
  for (const v of c.viewsContainers.activitybar) assert.ok(fs.existsSync(path.join(__dirname, '..', '..', v.icon)), v.icon);
});

test('settings agree', () => {
  assert.deepEqual(sorted(Object.keys(c.configuration.properties)), sorted(Object.values(Setting).map((s) => `${SECTION}.${s}`)));
});

test('terminal profiles agree', () => {
  assert.deepEqual(c.terminal.profiles.map((p: any) => p.id), Object.values(TerminalProfile));
});

test('menus and welcome views use only known commands, views, context keys and item contexts', () => {
  const commands = new Set<string>(Object.values(Command));
  const views = new Set<string>(Object.values(View));
  const keys = new Set<string>(Object.values(ContextKey));
  const states = ['stopped', 'starting', 'running', 'paused', 'saving', 'saved', 'stopping'];
  const itemContexts = new Set<string>([...states.map(ItemContext.vm), ItemContext.terminal, ItemContext.port, ItemContext.forward, ItemContext.manualForward, ItemContext.failedManualForward, ItemContext.sync, ItemContext.checkpoints, ItemContext.checkpoint, ItemContext.undoPoint, ItemContext.undoPoints, ItemContext.now]);
  const checkWhen = (when: string | undefined, where: string) => {
    for (const m of (when ?? '').matchAll(/\bsandboxvm\.[A-Za-z.]+/g)) {
      assert.ok(keys.has(m[0]) || views.has(m[0]), `${where}: unknown key ${m[0]}`);
    }
    for (const m of (when ?? '').matchAll(/viewItem =~ \/\^\(([^)]*)\)Vm\$\//g)) {
      for (const s of m[1].split('|')) assert.ok(itemContexts.has(`${s}Vm`), `${where}: unknown state ${s}`);
    }
    for (const m of (when ?? '').matchAll(/viewItem == (\w+)/g)) assert.ok(itemContexts.has(m[1]), `${where}: unknown item ${m[1]}`);
    // Other item patterns must match some item this extension makes.
    for (const m of (when ?? '').matchAll(/viewItem =~ \/(\^vm[^/]*)\//g)) assert.ok([...itemContexts].some((i) => new RegExp(m[1]).test(i)), `${where}: ${m[1]} matches no item`);
  };
  for (const [menu, items] of Object.entries<any[]>(c.menus)) {
    for (const item of items) {
      assert.ok(commands.has(item.command), `${menu}: unknown command ${item.command}`);
      checkWhen(item.when, `${menu} ${item.command}`);
    }
  }
  for (const w of c.viewsWelcome) {
    assert.ok(views.has(w.view), w.view);
    checkWhen(w.when, `viewsWelcome ${w.contents}`);
    for (const m of w.contents.matchAll(/\(command:([^)?]+)[^)]*\)/g)) assert.ok(commands.has(m[1]) || m[1].startsWith('workbench.action.'), `welcome link ${m[1]}`);
  }
});

test('activation is cheap and the extension runs where the workspace is', () => {
  assert.ok(!(pkg.activationEvents ?? []).includes('*'));
  assert.deepEqual(pkg.extensionKind, ['workspace']);
  assert.equal(pkg.main, './dist/extension.js');
  assert.match(pkg.engines.vscode, /^\^1\.100\./);
});

test('the status bar actions of each state are the ones the tree offers on that state', () => {
  const states = ['stopped', 'starting', 'running', 'paused', 'saving', 'saved', 'stopping'] as const;
  const menu = c.menus['view/item/context'] as { command: string; when: string }[];
  for (const state of states) {
    const offered = new Set(menu.filter((m) => new RegExp(`/\\^\\(([^)]*\\|)?${state}(\\|[^)]*)?\\)Vm\\$/`).test(m.when)).map((m) => m.command));
    for (const action of vmActions(state)) assert.ok(offered.has(action.command), `${state}: ${action.command} is not in the tree's menu for ${state}Vm`);
  }
  assert.deepEqual(vmActions(undefined).map((a) => a.command), [Command.create]);
});
