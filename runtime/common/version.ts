/**
 * What a client and a service compare when they meet (runtime/client/serviceVersion.ts): the
 * runtime's version (package.json's; bundles inline just this field) and the number of the
 * service's API protocol, bumped whenever a client of the new API could not work with an older
 * service.
 */
import { version } from '../../package.json';

/**
 * The service API's protocol. 1: version handshake (service.info), metrics, serial console.
 * 2: network policy (vm.set), workspace syncs (sync.*), port forwards (vm.port.*), checkpoints.
 */
export const PROTOCOL_VERSION = 2;

export const RUNTIME_VERSION: string = version;

/** What a service says about itself in `service.info`. */
export interface ServiceIdentity {
  pid: number;
  home: string;
  version: string;
  /** Absent in services from before the handshake: they count as protocol 0. */
  protocol?: number;
}

/**
 * The identity a service reports. SANDBOXVM_TEST_SERVICE_VERSION / _PROTOCOL pretend another
 * version: they exist for tests of version skew and nothing else.
 */
export function serviceIdentity(home: string, env: NodeJS.ProcessEnv = process.env): ServiceIdentity {
  const protocol = Number(env.SANDBOXVM_TEST_SERVICE_PROTOCOL ?? PROTOCOL_VERSION);
  return { pid: process.pid, home, version: env.SANDBOXVM_TEST_SERVICE_VERSION ?? RUNTIME_VERSION, protocol: Number.isInteger(protocol) ? protocol : PROTOCOL_VERSION };
}

/** Compares dotted numeric versions: -1, 0 or 1 (1.10.0 > 1.9.3); a pre-release sorts before its release. */
export function compareVersions(a: string, b: string): number {
  const parse = (v: string) => {
    const [main, pre] = v.trim().replace(/^v/, '').split('-', 2);
    return { nums: main.split('.').map((n) => Number.parseInt(n, 10) || 0), pre };
  };
  const x = parse(a);
  const y = parse(b);
  for (let i = 0; i < Math.max(x.nums.length, y.nums.length); i++) {
    const d = (x.nums[i] ?? 0) - (y.nums[i] ?? 0);
    if (d !== 0) return Math.sign(d);
  }
  if (x.pre === y.pre) return 0;
  if (x.pre === undefined) return 1;
  if (y.pre === undefined) return -1;
  return x.pre < y.pre ? -1 : 1;
}

/**
 * How a client meets a service: `same`, `older` (the service is older: the client replaces it) or
 * `newer` (the client is older: it must not drive the service). Protocol first, then version.
 */
export function compareWithService(service: Pick<ServiceIdentity, 'version' | 'protocol'>, client = { version: RUNTIME_VERSION, protocol: PROTOCOL_VERSION }): 'same' | 'older' | 'newer' {
  const protocol = typeof service.protocol === 'number' ? service.protocol : 0;
  if (protocol !== client.protocol) return protocol < client.protocol ? 'older' : 'newer';
  const c = compareVersions(typeof service.version === 'string' ? service.version : '0.0.0', client.version);
  return c === 0 ? 'same' : c < 0 ? 'older' : 'newer';
}
