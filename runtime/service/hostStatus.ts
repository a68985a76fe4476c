/**
 * What a client needs before a VM can be made on this host (the extension's welcome views): is
 * QEMU there and new enough, is the base image built, and if not, can this host build it and what
 * does it lack. Reads and probes only; never builds or changes anything.
 */
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { asSandboxError, ErrorCode } from '../common/errors';
import { baseDir, recipeHashes } from '../image/baseImage';
import { QEMU_INSTALL_COMMAND, locateQemu } from '../qemu/locate';
import { imageBuildPrerequisites, type MissingPrerequisite } from '../image/prerequisites';

export type QemuStatus =
  | { ok: true; path: string; version: string }
  | { ok: false; code: 'QemuMissing' | 'QemuTooOld'; message: string; fix: string };

export interface ImageStatus {
  /** The base image for the current recipe is in the cache (creating a VM builds nothing). */
  ready: boolean;
  /** The recipe's hash (16 hex), when it could be computed. */
  hash?: string;
  /** Why readiness could not be told (the recipe could not be hashed), if so. */
  error?: string;
  /** This host can build it (only meaningful when not ready). */
  buildable: boolean;
  /** What the host lacks to build it; empty when buildable. */
  missing: MissingPrerequisite[];
}

export interface HostStatus {
  qemu: QemuStatus;
  image: ImageStatus;
}

/** Where the base image is looked for and what it is made of (as the service builds it). */
export interface ImageRecipe {
  cacheDir: string;
  agentDir: string;
  nodeBinary: string;
}

export async function qemuStatus(): Promise<QemuStatus> {
  try {
    const q = await locateQemu();
    return { ok: true, path: q.system, version: q.version };
  } catch (err) {
    const e = asSandboxError(err);
    return { ok: false, code: e.code === ErrorCode.QemuTooOld ? 'QemuTooOld' : 'QemuMissing', message: e.message, fix: QEMU_INSTALL_COMMAND };
  }
}

export async function imageStatus(recipe: ImageRecipe): Promise<ImageStatus> {
  let ready = false;
  let hash: string | undefined;
  let error: string | undefined;
  try {
    const h = await recipeHashes({ agentDir: recipe.agentDir, nodeBinary: recipe.nodeBinary });
    hash = h.stage2.slice(0, 16);
    const dir = baseDir(recipe.cacheDir, h.stage2);
    ready = existsSync(path.join(dir, 'base.qcow2')) && existsSync(path.join(dir, 'manifest.json'));
  } catch (err) {
    error = asSandboxError(err).message;
  }
  if (ready) return { ready, hash, buildable: true, missing: [] };
  const prerequisites = await imageBuildPrerequisites();
  return { ready, hash, error, buildable: prerequisites.ok, missing: prerequisites.missing };
}

export async function hostStatus(recipe: ImageRecipe): Promise<HostStatus> {
  const [qemu, image] = await Promise.all([qemuStatus(), imageStatus(recipe)]);
  return { qemu, image };
}
