/** Restart: stop (graceful) and boot again, as one operation of the service. */
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withServiceProgress } from '../ui/progress';
import type { CommandDeps } from './deps';

export async function restartVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['running', 'paused'], 'restart');
  if (!name) return;
  const client = await deps.connection.client();
  await withServiceProgress(`Restarting ${name}`, (report) => client.restart(name, report));
}
