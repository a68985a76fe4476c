/** Pause and Resume: the VM's CPUs stop and go on; memory and sessions stay as they are. */
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

export async function pauseVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['running'], 'pause');
  if (name) await (await deps.connection.client()).pause(name);
}

export async function resumeVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['paused'], 'resume');
  if (name) await (await deps.connection.client()).resume(name);
}
