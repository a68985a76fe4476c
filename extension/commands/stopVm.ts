/** Stop (graceful: agent, then ACPI, then kill, as the service does) and Turn Off (at once). */
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withServiceProgress } from '../ui/progress';
import type { CommandDeps } from './deps';

export async function stopVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['running', 'paused'], 'stop');
  if (!name) return;
  const client = await deps.connection.client();
  await withServiceProgress(`Stopping ${name}`, () => client.stop(name, false));
}

export async function turnOffVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['running', 'paused', 'starting', 'stopping', 'saving'], 'turn off');
  if (!name) return;
  const client = await deps.connection.client();
  await client.stop(name, true);
}
