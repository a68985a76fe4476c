/**
 * The service's image and host methods (merged into api.ts's table):
 *
 *   host.status  {} -> HostStatus: QEMU found and new enough, base image ready, what a build lacks
 *   image.build  {progressToken} -> {hash, kernel, initrd, disk}: builds the base image if missing;
 *                cancellable with image.cancel (or by closing the connection): fails with Cancelled
 *                and leaves nothing half-written in the cache
 *   image.cancel {progressToken}: cancels that build (a no-op when it has ended)
 */
import type { HandlerTable, RpcPeer } from '../common/rpc';
import { hostStatus, type ImageRecipe } from './hostStatus';
import type { ImageProvider } from './vmManager';

export function imageHandlers(recipe: () => ImageRecipe, images: ImageProvider): HandlerTable {
  const builds = new Map<string, AbortController>();
  return {
    'host.status': () => hostStatus(recipe()),
    'image.build': async (p: { progressToken?: string }, peer: RpcPeer) => {
      const token = typeof p.progressToken === 'string' ? p.progressToken : undefined;
      const controller = new AbortController();
      if (token) builds.set(token, controller);
      peer.onClose(() => controller.abort());
      try {
        return await images((step, total, message) => token && peer.notify('progress', { token, step, total, message }), controller.signal);
      } finally {
        if (token) builds.delete(token);
      }
    },
    'image.cancel': (p: { progressToken?: string }) => {
      if (typeof p.progressToken === 'string') builds.get(p.progressToken)?.abort();
    },
  };
}
