/** Refresh: lists the VMs again, or reconnects at once when the service was unreachable; asks again about QEMU and the base image. */
import type { CommandDeps } from './deps';

export async function refresh(deps: CommandDeps): Promise<void> {
  await deps.connection.refresh();
  if (deps.connection.state === 'connected') await deps.host.refresh();
}
