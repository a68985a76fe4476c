/**
 * Show What This Machine Lacks: a modal listing each missing piece (QEMU, what the image build
 * needs) with the command that fixes it; "Copy Commands" puts those commands on the clipboard.
 */
import * as vscode from 'vscode';
import type { CommandDeps } from './deps';

/** Resolves to the requirements shown (empty when nothing is missing). */
export async function showRequirements(deps: CommandDeps): Promise<string[]> {
  await deps.host.refresh();
  const items = deps.host.requirements;
  if (!items.length) {
    deps.notify.info('This machine has everything Sandbox VMs needs.');
    return [];
  }
  const detail = items.map((r) => `${r.what}\nRun: ${r.fix}`).join('\n\n');
  const copy = 'Copy Commands';
  const choice = await vscode.window.showWarningMessage('What this machine lacks', { modal: true, detail }, copy);
  if (choice === copy) await vscode.env.clipboard.writeText([...new Set(items.map((r) => r.fix))].join('\n') + '\n');
  return items.map((r) => r.what);
}
