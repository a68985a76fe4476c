/** create, start, stop, pause, resume, restart, save, rm: thin calls into the service. */
import { ErrorCode, SandboxError } from '../../common/errors';
import { LIMITS, NETWORK_POLICY_DESCRIPTIONS, parseDiskGiB, parseNetworkPolicy, parseSizeMiB, type NetworkPolicy } from '../../common/config';
import { formatMiB } from '../format';
import type { ServiceClient } from '../../client/serviceClient';
import type { CommandContext } from '../context';
import { ProgressBar } from '../progress';

export async function create(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const o = ctx.options;
  const cpus = o.cpus !== undefined ? parseInteger(String(o.cpus), 'cpus') : undefined;
  const memoryMiB = o.memory !== undefined ? parseSizeMiB(String(o.memory), 'memory size') : undefined;
  const diskGiB = o.disk !== undefined ? parseDiskGiB(String(o.disk)) : undefined;
  const network = networkOption(o.network, !!o['no-network']);
  const [minMiB, maxMiB] = LIMITS.memoryMiB;
  if (memoryMiB !== undefined && (memoryMiB < minMiB || memoryMiB > maxMiB)) {
    throw new SandboxError(ErrorCode.BadArgument, `memory must be between ${formatMiB(minMiB)} and ${formatMiB(maxMiB)} (got ${o.memory})`);
  }
  const client = await ctx.client();
  const bar = new ProgressBar(`Creating ${name}`);
  try {
    await client.create({ name, cpus, memoryMiB, diskGiB, network }, (s, t, m) => bar.update(s, t, m));
  } finally {
    bar.done();
  }
  ctx.out(`Created ${name}. Start it with: sandboxvm start ${name}`);
  return 0;
}

/** --network's policy; --no-network (the option before policies) is `isolated`. */
function networkOption(value: unknown, none: boolean): NetworkPolicy | undefined {
  if (none && value !== undefined && value !== 'isolated') {
    throw new SandboxError(ErrorCode.BadArgument, `--no-network and --network ${value} contradict each other; give one (--no-network is --network isolated)`);
  }
  if (none) return 'isolated';
  return value === undefined ? undefined : parseNetworkPolicy(value);
}

/** `set <vm> --network <policy>`: a stopped VM's configuration, used from its next start. */
export async function set(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const o = ctx.options;
  if (o.network === undefined && o['undo-points'] === undefined && o['undo-disk'] === undefined) {
    throw new SandboxError(ErrorCode.BadArgument, `nothing to set: give --network isolated, internet or host, --undo-points N or --undo-disk SIZE (e.g. sandboxvm set ${name} --network host)`);
  }
  const network = o.network === undefined ? undefined : parseNetworkPolicy(o.network);
  const undoMaxCount = o['undo-points'] === undefined ? undefined : parseInteger(String(o['undo-points']), 'undo points');
  const undoMaxDiskMiB = o['undo-disk'] === undefined ? undefined : parseSizeMiB(String(o['undo-disk']), 'undo-point disk budget');
  const client = await ctx.client();
  const info = await client.set({ name, network, undoMaxCount, undoMaxDiskMiB });
  if (network) ctx.out(`${name}: network policy ${network} (${NETWORK_POLICY_DESCRIPTIONS[network]}), from its next start.`);
  if (undoMaxCount !== undefined || undoMaxDiskMiB !== undefined) {
    const u = info.config.undoPoints;
    ctx.out(`${name}: keeps at most ${u?.maxCount ?? 'the default number of'} undo points and ${u?.maxDiskMiB !== undefined ? `${u.maxDiskMiB} MiB` : 'the default disk budget'} of them (0 restores a default).`);
  }
  return 0;
}

/**
 * Ctrl-C while the service boots a VM stops the waiting, not the VM: the service carries on.
 * Says so, with how to stop it, and exits 130. Returns the undo.
 */
function interruptLeavesRunning(name: string, bar: ProgressBar, doing: string): () => void {
  const onSigint = () => {
    bar.done();
    process.stderr.write(`\nsandboxvm: stopped waiting; ${name} keeps ${doing} in the background (\`sandboxvm stop ${name}\` stops it)\n`);
    process.exit(130);
  };
  process.once('SIGINT', onSigint);
  return () => process.off('SIGINT', onSigint);
}

export async function start(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const client = await ctx.client();
  const bar = new ProgressBar(`Starting ${name}`);
  const t0 = Date.now();
  const undo = interruptLeavesRunning(name, bar, 'starting');
  let info;
  try {
    info = await client.start(name, (s, t, m) => bar.update(s, t, m));
  } finally {
    undo();
    bar.done();
  }
  const boot = info.runtime?.boot;
  ctx.out(`${name} is running (${boot?.kind === 'restore' ? 'restored' : 'booted'} in ${((Date.now() - t0) / 1000).toFixed(1)} s, ${info.runtime?.accel}).`);
  return 0;
}

export async function stop(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const client = await ctx.client();
  const before = await client.info(name);
  await client.stop(name, !!ctx.options.force);
  ctx.out(before.state === 'saved' ? `${name}: saved state discarded; it is stopped.` : `${name} is stopped.`);
  return 0;
}

export function simple(verb: 'pause' | 'resume' | 'save', done: string) {
  return async (ctx: CommandContext): Promise<number> => {
    const name = ctx.name();
    const client: ServiceClient = await ctx.client();
    await client[verb](name);
    ctx.out(`${name} ${done}.`);
    return 0;
  };
}

export async function restart(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const client = await ctx.client();
  const bar = new ProgressBar(`Restarting ${name}`);
  const undo = interruptLeavesRunning(name, bar, 'restarting');
  try {
    await client.restart(name, (s, t, m) => bar.update(s, t, m));
  } finally {
    undo();
    bar.done();
  }
  ctx.out(`${name} is running.`);
  return 0;
}

export async function remove(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const client = await ctx.client();
  await client.remove(name, !!ctx.options.force);
  ctx.out(`Removed ${name}.`);
  return 0;
}

function parseInteger(text: string, what: string): number {
  if (!/^\d+$/.test(text)) throw new SandboxError(ErrorCode.BadArgument, `invalid ${what} ${JSON.stringify(text)}: use a whole number`);
  return Number(text);
}
