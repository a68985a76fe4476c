/**
 * Screenshots of the VM details panel and the serial console in code-server with chromium, in the
 * dark and the light theme: a running VM with a CPU burst in its plot, the view with live CPU %
 * and a port under the VM. PNGs go to $SANDBOXVM_TEST_ARTIFACTS/details-screens (default
 * /tmp/sandboxvm-vscode). Run: node --import tsx test/vscode/details-screenshots.ts
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright-core';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from './codeServer';

const OUT = path.join(process.env.SANDBOXVM_TEST_ARTIFACTS ?? '/tmp/sandboxvm-vscode', 'details-screens');
const THEMES = { dark: 'Default Dark Modern', light: 'Default Light Modern' } as const;

async function palette(page: Page, title: string, pick?: string): Promise<void> {
  await page.locator('.monaco-workbench').first().click({ position: { x: 700, y: 20 } });
  await page.keyboard.press('F1');
  await page.locator('.quick-input-widget input').fill(`>${title}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: title.replace(/^.*: /, '') }).first().waitFor();
  await page.keyboard.press('Enter');
  if (pick) {
    await page.locator('.quick-input-list .monaco-list-row', { hasText: pick }).first().waitFor();
    await page.keyboard.press('Enter');
  }
}

async function main(): Promise<void> {
  const bin = installCodeServer();
  fs.rmSync(OUT, { recursive: true, force: true });
  fs.mkdirSync(OUT, { recursive: true });
  const home = new TestHome({ SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
  try {
    await home.bootedVm('dev', ['--cpus', '2']);
    // A listener for the tree's port child, and CPU bursts for the plot.
    await home.ok(['exec', 'dev', '--', 'sh', '-c', `setsid node -e "require('net').createServer().listen(8080)" </dev/null >/dev/null 2>&1 & setsid sh -c 'for i in 1 2 3 4 5 6; do timeout 8 sh -c "while :; do :; done"; sleep 12; done' </dev/null >/dev/null 2>&1 &`]);
    for (const [theme, name] of Object.entries(THEMES)) {
      const cs = await startCodeServer(bin, path.join(path.dirname(OUT), `code-server-details-${theme}`), { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() }, { 'workbench.colorTheme': name });
      const browser = await launchChromium();
      try {
        const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
        await page.goto(workbenchUrl(cs, REPO));
        await waitForWorkbench(page);
        await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
        await page.locator('.monaco-list-row', { hasText: 'dev' }).first().waitFor({ timeout: 60_000 });
        await palette(page, 'Sandbox VMs: Show Details', 'dev');
        const frame = page.frameLocator('iframe.webview').frameLocator('iframe');
        await frame.locator('svg.plot polyline').first().waitFor({ timeout: 60_000 });
        await page.waitForTimeout(25_000);
        const vmRow = page.locator('.monaco-list-row', { hasText: 'dev' }).first();
        if ((await vmRow.getAttribute('aria-expanded')) === 'false') await vmRow.locator('.monaco-tl-twistie').click();
        await page.locator('.monaco-list-row', { hasText: '8080/tcp' }).first().waitFor({ timeout: 30_000 }).catch(() => console.log('no port row'));
        await page.screenshot({ path: path.join(OUT, `details-${theme}.png`) });
        console.log(`details-${theme}.png`);
        if (theme === 'dark') {
          await palette(page, 'Sandbox VMs: Open Serial Console', 'dev');
          await page.locator('.xterm-rows', { hasText: 'root@dev' }).first().waitFor({ timeout: 30_000 });
          await page.keyboard.type('uname -a\n');
          await page.waitForTimeout(3000);
          await page.screenshot({ path: path.join(OUT, 'serial-console.png') });
          console.log('serial-console.png');
        }
      } finally {
        await browser.close().catch(() => undefined);
        await cs.stop();
      }
    }
  } finally {
    await home.dispose();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`details-screenshots: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
