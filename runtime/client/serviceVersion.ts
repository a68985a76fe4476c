/**
 * What a client does when it meets a running service of another version (version.ts): a newer
 * client asks an older service to exit and starts its own (running VMs carry on; the new service
 * adopts them); an older client refuses, in one sentence, to drive a newer service.
 */
import type { MessageConnection } from 'vscode-jsonrpc/node';
import { ErrorCode, SandboxError } from '../common/errors';
import { call } from '../common/rpc';
import { PROTOCOL_VERSION, RUNTIME_VERSION, compareWithService, type ServiceIdentity } from '../common/version';

export type Meeting = { use: true; service: ServiceIdentity } | { use: false; replaced: ServiceIdentity };

/**
 * Asks the service who it is. Resolves `use` when it matches this client, or `replaced` once an
 * older service has exited (the caller starts a new one). Rejects with one sentence when the
 * service is newer, or when an older one does not exit.
 */
export async function meetService(connection: MessageConnection, exitTimeoutMs = 10_000): Promise<Meeting> {
  const service = await call<ServiceIdentity>(connection, 'service.info');
  const skew = compareWithService(service);
  const theirs = `${String(service.version)} (protocol ${typeof service.protocol === 'number' ? service.protocol : 0})`;
  const ours = `${RUNTIME_VERSION} (protocol ${PROTOCOL_VERSION})`;
  if (skew === 'same') return { use: true, service };
  if (skew === 'newer') {
    throw new SandboxError(ErrorCode.ServiceUnavailable, `the running Sandbox VMs service is version ${theirs}, newer than this client's ${ours}; update this client (the VS Code extension or the sandboxvm CLI) to use it`);
  }
  const pid = service.pid;
  await call(connection, 'service.shutdown').catch(() => undefined);
  connection.dispose();
  if (!(Number.isInteger(pid) && pid > 1) || !(await gone(pid, exitTimeoutMs))) {
    throw new SandboxError(ErrorCode.ServiceUnavailable, `the running service is version ${theirs}, older than this client's ${ours}, and did not exit when asked; stop it (kill ${pid}) and try again (running VMs carry on)`);
  }
  return { use: false, replaced: service };
}

async function gone(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      process.kill(pid, 0);
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}
