/** Temporary SANDBOXVM_HOME directories: short paths under /tmp (unix socket paths must stay short). */
import { promises as fsp } from 'node:fs';
import { onCleanup } from './cleanup';

/** Creates an empty home (mode 0700) and registers its removal. */
export async function tempHome(prefix = '/tmp/sbxb-'): Promise<string> {
  const home = await fsp.mkdtemp(prefix);
  await fsp.chmod(home, 0o700);
  onCleanup(`removing ${home}`, () => fsp.rm(home, { recursive: true, force: true }));
  return home;
}
