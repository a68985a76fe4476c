/**
 * Screenshots of workspace sync and pull in real VS Code, as a new user meets them: the running
 * VM's context menu, Sync Workspace Folder to VM (the guest path box, the first copy's progress),
 * the sync under its VM and in the status bar, its tooltip and context menu, Pull Folder from VM
 * from the palette (the host folder pick, the summary with a held-back file, the review pick), and
 * Stop Syncing. Steps and what the UI showed are printed; screenshots go to
 * $SANDBOXVM_TEST_ARTIFACTS (default /tmp/sandboxvm-sync-shots).
 * `node --import tsx test/vscode/sync-screenshots.ts` (after `npm run build`).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { screenshotRun } from './screenshotRun';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from './codeServer';

const VM = 'dev';
const run = screenshotRun('/tmp/sandboxvm-sync-shots');
const { step, shot } = run;
const ARTIFACTS = run.dir;

async function main(): Promise<void> {
  const home = new TestHome({ SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
  const bin = installCodeServer();
  let cs: Awaited<ReturnType<typeof startCodeServer>> | undefined;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  try {
    await home.bootedVm(VM);
    step('VM running');
    cs = await startCodeServer(bin, path.join(ARTIFACTS, 'code-server'), { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
    const ws = cs.workspace;
    fs.mkdirSync(path.join(ws, 'src'), { recursive: true });
    fs.writeFileSync(path.join(ws, 'README.md'), '# app\n\nSynced into the sandbox VM.\n');
    fs.writeFileSync(path.join(ws, '.gitignore'), 'node_modules/\n');
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(ws, 'src', `module${i}.ts`), `export const value${i} = ${i};\n`.repeat(200));
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(workbenchUrl(cs, REPO));
    await waitForWorkbench(page);
    await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
    const tree = page.locator('[id="workbench.view.extension.sandboxVms"] .monaco-list-row, .pane-body .monaco-list-row');
    const row = (text: string | RegExp) => page.locator('.monaco-list-row', { hasText: text }).first();
    await row(VM).waitFor({ timeout: 60_000 });
    step('workbench up');

    await row(VM).click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').first().waitFor({ timeout: 10_000 });
    await shot(page, 'vm-context-menu');
    await page.locator('.context-view .action-label', { hasText: 'Sync Workspace Folder to VM...' }).first().click();
    await page.locator('.quick-input-widget input').first().waitFor({ timeout: 30_000 });
    await shot(page, 'guest-path-box');
    await page.keyboard.press('Enter');
    const began = Date.now();
    await page.locator('.notification-toast', { hasText: 'Syncing workspace' }).first().waitFor({ timeout: 15_000 }).then(() => shot(page, 'first-copy-progress'), () => step('no progress toast seen (the copy was quicker)'));
    await row(/in sync/).waitFor({ timeout: 120_000 });
    step(`the tree reads in sync ${Date.now() - began} ms after Enter`);
    step(`tree rows: ${(await tree.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).join(' | ')}`);
    step(`status bar: ${(await page.locator('.statusbar-item', { hasText: /in sync|syncing/ }).allInnerTexts()).join(' | ')}`);
    await shot(page, 'tree-with-sync');

    await row(/in sync/).hover();
    await page.locator('.monaco-hover').first().waitFor({ timeout: 10_000 }).catch(() => undefined);
    step(`tooltip: ${(await page.locator('.monaco-hover').first().innerText().catch(() => '(none)')).replace(/\n/g, ' / ')}`);
    await shot(page, 'sync-tooltip');
    await row(/in sync/).click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').first().waitFor({ timeout: 10_000 });
    await shot(page, 'sync-context-menu');
    await page.keyboard.press('Escape');

    // An edit on the host shows briefly as syncing, then in sync again.
    fs.appendFileSync(path.join(ws, 'README.md'), 'One more line.\n');
    await page.waitForTimeout(300);
    await shot(page, 'after-an-edit');

    // The guest folder swapped for a file: the next change cannot land, and the sync says so.
    await home.ok(['exec', VM, '--', 'sh', '-c', 'rm -rf /root/workspace && echo in-the-way > /root/workspace']);
    fs.appendFileSync(path.join(ws, 'README.md'), 'And another.\n');
    const broken = page.locator('.monaco-list-row', { hasText: /→/ }).filter({ hasNotText: /in sync|syncing/ }).first();
    await broken.waitFor({ timeout: 60_000 }).then(async () => {
      step(`sync row in error: ${(await broken.innerText()).replace(/\s+/g, ' ')}`);
      step(`status bar: ${(await page.locator('.statusbar-item', { hasText: /sync/ }).allInnerTexts()).join(' | ')}`);
      await shot(page, 'sync-error');
      await broken.hover();
      await page.locator('.monaco-hover').first().waitFor({ timeout: 10_000 }).catch(() => undefined);
      step(`tooltip: ${(await page.locator('.monaco-hover').first().innerText().catch(() => '(none)')).replace(/\n/g, ' / ')}`);
      await shot(page, 'sync-error-tooltip');
    }, async () => step(`the sync did not report an error within 60 s; the guest has: ${(await home.ok(['exec', VM, '--', 'sh', '-c', 'ls -ld /root/workspace; tail -n 1 /root/workspace/README.md 2>&1; true'])).replace(/\n/g, ' / ')}; the row reads ${(await row(/→ \/root\/workspace/).innerText()).replace(/\s+/g, ' ')}`));
    await home.ok(['exec', VM, '--', 'rm', '-f', '/root/workspace']);
    await page.keyboard.press('Escape');

    await home.ok(['exec', VM, '--', 'sh', '-c', 'mkdir -p /root/results/.vscode && echo "build ok" > /root/results/report.txt && echo \'{"version":"2.0.0","tasks":[]}\' > /root/results/.vscode/tasks.json']);
    await page.keyboard.press('F1');
    await page.keyboard.type('>Pull Folder from VM', { delay: 30 });
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Pull Folder from VM' }).first().waitFor({ timeout: 30_000 });
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget input').first().waitFor({ timeout: 30_000 });
    await page.keyboard.press('End');
    await page.keyboard.type('results', { delay: 30 });
    await shot(page, 'pull-guest-path');
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'results' }).first().waitFor({ timeout: 30_000 });
    await shot(page, 'pull-host-folder');
    await page.keyboard.press('Enter');
    const summary = page.locator('.notification-toast', { hasText: 'Pulled' }).first();
    await summary.waitFor({ timeout: 120_000 });
    step(`pull summary: ${(await summary.innerText()).replace(/\n/g, ' / ')}`);
    await shot(page, 'pull-summary');
    await summary.locator('.monaco-button', { hasText: 'Review Held-Back Files' }).first().click();
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'tasks.json' }).first().waitFor({ timeout: 30_000 });
    await shot(page, 'pull-review-held-back');
    await page.keyboard.press('Escape');

    const syncRow = row(/→ \/root\/workspace/);
    step(`before Stop Syncing: ${(await tree.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).join(' | ')}`);
    await syncRow.hover();
    await syncRow.locator('.action-label[aria-label="Stop Syncing"]').click();
    await page.locator('.monaco-list-row', { hasText: /→ \/root\/workspace/ }).first().waitFor({ state: 'detached', timeout: 30_000 });
    step(`after Stop Syncing: ${(await tree.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).join(' | ')}`);
    await shot(page, 'after-stop');
  } finally {
    await browser?.close().catch(() => undefined);
    await cs?.stop();
    await home.dispose();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`sync-screenshots: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
