/**
 * Smoke test of the packaged extension: installs dist-vsix/sandbox-vms.vsix into a clean
 * code-server (`--install-extension`), opens the Sandbox VMs view with no VM, and checks that the
 * installed extension connects (starting the service from its own bundles) and shows the
 * "Create VM" welcome, and that its log says whether VS Code's search providers for guest folders
 * (proposed API) were granted. Run `npm run package` first; screenshot in $SANDBOXVM_TEST_ARTIFACTS/vsix.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench } from './codeServer';

const OUT = path.join(process.env.SANDBOXVM_TEST_ARTIFACTS ?? '/tmp/sandboxvm-vscode', 'vsix');

async function main(): Promise<void> {
  const vsix = path.join(REPO, 'dist-vsix', 'sandbox-vms.vsix');
  if (!fs.existsSync(vsix)) throw new Error(`${vsix} is missing: run npm run package first`);
  const bin = installCodeServer();
  fs.rmSync(OUT, { recursive: true, force: true });
  const scratch = path.join(OUT, 'code-server');
  fs.mkdirSync(scratch, { recursive: true });
  const xdg = { XDG_CONFIG_HOME: path.join(scratch, 'config'), XDG_DATA_HOME: path.join(scratch, 'data'), XDG_CACHE_HOME: path.join(scratch, 'cache') };
  execFileSync(bin, ['--extensions-dir', path.join(scratch, 'extensions'), '--user-data-dir', path.join(scratch, 'user-data'), '--install-extension', vsix], { env: { ...process.env, ...xdg }, stdio: 'inherit' });
  const home = new TestHome();
  const cs = await startCodeServer(bin, scratch, { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(`${cs.url}/?folder=${encodeURIComponent(cs.workspace)}`);
    await waitForWorkbench(page);
    await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
    await page.locator('.welcome-view-content', { hasText: 'No virtual machines yet' }).first().waitFor({ timeout: 60_000 });
    await page.screenshot({ path: path.join(OUT, 'installed-empty.png') });
    if (!home.servicePid()) throw new Error('the installed extension did not start the service');
    console.log(`the installed .vsix shows the empty view and started the service (pid ${home.servicePid()})`);
    // No --enable-proposed-api here. code-server 4.100.3 grants the proposed search API to installed
    // extensions anyway (desktop VS Code does not: there the registration throws); either way the
    // extension activates (above) and its log says which search the guest folders have.
    const logs = path.join(scratch, 'user-data', 'logs');
    const said = fs.readdirSync(logs, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('Sandbox VMs.log')).map((f) => fs.readFileSync(path.join(logs, f), 'utf8')).join('\n');
    const outcome = /guest files: (VS Code's .* search guest folders|VS Code does not grant registerFileSearchProvider.*)/.exec(said);
    if (!outcome) throw new Error(`the extension's log does not say whether VS Code's search works on guest folders:\n${said.slice(-2000)}`);
    console.log(`search on guest folders: ${outcome[1]}`);
  } finally {
    await browser.close().catch(() => undefined);
    await cs.stop();
    await home.dispose();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`vsix-smoke: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
