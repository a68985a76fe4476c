/** create, start, stop, pause, resume, restart, save, rm: thin calls into the service. */
import { ErrorCode, SandboxError } from '../../common/errors';
import { parseSizeMiB } from '../../common/config';
import type { ServiceClient } from '../../client/serviceClient';
import type { CommandContext } from '../context';
import { ProgressBar } from '../progress';

export async function create(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const o = ctx.options;
  const cpus = o.cpus !== undefined ? parseInteger(String(o.cpus), 'cpus') : undefined;
  const memoryMiB = o.memory !== undefined ? parseSizeMiB(String(o.memory), 'memory size') : undefined;
  const diskMiB = o.disk !== undefined ? parseSizeMiB(String(o.disk), 'disk size') : undefined;
  if (diskMiB !== undefined && diskMiB % 1024 !== 0) throw new SandboxError(ErrorCode.BadArgument, `disk size must be whole GiB (got ${o.disk})`);
  const client = await ctx.client();
  const bar = new ProgressBar(`Creating ${name}`);
  try {
    await client.create({ name, cpus, memoryMiB, diskGiB: diskMiB === undefined ? undefined : diskMiB / 1024, network: !o['no-network'] }, (s, t, m) => bar.update(s, t, m));
  } finally {
    bar.done();
  }
  ctx.out(`Created ${name}. Start it with: sandboxvm start ${name}`);
  return 0;
}

export async function start(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const client = await ctx.client();
  const bar = new ProgressBar(`Starting ${name}`);
  const t0 = Date.now();
  let info;
  try {
    info = await client.start(name, (s, t, m) => bar.update(s, t, m));
  } finally {
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
  try {
    await client.restart(name, (s, t, m) => bar.update(s, t, m));
  } finally {
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
