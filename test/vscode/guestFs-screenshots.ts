/**
 * Screenshots of guest files in real VS Code, as a user gets them from Open Folder in VM: a window
 * opened on `sandboxvm://<vm>/root/project` (what the command opens in a new window), the Explorer
 * listing it, a file open, a change made in the guest appearing in the editor, Go to File (Ctrl+P)
 * and the Search view on that folder, then Find in VM Folder from the palette. Steps and what the UI showed are printed; screenshots go to
 * $SANDBOXVM_TEST_ARTIFACTS (default /tmp/sandboxvm-guestfs-shots).
 * `node --import tsx test/vscode/guestFs-screenshots.ts` (after `npm run build`).
 */
import * as path from 'node:path';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { screenshotRun } from './screenshotRun';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench } from './codeServer';

const VM = 'gfs-shot';
const run = screenshotRun('/tmp/sandboxvm-guestfs-shots');
const { step, shot } = run;
const ARTIFACTS = run.dir;

async function main(): Promise<void> {
  const home = new TestHome({ SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
  const bin = installCodeServer();
  let cs: Awaited<ReturnType<typeof startCodeServer>> | undefined;
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  try {
    await home.ok(['create', VM, '--memory', '512M']);
    await home.ok(['start', VM], { timeoutMs: 300_000 });
    step('VM running');
    const script = [
      'mkdir -p /root/project/src /root/project/docs && cd /root/project',
      "printf '# project\\n\\nA folder inside the sandbox VM, edited from VS Code.\\n' > README.md",
      "printf '#include <stdio.h>\\n\\nint main(void) {\\n  puts(\"hello from the guest\");\\n  return 0;\\n}\\n' > src/main.c",
      "printf 'all:\\n\\tcc -o hello src/main.c\\n' > Makefile",
      "printf 'notes\\n' > docs/notes.txt",
      'head -c 4096 /dev/urandom > data.bin',
      'ln -s src code',
    ].join(' && ');
    await home.ok(['exec', VM, '--', 'sh', '-c', script]);
    cs = await startCodeServer(bin, path.join(ARTIFACTS, 'code-server'), { SANDBOXVM_HOME: home.dir, SANDBOXVM_IMAGE_CACHE: imageCacheDir() });
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const remote = `vscode-remote://127.0.0.1:${cs.port}${REPO}`;
    const folder = `sandboxvm://${VM}/root/project`;
    await page.goto(`${cs.url}/?folder=${encodeURIComponent(folder)}&payload=${encodeURIComponent(JSON.stringify([['extensionDevelopmentPath', remote]]))}`);
    await waitForWorkbench(page);
    step('workbench up');
    const rows = page.locator('.explorer-folders-view .monaco-list-row');
    await rows.filter({ hasText: 'README.md' }).first().waitFor({ timeout: 120_000 });
    step(`Explorer rows: ${(await rows.allInnerTexts()).join(' | ')}`);
    await shot(page, 'explorer');
    await rows.filter({ hasText: 'README.md' }).first().click();
    await page.locator('.monaco-editor .view-lines', { hasText: 'A folder inside the sandbox VM' }).first().waitFor({ timeout: 60_000 });
    await rows.filter({ hasText: /^src$/ }).first().click();
    await rows.filter({ hasText: 'main.c' }).first().waitFor({ timeout: 60_000 });
    await shot(page, 'explorer-file-open');
    await home.ok(['exec', VM, '--', 'sh', '-c', "printf '\\nAdded inside the guest.\\n' >> /root/project/README.md"]);
    const changed = Date.now();
    await page.locator('.monaco-editor .view-lines', { hasText: 'Added inside the guest.' }).first().waitFor({ timeout: 60_000 });
    step(`a guest-side change showed in the editor after ${Date.now() - changed} ms`);
    await shot(page, 'guest-change-in-editor');
    await rows.filter({ hasText: 'data.bin' }).first().click();
    await page.waitForTimeout(1500);
    step(`binary file editor says: ${(await page.locator('.editor-container').first().innerText()).replace(/\s+/g, ' ').slice(0, 200)}`);
    await shot(page, 'binary-file');
    // Go to File: are guest files offered?
    await page.keyboard.press('Control+P');
    await page.keyboard.type('main', { delay: 50 });
    await page.waitForTimeout(5000);
    step(`Go to File for "main": ${(await page.locator('.quick-input-list .monaco-list-row').allInnerTexts()).join(' | ') || '(no rows)'}`);
    await shot(page, 'go-to-file');
    await page.keyboard.press('Escape');
    await page.keyboard.press('Control+Shift+F');
    await page.keyboard.type('hello', { delay: 50 });
    await page.keyboard.press('Enter');
    await page.waitForTimeout(8000);
    step(`Search view for "hello": ${(await page.locator('.search-view').first().innerText().catch(() => '')).replace(/\s+/g, ' ').slice(0, 300)}`);
    await shot(page, 'search');
    // What the extension offers instead: Find in VM Folder (grep in the guest) from the palette.
    await page.keyboard.press('Escape');
    await page.keyboard.press('F1');
    await page.keyboard.type('>Find in VM Folder', { delay: 30 });
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Find in VM Folder' }).first().waitFor({ timeout: 30_000 });
    await page.keyboard.press('Enter');
    await page.locator('.quick-input-widget input').first().waitFor({ timeout: 30_000 });
    await page.keyboard.type('hello', { delay: 30 });
    await page.keyboard.press('Enter');
    const found = page.locator('.quick-input-list .monaco-list-row', { hasText: 'main.c' });
    await found.first().waitFor({ timeout: 60_000 });
    step(`Find in VM Folder for "hello": ${(await page.locator('.quick-input-list .monaco-list-row').allInnerTexts()).join(' | ')}`);
    await shot(page, 'find-in-vm-folder');
    // The results come in grep's order (the guest's directory order): pick main.c's line by its text.
    await page.locator('.quick-input-list .monaco-list-row', { hasText: 'hello from the guest' }).first().click();
    await page.locator('.monaco-editor .view-lines', { hasText: 'hello from the guest' }).first().waitFor({ timeout: 60_000 });
    await shot(page, 'find-in-vm-folder-opened');
  } finally {
    await browser?.close().catch(() => undefined);
    await cs?.stop();
    await home.dispose();
  }
}

main().then(() => process.exit(0), (err) => {
  console.error(`guestFs-screenshots: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
