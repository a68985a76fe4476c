/** Refresh: lists the VMs again, or reconnects at once when the service was unreachable. */
import type { CommandDeps } from './deps';

export async function refresh(deps: CommandDeps): Promise<void> {
  await deps.connection.refresh();
}
