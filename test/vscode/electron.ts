/**
 * `npm run test:electron`: the same mocha suites under @vscode/test-electron, for machines that can
 * download desktop VS Code (1.100.3, the version code-server 4.100.3 is built on). Needs a display
 * (xvfb-run on a headless Linux). A fresh SANDBOXVM_HOME, removed afterwards.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runTests } from '@vscode/test-electron';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { buildSuites } from './buildSuites';

async function main(): Promise<number> {
  const repo = path.resolve(__dirname, '..', '..');
  const index = await buildSuites();
  const home = new TestHome();
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'sandboxvm-electron-'));
  try {
    await runTests({
      version: process.env.SANDBOXVM_VSCODE_VERSION ?? '1.100.3',
      extensionDevelopmentPath: repo,
      extensionTestsPath: index,
      extensionTestsEnv: { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() },
      launchArgs: ['--disable-extensions', '--disable-workspace-trust', '--user-data-dir', path.join(scratch, 'user-data'), scratch],
    });
    return 0;
  } catch (err) {
    console.error(`test:electron: ${(err as Error).message}`);
    return 1;
  } finally {
    await home.dispose();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

main().then((c) => process.exit(c));
