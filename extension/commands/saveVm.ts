/** Save: the running state goes to disk and QEMU ends; Start restores it. */
import { pickVm, type VmTarget } from '../ui/pickVm';
import { withServiceProgress } from '../ui/progress';
import type { CommandDeps } from './deps';

export async function saveVm(deps: CommandDeps, target?: VmTarget): Promise<void> {
  const name = await pickVm(deps.model, target, ['running', 'paused'], 'save');
  if (!name) return;
  const client = await deps.connection.client();
  await withServiceProgress(`Saving ${name}`, () => client.save(name));
}
