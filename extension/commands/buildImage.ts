/** Build Image: the service builds the base image (if missing) with its steps in a cancellable notification. */
import { withServiceProgress } from '../ui/progress';
import type { CommandDeps } from './deps';

/** Resolves to the image's hash (16 hex), or undefined when cancelled. */
export async function buildImage(deps: CommandDeps): Promise<string | undefined> {
  const client = await deps.connection.client();
  deps.host.setBuilding(true);
  try {
    const image = await withServiceProgress('Building the base image', (report, signal) => client.buildImage(report, signal), { cancellable: true });
    const hash = image.hash.slice(0, 16);
    deps.log.info(`base image ${hash} ready: ${image.disk}`);
    return hash;
  } finally {
    deps.host.setBuilding(false);
    void deps.host.refresh();
  }
}
