/**
 * The service's port-forwarding API (api.ts lists it). Forwards live in the VM's vm.json (`ports`),
 * so they come back with every worker (start, restore, takeover); a running VM's worker is told at
 * once, and an add it cannot honour (the host port is taken) fails and changes nothing.
 *
 *   vm.port.add    {name, guestPort, hostPort?, address?} -> ForwardStatus   (any state; running: listens now)
 *   vm.port.remove {name, hostPort} -> VmInfo                                 (any state)
 *   vm.port.auto   {name, on} -> VmInfo: automatic forwarding of the guest's listening ports (any state)
 *   vm.port.list   {name?} -> PortList[]: every VM's (or one VM's) forwards with their state
 */
import { ErrorCode, SandboxError } from '../common/errors';
import { LOOPBACK, MAX_FORWARDS, checkBindAddress, inactiveForwards, isPort, type ForwardStatus } from '../common/ports';
import type { HandlerTable } from '../common/rpc';
import type { VmInfo } from '../common/status';
import type { VmManager } from './vmManager';

export interface PortList {
  vm: string;
  state: VmInfo['state'];
  auto: boolean;
  forwards: ForwardStatus[];
}

/** A VM's forwards as its snapshot says: live from the worker, else the configured ones. */
export function portList(info: VmInfo): PortList {
  const ports = info.config.ports ?? { auto: true, forwards: [] };
  return { vm: info.name, state: info.state, auto: ports.auto, forwards: info.runtime?.ports ?? inactiveForwards(ports) };
}

function port(v: unknown, what: string): number {
  if (!isPort(v)) throw new SandboxError(ErrorCode.BadArgument, `${what} must be a port between 1 and 65535 (got ${JSON.stringify(v)})`);
  return v;
}

export function portApiHandlers(manager: VmManager): HandlerTable {
  return {
    'vm.port.add': async (p) => {
      const guestPort = port(p.guestPort, 'the guest port');
      const hostPort = p.hostPort === undefined ? guestPort : port(p.hostPort, 'the host port');
      const address = p.address === undefined ? LOOPBACK : checkBindAddress(p.address);
      let added: ForwardStatus | undefined;
      const info = await manager.changePorts(p.name, async (ports, worker) => {
        const clash = ports.forwards.find((f) => f.hostPort === hostPort);
        if (clash) throw new SandboxError(ErrorCode.BadArgument, `host port ${hostPort} already forwards to guest port ${clash.guestPort} of ${p.name}; remove it first with \`sandboxvm port remove ${p.name} ${hostPort}\``);
        if (ports.forwards.length >= MAX_FORWARDS) throw new SandboxError(ErrorCode.BadArgument, `${p.name} has ${MAX_FORWARDS} forwards already; remove one first`);
        if (worker) added = await worker.call<ForwardStatus>('worker.ports.add', { guestPort, hostPort, address });
        return { ...ports, forwards: [...ports.forwards, { guestPort, hostPort, address }] };
      });
      return added ?? portList(info).forwards.find((f) => f.origin === 'manual' && f.hostPort === hostPort);
    },
    'vm.port.remove': (p) => {
      const hostPort = port(p.hostPort, 'the host port');
      return manager.changePorts(p.name, async (ports, worker) => {
        if (!ports.forwards.some((f) => f.hostPort === hostPort)) {
          throw new SandboxError(ErrorCode.BadArgument, `${p.name} has no forward on host port ${hostPort}; see \`sandboxvm port list ${p.name}\``);
        }
        if (worker) await worker.call('worker.ports.remove', { hostPort }).catch(() => undefined);
        return { ...ports, forwards: ports.forwards.filter((f) => f.hostPort !== hostPort) };
      });
    },
    'vm.port.auto': (p) => {
      if (typeof p.on !== 'boolean') throw new SandboxError(ErrorCode.BadArgument, 'automatic forwarding is on or off');
      return manager.changePorts(p.name, async (ports, worker) => {
        if (worker) await worker.call('worker.ports.auto', { on: p.on });
        return { ...ports, auto: p.on };
      });
    },
    'vm.port.list': async (p) => {
      const infos = p?.name === undefined ? await manager.list() : [await manager.info(p.name)];
      return infos.map(portList);
    },
  };
}
