/** Show Details: the VM's details panel (live CPU and memory plots, uptime, guest info), revealed if open. */
import type { DetailsPanel } from '../details/detailsPanel';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

export async function showDetails(deps: CommandDeps, target?: VmTarget): Promise<DetailsPanel | undefined> {
  const name = await pickVm(deps.model, target, ['stopped', 'starting', 'running', 'paused', 'saving', 'saved', 'stopping'], 'show the details of');
  if (!name) return undefined;
  return deps.details.show(name);
}
