/**
 * Screenshots of the checkpoint tree in real VS Code. Procedure: a booted VM gets, through the CLI,
 * a named checkpoint, three undo points (exec --undo-point), an apply of the named one (the state
 * left becomes "before applying ..."), a second named checkpoint and one more undo point; then
 * code-server shows the view: the tree (branches, the folded undo points, Now), a checkpoint's
 * tooltip and context menu, the undo group expanded, the VM's context menu, the Create Checkpoint
 * name box and Apply's choice. Steps and the rows' text are printed; screenshots go to
 * $SANDBOXVM_TEST_ARTIFACTS (default /tmp/sandboxvm-checkpoint-shots).
 * `node --import tsx test/vscode/checkpoint-screenshots.ts` (after `npm run build`).
 */
import * as path from 'node:path';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { screenshotRun } from './screenshotRun';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from './codeServer';

const VM = 'dev';
const run = screenshotRun('/tmp/sandboxvm-checkpoint-shots');
const { step, shot } = run;
const ARTIFACTS = run.dir;

async function main(): Promise<void> {
  const home = new TestHome({ SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
  const bin = installCodeServer();
  let cs: Awaited<ReturnType<typeof startCodeServer>> | undefined;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  try {
    await home.bootedVm(VM);
    cs = await startCodeServer(bin, path.join(ARTIFACTS, 'code-server'), { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    await page.goto(workbenchUrl(cs, REPO));
    await waitForWorkbench(page);
    await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
    const rows = page.locator('.pane-body .monaco-list-row');
    const row = (text: string | RegExp) => page.locator('.monaco-list-row', { hasText: text }).first();
    await row(VM).waitFor({ timeout: 60_000 });
    await page.mouse.move(1000, 600);
    await shot(page, 'no-checkpoints');
    // Made through the CLI while the view shows: the view follows the service's events.
    await home.ok(['checkpoint', 'create', VM, 'clean install']);
    for (let i = 1; i <= 3; i++) await home.ok(['exec', VM, '--undo-point', '--', 'sh', '-c', `echo run ${i} >> /root/runs`]);
    await home.ok(['checkpoint', 'apply', VM, 'clean install']);
    await home.ok(['checkpoint', 'create', VM, 'tools installed']);
    await home.ok(['exec', VM, '--undo-point', '--', 'true']);
    step(`checkpoints made:\n${await home.ok(['checkpoint', 'list', VM])}`);
    await row('Checkpoints').waitFor({ timeout: 60_000 }).catch(async (err) => {
      await shot(page, 'no-checkpoints-row');
      step(`tree rows: ${(await rows.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).join(' | ')}`);
      throw err;
    });
    await row('Now').waitFor({ timeout: 30_000 });
    await page.mouse.move(1000, 600);
    step(`tree rows: ${(await rows.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).join(' | ')}`);
    await shot(page, 'tree');

    await row(/^tools installed/).hover();
    await page.locator('.monaco-hover', { hasText: 'on disk' }).first().waitFor({ timeout: 10_000 }).catch(() => undefined);
    step(`tooltip: ${(await page.locator('.monaco-hover').first().innerText().catch(() => '(none)')).replace(/\n/g, ' / ')}`);
    await shot(page, 'checkpoint-tooltip');
    await page.mouse.move(1000, 600);

    await row(/^\d+ undo points/).click();
    await row(/undo point 3/).waitFor({ timeout: 10_000 }).catch(() => undefined);
    step(`expanded: ${(await rows.allInnerTexts()).map((t) => t.replace(/\s+/g, ' ')).join(' | ')}`);
    await shot(page, 'undo-points-expanded');

    await row(/^clean install/).click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').first().waitFor({ timeout: 10_000 });
    await shot(page, 'checkpoint-context-menu');
    await page.keyboard.press('Escape');

    await row(VM).click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').first().waitFor({ timeout: 10_000 });
    await shot(page, 'vm-context-menu');
    await page.locator('.context-view .action-label', { hasText: 'Create Checkpoint...' }).first().click();
    await page.locator('.quick-input-widget input').first().waitFor({ timeout: 30_000 });
    await shot(page, 'create-name-box');
    await page.keyboard.press('Escape');

    await row(/^clean install/).hover();
    await row(/^clean install/).locator('.action-label[aria-label="Apply Checkpoint..."]').click();
    await page.locator('.quick-input-widget', { hasText: 'Checkpoint the current state' }).first().waitFor({ timeout: 30_000 });
    await shot(page, 'apply-choice');
    await page.keyboard.press('Escape');
  } finally {
    await browser?.close().catch(() => undefined);
    await cs?.stop();
    await home.dispose();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`checkpoint-screenshots: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
