/**
 * How a VM's ports look in the tree, as plain data (no vscode import, unit-tested): every forward
 * the worker reports (WorkerStatus.ports) as `8080/tcp -> 127.0.0.1:8080`, and the guest's
 * listening ports that have none (automatic forwarding off) as `8080/tcp`.
 */
import { formatAddress, type ForwardStatus } from '../../runtime/common/ports';
import type { VmInfo } from '../../runtime/common/status';
import { ItemContext } from '../ids';
import { portLooks } from '../tree/vmPresentation';

export interface ForwardLook {
  /** The guest port. */
  port: number;
  /** Set for a forward: where the host reaches it. */
  hostPort?: number;
  address?: string;
  label: string;
  description: string;
  tooltip: string;
  contextValue: string;
}

/** What a user types in a browser for a forward: a wildcard bind is reached on 127.0.0.1. */
export function reachableAddress(f: Pick<ForwardStatus, 'address' | 'hostPort'>): string {
  const host = f.address === '0.0.0.0' || f.address === '::' ? '127.0.0.1' : f.address;
  return formatAddress(host, f.hostPort);
}

function forwardLook(vm: string, f: ForwardStatus): ForwardLook {
  const where = formatAddress(f.address, f.hostPort);
  const origin = f.origin === 'auto' ? 'automatic' : 'manual';
  let description = origin;
  let state = `forwarded to ${where}`;
  if (f.state === 'failed') {
    description = 'failed';
    state = `not forwarded: ${f.error ?? 'unknown error'}`;
  } else if (f.guestListening === false) {
    description = `${origin}, nothing listening`;
    state = `forwarded to ${where}, but nothing listens on ${f.guestPort} in ${vm}: connections are refused`;
  } else if (f.connections > 0) {
    description = `${origin}, ${f.connections} connection${f.connections === 1 ? '' : 's'}`;
  }
  const contextValue = f.state === 'failed' ? (f.origin === 'manual' ? ItemContext.failedManualForward : ItemContext.port) : f.origin === 'manual' ? ItemContext.manualForward : ItemContext.forward;
  return { port: f.guestPort, hostPort: f.hostPort, address: f.address, label: `${f.guestPort}/tcp -> ${where}`, description, tooltip: `TCP port ${f.guestPort} of ${vm}: ${state} (${origin})`, contextValue };
}

/** The port children of a VM: its forwards, then listening ports without one; none unless running or paused. */
export function forwardLooks(info: VmInfo, listening: readonly string[] = []): ForwardLook[] {
  if (info.state !== 'running' && info.state !== 'paused') return [];
  const forwards = (info.runtime?.ports ?? []).map((f) => forwardLook(info.name, f));
  const forwarded = new Set(forwards.map((f) => f.port));
  const bare = portLooks(listening)
    .filter((p) => !forwarded.has(p.port))
    .map((p): ForwardLook => ({ port: p.port, label: p.label, description: `${p.description}, not forwarded`, tooltip: `TCP port ${p.port} listens in ${info.name} (${p.description}); Forward a Port makes it reachable from this host`, contextValue: ItemContext.port }));
  return [...forwards, ...bare];
}

/** A stable key of a port child: a forward by host port, a bare listening port by guest port. */
export function forwardKey(look: Pick<ForwardLook, 'port' | 'hostPort'>): string {
  return look.hostPort !== undefined ? `h${look.hostPort}` : `g${look.port}`;
}
