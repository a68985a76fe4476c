/**
 * `sandboxvm port ...`: port forwarding from the host's 127.0.0.1 (or an address asked for) to a
 * VM's TCP ports. Forwards are kept in the VM's configuration and come back with every start,
 * restore and worker takeover; the guest's listening ports are also forwarded automatically unless
 * that is turned off (`port auto <vm> off`).
 *
 *   port add <vm> <guest-port>[:<host-port>] [--address A]
 *   port list [vm] [--json]
 *   port remove <vm> <host-port>
 *   port auto <vm> on|off
 */
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import { checkBindAddress, describeForward, isPort, parseForwardSpec, formatAddress } from '../../common/ports';
import type { PortList } from '../../service/portApi';
import type { CommandContext } from '../context';

export const PORT_USAGE = 'port add <vm> <guest-port>[:<host-port>] [--address A] | list [vm] [--json] | remove <vm> <host-port> | auto <vm> on|off';

function arg(ctx: CommandContext, i: number, what: string): string {
  const v = ctx.positionals[i];
  if (v === undefined) throw new SandboxError(ErrorCode.BadArgument, `port ${ctx.positionals[0]} needs ${what}: sandboxvm ${PORT_USAGE.split(' | ').find((u) => u.includes(ctx.positionals[0] ?? '')) ?? PORT_USAGE}`);
  return v;
}

export async function port(ctx: CommandContext): Promise<number> {
  const action = ctx.positionals[0];
  switch (action) {
    case 'add': {
      const vm = validateVmName(arg(ctx, 1, 'a VM name'));
      const { guestPort, hostPort } = parseForwardSpec(arg(ctx, 2, 'a port'));
      const address = typeof ctx.options.address === 'string' ? checkBindAddress(ctx.options.address) : undefined;
      const f = await (await ctx.client()).addPort(vm, guestPort, { hostPort, address });
      ctx.out(f ? `Forwarding ${formatAddress(f.address, f.hostPort)} to port ${f.guestPort} of ${vm}${f.state === 'inactive' ? ' (from its next start)' : ''}.` : `Added the forward to ${vm}.`);
      if (f?.guestListening === false) ctx.out(`Nothing listens on port ${guestPort} in ${vm} yet; connections are refused until something does.`);
      return 0;
    }
    case 'remove':
    case 'rm': {
      const vm = validateVmName(arg(ctx, 1, 'a VM name'));
      const hostPort = Number(arg(ctx, 2, 'the host port'));
      if (!isPort(hostPort)) throw new SandboxError(ErrorCode.BadArgument, `invalid host port ${JSON.stringify(ctx.positionals[2])}: a number between 1 and 65535`);
      await (await ctx.client()).removePort(vm, hostPort);
      ctx.out(`Stopped forwarding host port ${hostPort} to ${vm}.`);
      return 0;
    }
    case 'auto': {
      const vm = validateVmName(arg(ctx, 1, 'a VM name'));
      const value = arg(ctx, 2, 'on or off');
      if (value !== 'on' && value !== 'off') throw new SandboxError(ErrorCode.BadArgument, `port auto takes on or off, not ${JSON.stringify(value)}`);
      await (await ctx.client()).setAutoForward(vm, value === 'on');
      ctx.out(`Automatic forwarding of ${vm}'s listening ports is ${value}.`);
      return 0;
    }
    case 'list':
    case 'ls': {
      const vm = ctx.positionals[1] === undefined ? undefined : validateVmName(ctx.positionals[1]);
      const lists = await (await ctx.client()).listPorts(vm);
      if (ctx.options.json) ctx.out(JSON.stringify(vm ? lists[0] : lists));
      else for (const line of formatPortLists(lists)) ctx.out(line);
      return 0;
    }
    case undefined:
      throw new SandboxError(ErrorCode.BadArgument, `port needs an action: sandboxvm ${PORT_USAGE}`);
    default:
      throw new SandboxError(ErrorCode.BadArgument, `unknown port action ${JSON.stringify(action)}: use add, list, remove or auto`);
  }
}

/** One line per forward, under a heading per VM that has any (or says it has none). */
export function formatPortLists(lists: readonly PortList[]): string[] {
  const lines: string[] = [];
  for (const l of lists) {
    lines.push(`${l.vm} (${l.state}; automatic forwarding ${l.auto ? 'on' : 'off'})`);
    if (l.forwards.length === 0) lines.push(`  no forwards${l.state === 'running' ? (l.auto ? ' (nothing listens in the guest)' : '') : ''}`);
    for (const f of l.forwards) lines.push(`  ${f.origin.padEnd(6)} ${describeForward(f)}${f.connections > 0 ? `  ${f.connections} connection(s)` : ''}`);
  }
  return lines;
}
