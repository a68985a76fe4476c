/**
 * passt (https://passt.top), the user-mode network back end of the `internet` policy: where to find
 * it and its command line, built by a pure function. The guest keeps the addresses QEMU's user
 * networking gives it (10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3: the image configures them
 * statically), so one image serves every policy.
 *
 * Chosen over libslirp because QEMU 7.2's `-netdev user` has no way to stop 10.0.2.2 reaching the
 * host's 127.0.0.1 (libslirp's `disable_host_loopback` is not exposed), while passt's
 * `--no-map-gw` makes the gateway an ordinary outside address.
 */
import * as fs from 'node:fs';
import { ErrorCode, SandboxError } from '../common/errors';
import { findOnPath } from './locate';

/** The command that installs passt on Debian and Ubuntu. */
export const PASST_INSTALL_COMMAND = 'sudo apt-get install passt';

/** The addresses the guest image configures (runtime/image/guest/sandboxvm-init). */
export const GUEST_NET = { address: '10.0.2.15', prefix: 24, gateway: '10.0.2.2', dns: '10.0.2.3' } as const;

export interface PasstSpec {
  /** passt's fd of the connected socket whose other end QEMU holds. */
  fd: number;
  /** passt's own log (bounded by passt to 1 MiB). */
  logFile: string;
  /** Map the gateway address to the host's loopback (the `host` policy through passt; benchmarks). */
  mapGateway?: boolean;
}

/**
 * passt's argv: in the foreground (the worker is its parent, as it is QEMU's), on an inherited
 * connected socket (which makes it serve one client: it exits when QEMU closes its end), IPv4 only (the
 * image configures no IPv6, so there is no IPv6 gateway to map), no ports forwarded into the guest.
 */
export function buildPasstArgv(spec: PasstSpec): string[] {
  return [
    '--foreground',
    '--quiet',
    '--fd', String(spec.fd),
    '--ipv4-only',
    '--address', GUEST_NET.address,
    '--netmask', String(GUEST_NET.prefix),
    '--gateway', GUEST_NET.gateway,
    '--dns-forward', GUEST_NET.dns,
    '--tcp-ports', 'none',
    '--udp-ports', 'none',
    '--log-file', spec.logFile,
    ...(spec.mapGateway ? [] : ['--no-map-gw']),
  ];
}

/** passt's path (SANDBOXVM_PASST overrides), or a SandboxError naming the package that has it. */
export function locatePasst(env: NodeJS.ProcessEnv = process.env, vmName?: string): string {
  const override = env.SANDBOXVM_PASST;
  const found = override !== undefined ? (isExecutable(override) ? override : undefined) : findOnPath('passt', env) ?? findOnPath('passt', { PATH: '/usr/bin:/usr/sbin:/usr/local/bin' });
  if (found) return found;
  const other = vmName ? ` (or give ${vmName} another policy: \`sandboxvm set ${vmName} --network host\`)` : '';
  throw new SandboxError(ErrorCode.BootFailed, `the network policy internet needs passt, which is not installed: ${PASST_INSTALL_COMMAND}${other}`);
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}
