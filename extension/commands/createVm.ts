/** Create VM: the wizard (or values passed in), then the service's create with progress. */
import { DEFAULTS, parseNetworkPolicy, type NetworkPolicy } from '../../runtime/common/config';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import { Setting } from '../ids';
import { cpusError, diskError, memoryError, nameError, parseDiskGiB, parseMemoryMiB } from '../ui/createValidation';
import { createWizard, type CreateAnswers } from '../ui/createWizard';
import { withServiceProgress } from '../ui/progress';
import * as os from 'node:os';
import type { CommandDeps } from './deps';

/** Values given without the wizard (tests, other extensions); checked as the wizard checks them. */
export interface CreateArgs {
  name: string;
  cpus?: number;
  memory?: string;
  disk?: string;
  network?: string;
}

/** The policy a new VM gets: given, else the `defaults.network` setting; a bad value is refused. */
function networkFor(deps: CommandDeps, given?: string): NetworkPolicy {
  return parseNetworkPolicy(given ?? deps.settings().get<string>(Setting.defaultNetwork, DEFAULTS.network));
}

function fromArgs(deps: CommandDeps, args: CreateArgs): CreateAnswers {
  const s = deps.settings();
  const cpus = String(args.cpus ?? s.get<number>(Setting.defaultCpus, DEFAULTS.cpus));
  const memory = args.memory ?? s.get<string>(Setting.defaultMemory, '1G');
  const disk = args.disk ?? s.get<string>(Setting.defaultDisk, '10G');
  const error =
    nameError(args.name, (n) => !!deps.model.get(n)) ??
    cpusError(cpus, os.cpus().length) ??
    memoryError(memory, Math.floor(os.totalmem() / 1048576)) ??
    diskError(disk);
  if (error) throw new SandboxError(ErrorCode.BadArgument, `cannot create ${JSON.stringify(args.name)}: ${error.charAt(0).toLowerCase()}${error.slice(1)}`);
  return { name: args.name, cpus: Number(cpus), memoryMiB: parseMemoryMiB(memory)!, diskGiB: parseDiskGiB(disk)! };
}

export async function createVm(deps: CommandDeps, _node?: unknown, args?: CreateArgs): Promise<string | undefined> {
  let answers: CreateAnswers | undefined;
  const network = networkFor(deps, args?.network);
  if (args && typeof args.name === 'string') {
    answers = fromArgs(deps, args);
  } else {
    const s = deps.settings();
    answers = await createWizard(
      { cpus: s.get<number>(Setting.defaultCpus, DEFAULTS.cpus), memory: s.get<string>(Setting.defaultMemory, '1G'), disk: s.get<string>(Setting.defaultDisk, '10G') },
      (n) => !!deps.model.get(n),
    );
  }
  if (!answers) return undefined;
  const client = await deps.connection.client();
  const a = answers;
  await withServiceProgress(`Creating ${a.name}`, (report) => client.create({ name: a.name, cpus: a.cpus, memoryMiB: a.memoryMiB, diskGiB: a.diskGiB, network }, report));
  if (!deps.settings().get<boolean>(Setting.autoForwardPorts, true)) await client.setAutoForward(a.name, false);
  deps.log.info(`created ${a.name} (${a.cpus} CPUs, ${a.memoryMiB} MiB, ${a.diskGiB} GiB, network ${network})`);
  return a.name;
}
