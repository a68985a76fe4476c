/**
 * `npm run test:vscode`: the mocha suites in test/vscode/suite run inside the real extension host of
 * code-server (the `payload` URL parameter: extensionDevelopmentPath + extensionTestsPath), against
 * a real service and real guests in a fresh SANDBOXVM_HOME. Exits with the suites' result. Scratch
 * files and a final screenshot go to $SANDBOXVM_TEST_ARTIFACTS (default /tmp/sandboxvm-vscode).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { imageCacheDir } from '../../runtime/common/paths';
import { TestHome } from '../vm/fixture';
import { buildSuites } from './buildSuites';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, workbenchUrl } from './codeServer';

const ARTIFACTS = process.env.SANDBOXVM_TEST_ARTIFACTS ?? '/tmp/sandboxvm-vscode';
const TIMEOUT_MS = 20 * 60_000;

async function main(): Promise<number> {
  const t0 = Date.now();
  if (!fs.existsSync(path.join(REPO, 'dist', 'extension.js'))) throw new Error('dist/extension.js is missing: run `npm run build` first');
  const bin = installCodeServer();
  const index = await buildSuites();
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const home = new TestHome();
  const results = path.join(ARTIFACTS, 'results.json');
  // The suites reload the window once (suite/index.ts): the handoff file says they did.
  const handoff = path.join(ARTIFACTS, 'reload-handoff.json');
  const cs = await startCodeServer(bin, path.join(ARTIFACTS, 'code-server'), {
    SANDBOXVM_HOME: home.dir,
    // code-server gets XDG folders of its own: keep the shared image cache (or the first create builds an image).
    SANDBOXVM_IMAGE_CACHE: imageCacheDir(),
    SANDBOXVM_VSCODE_RESULTS: results,
    SANDBOXVM_VSCODE_HANDOFF: handoff,
    // Go to File and the Search view on guest folders are proposed API (extension/guestFs/guestSearchProviders.ts).
    // (An extension under development gets proposed API from code-server anyway; an installed one, as in vsix-smoke.ts, only with this.)
  }, {}, undefined, ['--enable-proposed-api', 'sandboxvms.sandbox-vms']);
  let browser: Awaited<ReturnType<typeof launchChromium>> | undefined;
  let code = 1;
  try {
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
    const consoleLog = fs.createWriteStream(path.join(ARTIFACTS, 'browser-console.log'));
    page.on('console', (m) => consoleLog.write(`[${m.type()}] ${m.text()}\n`));
    const exited = new Promise<number>((resolve) => void page.exposeFunction('codeAutomationExit', (c: number) => resolve(c)));
    console.log(`code-server ready in ${((Date.now() - t0) / 1000).toFixed(1)} s; running the suites`);
    await page.goto(workbenchUrl(cs, REPO, index));
    await waitForWorkbench(page);
    const timeout = new Promise<number>((resolve) => setTimeout(() => resolve(-1), TIMEOUT_MS));
    code = await Promise.race([exited, timeout]);
    await page.screenshot({ path: path.join(ARTIFACTS, 'final.png') }).catch(() => undefined);
    if (code === -1) console.error(`the suites did not finish within ${TIMEOUT_MS / 60_000} min`);
  } finally {
    await browser?.close().catch(() => undefined);
    await cs.stop();
    await home.dispose();
  }
  if (fs.existsSync(results)) {
    const r = JSON.parse(fs.readFileSync(results, 'utf8')) as { failures: number; results: { title: string; state: string; ms?: number; error?: string }[] };
    for (const t of r.results) console.log(`${t.state === 'passed' ? '✔' : '✖'} ${t.title}${t.ms !== undefined ? ` (${t.ms} ms)` : ''}${t.error ? `\n${t.error}` : ''}`);
  } else {
    console.error(`no results were written; see ${cs.logFile} and ${ARTIFACTS}/browser-console.log`);
    code = code === 0 ? 1 : code;
  }
  console.log(`test:vscode ${code === 0 ? 'passed' : 'FAILED'} in ${((Date.now() - t0) / 1000).toFixed(1)} s (artifacts in ${ARTIFACTS})`);
  return code;
}

main().then((c) => process.exit(c), (err) => {
  console.error(`test:vscode: ${(err as Error).stack ?? err}`);
  process.exit(1);
});
