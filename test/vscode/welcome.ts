/**
 * The welcome views a new user may meet before any VM, in code-server with chromium (extension
 * from the source folder):
 *   1. QEMU missing (the Qemu Path setting points at nothing): the view says so, with the command
 *      that installs it; Show Details names the binary looked for; no Create VM button.
 *   2. No base image (an empty SANDBOXVM_IMAGE_CACHE): the view offers Build Image; clicking it
 *      shows the build's steps in a notification; Cancel ends the build, the view offers Build
 *      Image again and the cache holds no half-built stage.
 * Between the two the settings change and the window reloads (a new data directory, so a new
 * service with the new QEMU path). Screenshots in $SANDBOXVM_TEST_ARTIFACTS/welcome (default
 * /tmp/sandboxvm-vscode/welcome). Run: node --import tsx test/vscode/welcome.ts (after npm run build).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright-core';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from './codeServer';

const OUT = path.join(process.env.SANDBOXVM_TEST_ARTIFACTS ?? '/tmp/sandboxvm-vscode', 'welcome');
const t0 = Date.now();
const step = (m: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${m}`);

async function shot(page: Page, name: string): Promise<void> {
  await page.mouse.move(900, 650);
  await page.waitForTimeout(400);
  await page.screenshot({ path: path.join(OUT, `${name}.png`) });
  step(`screenshot ${name}.png`);
}

function writeSettings(userData: string, settings: Record<string, unknown>): void {
  const file = path.join(userData, 'User', 'settings.json');
  const current = JSON.parse(fs.readFileSync(file, 'utf8'));
  fs.writeFileSync(file, JSON.stringify({ ...current, ...settings }, null, 2));
}

async function main(): Promise<void> {
  const bin = installCodeServer();
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  const homes = [path.join(OUT, 'home-noqemu'), path.join(OUT, 'home-noimage')];
  const emptyCache = path.join(OUT, 'images');
  for (const d of [...homes, emptyCache]) fs.mkdirSync(d, { recursive: true, mode: 0o700 });
  const scratch = path.join(OUT, 'code-server');
  const cs = await startCodeServer(bin, scratch, { SANDBOXVM_IMAGE_CACHE: emptyCache }, { 'sandboxvm.dataDirectory': homes[0], 'sandboxvm.qemuPath': '/nonexistent/qemu-system-x86_64' });
  const browser = await launchChromium();
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await page.goto(workbenchUrl(cs, REPO));
    await waitForWorkbench(page);
    await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
    const noQemu = page.locator('.welcome-view-content', { hasText: 'QEMU is not installed' }).first();
    await noQemu.waitFor({ timeout: 60_000 });
    const text = await page.locator('.pane-body').first().innerText();
    if (!text.includes('sudo apt-get install qemu-system-x86 qemu-utils')) throw new Error(`the QEMU welcome lacks the install command: ${text}`);
    if (/Create VM/.test(text)) throw new Error('Create VM is offered while QEMU is missing');
    await shot(page, '1-qemu-missing');
    await noQemu.locator('a.monaco-button', { hasText: 'Show Details' }).click();
    const dialog = page.locator('.monaco-dialog-box').first();
    await dialog.waitFor({ timeout: 15_000 });
    const detail = await dialog.innerText();
    if (!detail.includes('/nonexistent/qemu-system-x86_64') || !detail.includes('sudo apt-get install qemu-system-x86 qemu-utils')) throw new Error(`the details do not say which QEMU was looked for and how to install it: ${detail}`);
    await shot(page, '2-qemu-details');
    await dialog.locator('.monaco-button', { hasText: 'Cancel' }).click();

    writeSettings(path.join(scratch, 'user-data'), { 'sandboxvm.dataDirectory': homes[1], 'sandboxvm.qemuPath': '' });
    await page.reload();
    await waitForWorkbench(page);
    // The reloaded window restores the open view; a click on its icon would close it.
    const open = await page.locator('.part.sidebar .title', { hasText: /sandbox vms/i }).first().waitFor({ timeout: 10_000 }).then(() => true, () => false);
    if (!open) await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
    const noImage = page.locator('.welcome-view-content', { hasText: 'No base image yet' }).first();
    await noImage.waitFor({ timeout: 60_000 });
    await shot(page, '3-no-image');
    await noImage.locator('a.monaco-button', { hasText: 'Build Image' }).click();
    const toast = page.locator('.notification-toast', { hasText: 'Building the base image' }).first();
    await toast.waitFor({ timeout: 30_000 });
    await page.locator('.welcome-view-content', { hasText: 'Building the base image' }).first().waitFor({ timeout: 10_000 });
    await page.locator('.notification-toast', { hasText: /\(\d\/\d+\)/ }).first().waitFor({ timeout: 120_000 });
    await shot(page, '4-building');
    step(`progress: ${(await toast.innerText()).replace(/\s+/g, ' ')}`);
    await toast.hover();
    await toast.locator('.monaco-button', { hasText: 'Cancel' }).click();
    await noImage.waitFor({ timeout: 60_000 });
    await shot(page, '5-cancelled');
    const left = fs.readdirSync(emptyCache).filter((f) => f.startsWith('base-') || f.startsWith('stage1-') || f.startsWith('.tmp-'));
    if (left.length) throw new Error(`the cancelled build left ${left.join(', ')} in ${emptyCache}`);
    step('cancelled: the view offers Build Image again and the cache holds no stage');
  } catch (err) {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: path.join(OUT, 'failure.png') }).catch(() => undefined);
    throw err;
  } finally {
    await browser.close().catch(() => undefined);
    await cs.stop();
    for (const home of homes) {
      const pidFile = path.join(home, 'service.pid');
      const pid = fs.existsSync(pidFile) ? Number(fs.readFileSync(pidFile, 'utf8')) : 0;
      if (pid) {
        try {
          process.kill(pid, 'SIGTERM');
        } catch {
          // gone
        }
      }
    }
  }
  step(`welcome views passed; screenshots in ${OUT}`);
}

main().then(() => process.exit(0), (err) => {
  console.error(`welcome: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
