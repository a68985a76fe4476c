/** Open Terminal: a login shell on the VM's pty in VS Code's terminal panel; Show Terminal focuses one. */
import type { GuestTerminal } from '../terminals/terminalManager';
import type { Node } from '../tree/vmTreeProvider';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

export async function openTerminal(deps: CommandDeps, target?: VmTarget): Promise<GuestTerminal | undefined> {
  const name = await pickVm(deps.model, target, ['running'], 'open a terminal on');
  if (!name) return undefined;
  return deps.terminals.open(name);
}

export async function focusTerminal(deps: CommandDeps, node?: Node): Promise<void> {
  if (node?.kind === 'terminal') deps.terminals.get(node.terminalId)?.terminal?.show();
}
