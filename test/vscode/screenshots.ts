/**
 * Screenshots of the extension as a new user meets it, in code-server with chromium: the view with
 * a running, a saved and a stopped VM, a tooltip, the context menu, a terminal from the inline
 * button, the Create VM wizard with a bad name. PNGs go to $SANDBOXVM_TEST_ARTIFACTS/screens
 * (default /tmp/sandboxvm-vscode/screens). Run: node --import tsx test/vscode/screenshots.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright-core';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from './codeServer';

const OUT = path.join(process.env.SANDBOXVM_TEST_ARTIFACTS ?? '/tmp/sandboxvm-vscode', 'screens');

async function shot(page: Page, name: string): Promise<void> {
  await page.waitForTimeout(600);
  await page.screenshot({ path: path.join(OUT, `${name}.png`) });
  console.log(`${name}.png`);
}

async function main(): Promise<void> {
  const bin = installCodeServer();
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  const home = new TestHome({ SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
  let cs;
  let browser;
  try {
    await home.bootedVm('dev', ['--cpus', '2']);
    await home.bootedVm('saved-one');
    await home.ok(['save', 'saved-one']);
    await home.createdVm('build-box', ['--memory', '2G', '--disk', '20G']);
    cs = await startCodeServer(bin, path.join(path.dirname(OUT), 'code-server-screens'), { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() }, { 'sandboxvm.workspaceVm': 'dev' });
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(workbenchUrl(cs, REPO));
    await waitForWorkbench(page);
    await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
    const row = (name: string) => page.locator('.monaco-list-row', { hasText: name }).first();
    await row('dev').waitFor({ timeout: 60_000 });
    await shot(page, '1-view');

    await row('dev').hover();
    await page.locator('.monaco-hover').first().waitFor({ timeout: 10_000 }).catch(() => undefined);
    await shot(page, '2-tooltip');

    await row('dev').click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').first().waitFor({ timeout: 10_000 });
    await shot(page, '3-context-menu-running');
    await page.keyboard.press('Escape');
    await row('saved-one').click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').first().waitFor({ timeout: 10_000 });
    await shot(page, '4-context-menu-saved');
    await page.keyboard.press('Escape');

    await row('dev').hover();
    await row('dev').locator('.action-label[aria-label="Open Terminal"]').click();
    await page.locator('.xterm-rows', { hasText: '#' }).first().waitFor({ timeout: 60_000 });
    await page.keyboard.type('uname -r\n');
    await page.locator('.xterm-rows', { hasText: 'cloud-amd64' }).first().waitFor({ timeout: 30_000 });
    await shot(page, '5-terminal');

    await page.locator('.monaco-workbench').first().click({ position: { x: 640, y: 300 } });
    await page.keyboard.press('F1');
    await page.locator('.quick-input-widget input').fill('>Sandbox VMs: Create VM');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Create VM' }).first().waitFor();
    await shot(page, '6-palette');
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget input').fill('Bad Name');
    await shot(page, '7-wizard-bad-name');
    await page.locator('.quick-input-widget input').fill('web');
    await page.keyboard.press('Enter');
    await shot(page, '8-wizard-cpus');
    await page.keyboard.press('Escape');
    await page.locator('.statusbar-item', { hasText: 'dev' }).first().click();
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Open Terminal' }).first().waitFor();
    await shot(page, '9-status-bar-actions');
    await page.keyboard.press('Escape');
  } finally {
    await browser?.close().catch(() => undefined);
    await cs?.stop();
    await home.dispose();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`screenshots: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
