/** Start: boots a stopped VM or restores a saved one, with the service's boot steps as progress. */
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withServiceProgress } from '../ui/progress';
import type { CommandDeps } from './deps';

export async function startVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['stopped', 'saved'], 'start');
  if (!name) return;
  const client = await deps.connection.client();
  const restoring = deps.model.get(name)?.state === 'saved';
  const t0 = Date.now();
  const info = await withServiceProgress(`${restoring ? 'Restoring' : 'Starting'} ${name}`, (report) => client.start(name, report));
  deps.log.info(`${name} is running (${info.runtime?.boot?.kind ?? 'boot'} in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${info.runtime?.accel})`);
}
