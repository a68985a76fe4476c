/**
 * The worker's port-forwarding RPC (the service calls these after updating vm.json, or before, for
 * an add that must be able to fail):
 *   worker.ports.add    {guestPort, hostPort, address} -> ForwardStatus; throws when the host port cannot be had
 *   worker.ports.remove {hostPort}
 *   worker.ports.auto   {on}
 * The forwards and their state ride on `worker.status` (WorkerStatus.ports).
 */
import { ErrorCode, SandboxError } from '../common/errors';
import { checkBindAddress, isPort } from '../common/ports';
import type { HandlerTable } from '../common/rpc';
import type { PortForwarder } from './portForwarder';

export function portHandlers(forwarder: () => PortForwarder | undefined): HandlerTable {
  const ready = () => {
    const f = forwarder();
    if (!f) throw new SandboxError(ErrorCode.WrongState, 'the VM is not running yet');
    return f;
  };
  const port = (v: unknown, what: string) => {
    if (!isPort(v)) throw new SandboxError(ErrorCode.BadArgument, `${what} must be a port between 1 and 65535`);
    return v;
  };
  return {
    'worker.ports.add': (p: { guestPort?: unknown; hostPort?: unknown; address?: unknown }) =>
      ready().addManual({ guestPort: port(p?.guestPort, 'the guest port'), hostPort: port(p?.hostPort, 'the host port'), address: checkBindAddress(p?.address) }),
    'worker.ports.remove': (p: { hostPort?: unknown }) => ready().removeManual(port(p?.hostPort, 'the host port')),
    'worker.ports.auto': (p: { on?: unknown }) => {
      if (typeof p?.on !== 'boolean') throw new SandboxError(ErrorCode.BadArgument, 'auto must be on or off');
      ready().setAuto(p.on);
    },
  };
}
