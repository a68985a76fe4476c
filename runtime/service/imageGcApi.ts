/**
 * The service's image GC (runtime/image/imageGc.ts), merged into the API table:
 *
 *   image.prune {dryRun?, explicit?} -> GcResult: removes base images, templates and (explicit)
 *               stage-1 folders nothing uses; `explicit` (the CLI's `image prune`) also removes
 *               images made before they recorded their VMs, when no VM in a known home uses them
 *
 * `afterImage` is the automatic run: after a build, in the background, logged.
 */
import type { HandlerTable } from '../common/rpc';
import { recipeHashes } from '../image/baseImage';
import { collectImages, type GcResult } from '../image/imageGc';
import type { ImageRecipe } from './hostStatus';

export function imageGcHandlers(recipe: () => ImageRecipe, home: string, log: (m: string) => void): HandlerTable {
  return {
    'image.prune': async (p: { dryRun?: boolean; explicit?: boolean }): Promise<GcResult> => {
      const r = recipe();
      const hashes = await recipeHashes({ agentDir: r.agentDir, nodeBinary: r.nodeBinary });
      return collectImages({ cacheDir: r.cacheDir, currentHash: hashes.stage2, currentStage1: hashes.stage1, homes: [home], explicit: p.explicit !== false, dryRun: !!p.dryRun, log });
    },
  };
}

/** The automatic GC after `image` was built: never throws, logs what it removed. */
export function collectAfterBuild(cacheDir: string, image: { hash: string; stage1?: string }, home: string, log: (m: string) => void): void {
  void collectImages({ cacheDir, currentHash: image.hash, currentStage1: image.stage1, homes: [home], explicit: false, log }).then(
    (r) => log(r.skipped ? `image GC skipped: ${r.skipped}` : `image GC after the build: ${r.removed.length} removed (${Math.round(r.freedBytes / 2 ** 20)} MiB), ${r.kept.length} kept`),
    (err) => log(`image GC failed: ${(err as Error).message}`),
  );
}
