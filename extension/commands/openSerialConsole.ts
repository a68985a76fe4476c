/** Open Serial Console: the VM's ttyS0 in a terminal, live from boot, usable without the agent. */
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import type { SerialConsole } from '../console/serialConsoles';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { CommandDeps } from './deps';

export async function openSerialConsole(deps: CommandDeps, target?: VmTarget): Promise<SerialConsole | undefined> {
  const name = await pickVm(deps.model, target, ['starting', 'running', 'paused'], 'open the serial console of');
  if (!name) return undefined;
  const state = deps.model.get(name)?.state;
  if (state === 'stopped' || state === 'saved') throw new SandboxError(ErrorCode.WrongState, `${name} is ${state}: start it to use its serial console.`);
  return deps.serialConsoles.show(name);
}
