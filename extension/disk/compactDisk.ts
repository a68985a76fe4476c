/**
 * Compact Disk: gives back the host space a VM's disk no longer uses (vm.compact: fstrim in a
 * running guest, a rewrite of a stopped or saved VM's disk), with progress, then says in one
 * sentence what it freed.
 */
import * as vscode from 'vscode';
import type { CommandDeps } from '../commands/deps';
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withServiceProgress } from '../ui/progress';
import { formatBytes } from '../tree/diskUse';

export async function compactDisk(deps: CommandDeps, target?: VmTarget): Promise<number | undefined> {
  const vm = await pickVm(deps.model, target, ['running', 'saved', 'stopped'], 'compact the disk of');
  if (!vm) return undefined;
  const client = await deps.connection.client();
  const r = await withServiceProgress(`Compacting ${vm}'s disk`, (report) => client.compact(vm, report));
  deps.log.info(`compacted ${vm} (${r.method}): ${r.beforeBytes} -> ${r.afterBytes} bytes in ${r.elapsedMs} ms`);
  const how = r.method === 'trim' ? 'the guest trimmed its free space' : 'its disk was rewritten';
  void vscode.window.showInformationMessage(`${vm}: ${how}; ${formatBytes(r.reclaimedBytes)} given back to the host (${formatBytes(r.afterBytes)} used now).`);
  return r.reclaimedBytes;
}
