/**
 * What the screenshot scripts share: an artifacts folder emptied at start (SANDBOXVM_TEST_ARTIFACTS
 * or the script's default), timestamped step lines, and numbered screenshots in that folder.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Page } from 'playwright-core';

export interface ScreenshotRun {
  /** The artifacts folder (empty when the run starts). */
  readonly dir: string;
  /** Prints `[seconds since start] message`. */
  step(message: string): void;
  /** Waits half a second for animations, then saves `<NN>-<name>.png` in `dir`. */
  shot(page: Page, name: string): Promise<void>;
}

export function screenshotRun(defaultDir: string): ScreenshotRun {
  const dir = path.resolve(process.env.SANDBOXVM_TEST_ARTIFACTS ?? defaultDir);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const t0 = Date.now();
  const step = (message: string) => console.log(`[${((Date.now() - t0) / 1000).toFixed(1)} s] ${message}`);
  let n = 0;
  return {
    dir,
    step,
    async shot(page, name) {
      await page.waitForTimeout(500);
      const file = path.join(dir, `${String(++n).padStart(2, '0')}-${name}.png`);
      await page.screenshot({ path: file });
      step(`screenshot ${path.basename(file)}`);
    },
  };
}
