/**
 * STUB (branch `welcome`) until branch `nonroot` lands `imageBuildPrerequisites()` in
 * runtime/image/prerequisites.ts. Same interface as that function; this stand-in checks only the
 * tools main's build needs (REQUIRED_TOOLS) and knows nothing of fakeroot, fakechroot or user
 * namespaces. When `nonroot` is merged, replace this file's body with
 *   export { imageBuildPrerequisites, type ImageBuildPrerequisites, type MissingPrerequisite } from '../image/prerequisites';
 */
import { REQUIRED_TOOLS, findExecutable, type HostTool } from '../image/baseImage';

export interface MissingPrerequisite {
  /** One sentence: what is missing and what the build needs it for. */
  what: string;
  /** The exact command that fixes it (a shell command line). */
  fix: string;
}

export interface ImageBuildPrerequisites {
  ok: boolean;
  /** Empty when ok. */
  missing: MissingPrerequisite[];
}

/** What this host lacks to build the base image (nothing is built or changed). */
export async function imageBuildPrerequisites(): Promise<ImageBuildPrerequisites> {
  if (process.platform !== 'linux') {
    return { ok: false, missing: [{ what: `building the base image needs a Debian or Ubuntu Linux host (this is ${process.platform})`, fix: 'copy a built image cache from a Linux host' }] };
  }
  const missing: HostTool[] = [];
  for (const t of REQUIRED_TOOLS) if (!(await findExecutable(t.tool))) missing.push(t);
  return { ok: missing.length === 0, missing: missing.map((t) => ({ what: `${t.tool} (package ${t.pkg}) is not installed`, fix: `sudo apt-get install ${t.pkg}` })) };
}
