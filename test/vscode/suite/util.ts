/** Helpers the suites share: waiting for a condition, the extension's API, a running VM. */
import * as assert from 'node:assert/strict';
import * as vscode from 'vscode';
import type { SandboxVmsApi } from '../../../extension/extension';
import { Command, EXTENSION_ID, View } from '../../../extension/ids';
import type { VmNode } from '../../../extension/tree/vmTreeProvider';

/** Resolves with `probe()`'s first defined value, checked on `event` and every 250 ms. */
export function until<T>(what: string, probe: () => T | undefined, event: (listener: () => void) => { dispose(): void }, timeoutMs: number): Promise<T> {
  const now = probe();
  if (now !== undefined) return Promise.resolve(now);
  return new Promise((resolve, reject) => {
    const check = () => {
      const v = probe();
      if (v === undefined) return;
      done();
      resolve(v);
    };
    const sub = event(check);
    const tick = setInterval(check, 250);
    const timer = setTimeout(() => {
      done();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
    }, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      clearInterval(tick);
      sub.dispose();
    };
  });
}

/** The activated extension, connected to its service. */
export async function extensionApi(): Promise<SandboxVmsApi> {
  const ext = vscode.extensions.getExtension<SandboxVmsApi>(EXTENSION_ID);
  assert.ok(ext, `extension ${EXTENSION_ID} is not loaded`);
  const api = await ext.activate();
  await vscode.commands.executeCommand(`${View.machines}.focus`);
  await api.connection.client();
  return api;
}

/** The markdown (or text) of VM `name`'s tooltip in the view, resolved as VS Code resolves it on hover. */
export function vmTooltip(api: SandboxVmsApi, name: string): string | undefined {
  const node = api.tree.getChildren().find((n) => n.kind === 'vm' && n.name === name) as VmNode | undefined;
  const t = node && api.tree.resolveTreeItem(api.tree.getTreeItem(node), node).tooltip;
  return t instanceof vscode.MarkdownString ? t.value : t;
}

/** `name` running with its agent answering: created and started when it is not. */
export async function runningVm(api: SandboxVmsApi, name: string): Promise<void> {
  if (!api.model.get(name)) await vscode.commands.executeCommand(Command.create, undefined, { name, cpus: 1, memory: '512M', disk: '10G' });
  if (api.model.get(name)?.state !== 'running') await vscode.commands.executeCommand(Command.start, name);
  const info = await api.model.waitFor(name, (i) => i?.state === 'running' && !!i.runtime?.agent.connected, 240_000);
  assert.ok(info, `${name} runs`);
}

/** The VM the copy and reload suites share (booted once). */
export const SHARED_VM = 'vscode-keep';

/** A loop that prints a numbered line every 0.2 s, and the numbers a terminal's text shows. */
export const LOOP = 'i=0; while :; do i=$((i+1)); echo "tick-$i"; sleep 0.2; done';
export const ticks = (text: string) => [...text.matchAll(/tick-(\d+)\r\n/g)].map((m) => Number(m[1]));
