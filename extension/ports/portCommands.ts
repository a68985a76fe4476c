/**
 * Port forwarding commands: Forward a Port and Stop Forwarding (a VM's forwards live in its
 * configuration, through the service: `sandboxvm port add/remove`), and on a forwarded port's tree
 * item Open in Browser (vscode.env.openExternal) and Copy Address (`127.0.0.1:8080`). From the
 * palette each asks for the VM and the port; from the tree it acts on the item. Each returns what it
 * did (the tests use it).
 */
import * as vscode from 'vscode';
import { isPort, parseForwardSpec } from '../../runtime/common/ports';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import type { CommandDeps } from '../commands/deps';
import { pickVm, type VmTarget } from '../ui/pickVm';
import type { Node, PortNode } from '../tree/vmTreeProvider';
import { forwardLooks, reachableAddress, type ForwardLook } from './portPresentation';

/** Test and automation arguments: skip the prompts. */
export interface ForwardOptions {
  /** `8080` or `8080:9090` (guest:host). */
  spec?: string;
}

/** Forward a Port: asks for `<guest port>[:<host port>]` on a running VM; answers the host address. */
export async function forwardPort(deps: CommandDeps, target?: VmTarget, options: ForwardOptions = {}): Promise<string | undefined> {
  const name = await pickVm(deps.model, target, ['running', 'paused', 'stopped', 'saved'], 'forward a port of');
  if (!name) return undefined;
  const node = typeof target === 'object' && target?.kind === 'port' ? target : undefined;
  const spec =
    options.spec ??
    (await vscode.window.showInputBox({
      title: `Forward a port of ${name}`,
      prompt: 'The guest port, and optionally the host port: 8080 or 8080:9090. The host end listens on 127.0.0.1 only.',
      value: node ? String(node.port) : undefined,
      validateInput: (v) => {
        try {
          parseForwardSpec(v);
          return undefined;
        } catch (err) {
          return (err as Error).message;
        }
      },
    }));
  if (!spec) return undefined;
  const { guestPort, hostPort } = parseForwardSpec(spec);
  const client = await deps.connection.client();
  const f = await client.addPort(name, guestPort, { hostPort });
  const address = reachableAddress(f ?? { address: '127.0.0.1', hostPort });
  deps.notify.info(`Port ${guestPort} of ${name} is forwarded to ${address}${f?.state === 'inactive' ? ' from its next start' : ''}.`);
  return address;
}

/** Stop Forwarding: removes a manual forward (from its tree item, or picked). Answers the host port. */
export async function stopForwarding(deps: CommandDeps, target?: VmTarget | PortNode, hostPortArg?: number): Promise<number | undefined> {
  const name = await pickVm(deps.model, target, ['running', 'paused', 'stopped', 'saved'], 'stop forwarding a port of');
  if (!name) return undefined;
  let hostPort = typeof target === 'object' && target?.kind === 'port' ? target.hostPort : hostPortArg;
  const client = await deps.connection.client();
  if (hostPort === undefined) {
    const [list] = await client.listPorts(name);
    const manual = list.forwards.filter((f) => f.origin === 'manual');
    if (manual.length === 0) {
      deps.notify.info(`${name} has no forwards of its own to stop${list.auto ? ' (its listening ports are forwarded automatically: `sandboxvm port auto ' + name + ' off` turns that off)' : ''}.`);
      return undefined;
    }
    const picked = await vscode.window.showQuickPick(
      manual.map((f) => ({ label: `${f.guestPort}/tcp -> ${reachableAddress(f)}`, hostPort: f.hostPort })),
      { title: `Stop forwarding a port of ${name}` },
    );
    hostPort = picked?.hostPort;
  }
  if (!isPort(hostPort)) return undefined;
  await client.removePort(name, hostPort);
  return hostPort;
}

/** The forward a command was invoked on (or, from the palette, picked among the running VMs' forwards). */
async function pickForward(deps: CommandDeps, target: Node | undefined, verb: string): Promise<ForwardLook | undefined> {
  if (target?.kind === 'port') {
    const info = deps.model.get(target.vm);
    const look = info && forwardLooks(info).find((l) => l.hostPort !== undefined && l.hostPort === target.hostPort);
    if (!look) throw new SandboxError(ErrorCode.WrongState, `port ${target.port} of ${target.vm} is not forwarded (any more); Forward a Port forwards it`);
    return look;
  }
  const all = deps.model.list().flatMap((info) => forwardLooks(info).filter((l) => l.hostPort !== undefined).map((l) => ({ info, l })));
  if (all.length === 0) {
    deps.notify.info('No port is forwarded now: a running VM forwards the ports its guest listens on, or use Forward a Port.');
    return undefined;
  }
  const picked = await vscode.window.showQuickPick(all.map(({ info, l }) => ({ label: l.label, description: info.name, l })), { title: `Choose the forwarded port to ${verb}` });
  return picked?.l;
}

/** Copy Address: `127.0.0.1:8080` to the clipboard. Answers it. */
export async function copyPortAddress(deps: CommandDeps, target?: Node): Promise<string | undefined> {
  const look = await pickForward(deps, target, 'copy the address of');
  if (!look?.hostPort || !look.address) return undefined;
  const address = reachableAddress({ address: look.address, hostPort: look.hostPort });
  await vscode.env.clipboard.writeText(address);
  return address;
}

/** Open in Browser: http://127.0.0.1:8080 in the user's browser. Answers the URL. */
export async function openPortInBrowser(deps: CommandDeps, target?: Node): Promise<string | undefined> {
  const look = await pickForward(deps, target, 'open');
  if (!look?.hostPort || !look.address) return undefined;
  const url = `http://${reachableAddress({ address: look.address, hostPort: look.hostPort })}/`;
  await vscode.env.openExternal(vscode.Uri.parse(url));
  return url;
}
