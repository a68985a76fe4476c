/**
 * The user journey, clicked in chromium against the installed .vsix, with code-server running as a
 * normal user (not root), as a new user meets the extension:
 *   the empty view (welcome with Create VM) -> Create VM through the wizard (name, CPUs, memory,
 *   disk) -> Start from the row's inline button, the VM running in the tree (its tooltip names the
 *   accelerator, probed through the packaged koffi) -> Open Terminal from the context menu,
 *   `uname -r` shows the guest kernel -> a web server started in that terminal shows as a forwarded
 *   port under the VM, and Open in Browser opens it -> Sync Workspace Folder to VM from the
 *   palette, an edit saved in VS Code shows in the guest's terminal -> Save, Start (restore) with the terminal carrying on ->
 *   a file written, Create Checkpoint from the VM's context menu, the file changed in the terminal, Apply
 *   from the checkpoint's node ("checkpoint the current state, then apply"), the file as it was in a new terminal ->
 *   Stop -> Delete (modal) -> the empty view again.
 *
 * Procedure, as root: make the user when missing (useradd; SANDBOXVM_JOURNEY_USER, default
 * sbvm-journey), give them a readable copy of code-server, install dist-vsix/sandbox-vms.vsix into
 * their extensions dir as them, build (or find) the base image for the installed extension's agent
 * in root's image cache and hard-link it into an image cache the user owns (SANDBOXVM_IMAGE_CACHE),
 * run code-server as the user (setpriv) and drive it. Run as a normal user, it runs as that user.
 * Screenshots (one per step) go to $SANDBOXVM_JOURNEY_ARTIFACTS (default /tmp/sandboxvm-journey);
 * with SANDBOXVM_JOURNEY_MEDIA=<dir> the walkthrough's images are cropped from them into <dir>.
 *
 * Run: npm run test:journey (packages the .vsix first).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Locator, Page } from 'playwright-core';
import { imageCacheDir } from '../../runtime/common/paths';
import { ensureBaseImage } from '../../runtime/image/baseImage';
import { findOnPath } from '../../runtime/qemu/locate';
import { REPO, installCodeServer, launchChromium, startCodeServer, waitForWorkbench, type CodeServer, type RunAs } from './codeServer';

const ARTIFACTS = path.resolve(process.env.SANDBOXVM_JOURNEY_ARTIFACTS ?? '/tmp/sandboxvm-journey');
const SCREENS = path.join(ARTIFACTS, 'screens');
const MEDIA = process.env.SANDBOXVM_JOURNEY_MEDIA ? path.resolve(process.env.SANDBOXVM_JOURNEY_MEDIA) : undefined;
const USER = process.env.SANDBOXVM_JOURNEY_USER ?? 'sbvm-journey';
const SHARED_CODE_SERVER = '/opt/sandboxvm-test/code-server';
const VM = 'demo';
/** The guest port the journey's web server listens on (unusual, so the host's same port is likely free). */
const GUEST_PORT = 8642;
const t0 = Date.now();

function step(message: string): void {
  console.log(`[${((Date.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${message}`);
}

function passwdEntry(user: string): RunAs | undefined {
  const r = spawnSync('getent', ['passwd', user], { encoding: 'utf8' });
  if (r.status !== 0) return undefined;
  const f = r.stdout.trim().split(':');
  return { user, uid: Number(f[2]), gid: Number(f[3]), home: f[5] };
}

/** The normal user the journey runs as: made when missing (as root), or the caller when not root. */
function journeyUser(): RunAs | undefined {
  if (process.getuid!() !== 0) return undefined;
  if (!passwdEntry(USER)) {
    execFileSync('useradd', ['--create-home', '--shell', '/bin/bash', USER], { stdio: 'inherit' });
    step(`made the user ${USER}`);
  }
  return passwdEntry(USER)!;
}

function asUser(user: RunAs | undefined, cmd: string, args: string[], env: NodeJS.ProcessEnv): string {
  const userEnv = user ? { HOME: user.home, USER: user.user, LOGNAME: user.user, PATH: process.env.PATH, LANG: 'C.UTF-8', ...env } : { ...process.env, ...env };
  const [file, argv] = user ? ['setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', cmd, ...args]] : [cmd, args];
  return execFileSync(file, argv, { env: userEnv, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], cwd: user?.home });
}

/** code-server the user can run: root's install lives under /root (0700), so a copy in /opt. */
function codeServerFor(user: RunAs | undefined): string {
  const bin = installCodeServer();
  if (!user) return bin;
  const ok = spawnSync('setpriv', [`--reuid=${user.uid}`, `--regid=${user.gid}`, '--init-groups', '--', 'test', '-r', bin]).status === 0;
  if (ok) return bin;
  const dir = path.resolve(path.dirname(bin), '..', '..');
  const shared = path.join(SHARED_CODE_SERVER, path.relative(dir, bin));
  const version = (b: string) => {
    const config = fs.mkdtempSync('/tmp/cs-version-');
    try {
      return spawnSync(b, ['--version'], { encoding: 'utf8', env: { ...process.env, XDG_CONFIG_HOME: config } }).stdout?.split('\n').find((l) => /^\d+\.\d+\.\d+ /.test(l));
    } finally {
      fs.rmSync(config, { recursive: true, force: true });
    }
  };
  if (!fs.existsSync(shared) || version(shared) !== version(bin)) {
    const tmp = `${SHARED_CODE_SERVER}.tmp-${process.pid}`;
    fs.rmSync(tmp, { recursive: true, force: true });
    fs.mkdirSync(path.dirname(tmp), { recursive: true });
    execFileSync('cp', ['-a', dir, tmp]);
    execFileSync('chmod', ['-R', 'a+rX', tmp]);
    fs.rmSync(SHARED_CODE_SERVER, { recursive: true, force: true });
    fs.renameSync(tmp, SHARED_CODE_SERVER);
    step(`copied code-server to ${SHARED_CODE_SERVER} (root's install is not readable by ${user.user})`);
  }
  return shared;
}

/**
 * An image cache the user owns holding the base image the installed extension's service will look
 * for: built (or found) in root's cache for that agent, hard-linked in (read-only files; VM disks
 * are overlays in the user's data home).
 */
async function userImageCache(agentDir: string, cacheDir: string, user: RunAs | undefined): Promise<string> {
  const nodeBinary = findOnPath('node') ?? process.execPath;
  const image = await ensureBaseImage({ cacheDir: imageCacheDir(), agentDir, nodeBinary, onProgress: (p) => step(`base image ${p.step}/${p.total} ${p.message}`) });
  const target = path.join(cacheDir, path.basename(image.dir));
  fs.mkdirSync(target, { recursive: true });
  for (const f of fs.readdirSync(image.dir)) {
    try {
      fs.linkSync(path.join(image.dir, f), path.join(target, f));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EXDEV') throw err;
      fs.copyFileSync(path.join(image.dir, f), path.join(target, f));
    }
  }
  if (user) execFileSync('chown', [`${user.uid}:${user.gid}`, cacheDir, target]);
  return path.basename(image.dir);
}

let shotNo = 0;
async function shot(page: Page, name: string): Promise<string> {
  await page.waitForTimeout(400);
  const file = path.join(SCREENS, `${String(++shotNo).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  step(`screenshot ${path.basename(file)}`);
  return file;
}

/** A walkthrough image: the left part of the window (activity bar, view) and, with `height`, more. */
async function media(page: Page, name: string, clip: { x: number; y: number; width: number; height: number }): Promise<void> {
  if (!MEDIA) return;
  fs.mkdirSync(MEDIA, { recursive: true });
  await page.screenshot({ path: path.join(MEDIA, `${name}.png`), clip });
}

async function contextMenu(page: Page, row: Locator, item: string): Promise<void> {
  await row.click({ button: 'right' });
  const entry = page.locator('.context-view .monaco-menu .action-item', { hasText: new RegExp(`^${item}`) }).first();
  await entry.waitFor({ timeout: 15_000 });
  // The menu ignores a mouse-up right after it opens (the right-click's own); then a click runs the item.
  await page.waitForTimeout(300);
  await entry.click();
  const menu = page.locator('.context-view .monaco-menu');
  if (await menu.count()) await menu.first().waitFor({ state: 'detached', timeout: 2000 }).catch(() => undefined);
  if (await menu.count()) {
    await entry.hover();
    await page.keyboard.press('Enter');
    await menu.first().waitFor({ state: 'detached', timeout: 5000 });
  }
}

/** Waits until the row offers `action` inline (Start when stopped or saved, Open Terminal when running). */
async function inline(row: Locator, action: string, timeoutMs: number): Promise<Locator> {
  const button = row.locator(`.action-label[aria-label="${action}"]`);
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // Inline actions show on the hovered or the selected row; a click selects it (a VM row runs no command).
    await row.click({ position: { x: 40, y: 10 } });
    await row.hover();
    if (await button.first().isVisible()) return button.first();
    if (Date.now() > deadline) throw new Error(`the row never offered "${action}"`);
    await row.page().waitForTimeout(250);
  }
}

async function journey(cs: CodeServer, page: Page): Promise<void> {
  await page.goto(`${cs.url}/?folder=${encodeURIComponent(cs.workspace)}`);
  await waitForWorkbench(page);
  step('workbench ready');
  await openWalkthrough(page);
  await page.waitForTimeout(1000);
  await shot(page, 'walkthrough');
  // Closed again (its progress is kept), so the screenshots below show the extension alone.
  await page.locator('.tabs-container .tab', { hasText: 'Walkthrough' }).first().locator('.action-label.codicon-close').click();
  await page.locator('.tabs-container .tab', { hasText: 'Walkthrough' }).first().waitFor({ state: 'detached' });
  await page.locator('.activitybar [aria-label="Sandbox VMs"]').first().click();
  const welcome = page.locator('.welcome-view-content', { hasText: 'No virtual machines yet' }).first();
  await welcome.waitFor({ timeout: 60_000 });
  await page.mouse.move(900, 600);
  await shot(page, 'empty-view');
  await media(page, 'create-vm', { x: 0, y: 0, width: 640, height: 360 });

  await welcome.locator('a.monaco-button', { hasText: 'Create VM' }).click();
  const input = page.locator('.quick-input-widget input');
  await input.waitFor();
  await input.fill(VM);
  await shot(page, 'wizard-name');
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget', { hasText: 'Virtual CPUs' }).waitFor();
  await shot(page, 'wizard-cpus');
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget', { hasText: 'Memory' }).waitFor();
  await input.fill('512M');
  await shot(page, 'wizard-memory');
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget', { hasText: 'Disk size' }).waitFor();
  await shot(page, 'wizard-disk');
  await page.keyboard.press('Enter');
  const row = page.locator('.monaco-list-row', { hasText: VM }).first();
  await row.waitFor({ timeout: 120_000 });
  step('created');

  await (await inline(row, 'Start', 60_000)).click();
  await inline(row, 'Open Terminal', 180_000);
  step('running');
  await page.locator('.monaco-workbench').first().click({ position: { x: 900, y: 300 } });
  await shot(page, 'running');
  // Hover until the tooltip shows (VS Code opens it after a delay, later on a loaded host).
  const hover = page.locator('.monaco-hover', { hasText: 'Accelerator' }).first();
  for (let attempt = 1; ; attempt++) {
    await page.mouse.move(900, 500);
    await row.hover();
    const shown = await hover.waitFor({ timeout: 5_000 }).then(() => true, () => false);
    if (shown) break;
    if (attempt === 6) throw new Error('the VM\'s tooltip did not show after 6 hovers');
  }
  const tooltip = await hover.innerText();
  await shot(page, 'tooltip');
  if (/koffi probe failed/i.test(tooltip)) throw new Error(`the installed service could not load koffi: ${tooltip}`);
  step(`tooltip: ${tooltip.split('\n').find((l) => /Accelerator/.test(l))?.trim()}`);
  await page.mouse.move(900, 500);

  await contextMenu(page, row, 'Open Terminal');
  const xterm = page.locator('.xterm-rows').first();
  await page.locator('.xterm-rows', { hasText: '#' }).first().waitFor({ timeout: 60_000 });
  await page.locator('.xterm').first().click();
  await page.keyboard.type('uname -r\n');
  await page.locator('.xterm-rows', { hasText: /\d+\.\d+\.\d+-\d+-cloud-amd64/ }).first().waitFor({ timeout: 30_000 });
  const kernel = /(\d+\.\d+\.\d+-\d+-cloud-amd64)/.exec(await xterm.innerText())?.[1];
  await shot(page, 'terminal-uname');
  await media(page, 'open-terminal', { x: 0, y: 40, width: 1280, height: 740 });
  step(`guest kernel ${kernel}`);

  // A web server in the guest: its port is forwarded to the host's 127.0.0.1, shows under the VM,
  // and Open in Browser opens it.
  await page.keyboard.type(`node -e "require('http').createServer((q, r) => r.end('hello from ' + require('os').hostname())).listen(${GUEST_PORT})" &\n`);
  const portRow = page.locator('.monaco-list-row', { hasText: `${GUEST_PORT}/tcp -> 127.0.0.1:` }).first();
  await portRow.waitFor({ timeout: 60_000 });
  const opened = page.context().waitForEvent('page', { timeout: 30_000 });
  await (await inline(portRow, 'Open in Browser', 30_000)).click();
  const tab = await opened;
  await tab.locator('body', { hasText: 'hello from' }).first().waitFor({ timeout: 30_000 });
  const served = (await tab.locator('body').innerText()).trim();
  if (served !== `hello from ${VM}`) throw new Error(`the forwarded port served ${JSON.stringify(served)} at ${tab.url()}`);
  step(`Open in Browser: ${tab.url()} says "${served}"`);
  await tab.close();
  await page.bringToFront();
  await shot(page, 'port-forwarded');

  // Sync the workspace folder into the VM from the palette, edit a file of it in VS Code, and see
  // the edit in the guest's terminal.
  const notes = path.join(cs.workspace, 'notes.txt');
  fs.writeFileSync(notes, 'written before the sync\n');
  const owner = fs.statSync(cs.workspace);
  fs.chownSync(notes, owner.uid, owner.gid);
  await runCommand(page, 'Sandbox VMs: Sync Workspace Folder to VM');
  await page.locator('.quick-input-widget', { hasText: 'The folder in the guest' }).first().waitFor({ timeout: 30_000 });
  await shot(page, 'sync-guest-path');
  await page.keyboard.press('Enter');
  await page.locator('.monaco-list-row', { hasText: /in sync/ }).first().waitFor({ timeout: 120_000 });
  step('the workspace folder is in sync with /root/workspace');
  await shot(page, 'sync-in-sync');
  await page.keyboard.press('Control+P');
  await page.locator('.quick-input-widget input').fill('notes.txt');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'notes.txt' }).first().waitFor({ timeout: 30_000 });
  await page.keyboard.press('Enter');
  const editor = page.locator('.monaco-editor .view-lines', { hasText: 'written before the sync' }).first();
  await editor.waitFor({ timeout: 30_000 });
  await editor.click();
  await page.keyboard.press('Control+End');
  await page.keyboard.type('edited on the host\n');
  await page.keyboard.press('Control+S');
  await page.locator('.tabs-container .tab.dirty', { hasText: 'notes.txt' }).first().waitFor({ state: 'detached', timeout: 30_000 });
  const savedAt = Date.now();
  await page.locator('.xterm').first().click();
  // As a user would: `cat` again until the edit is there (the sync takes ~30 ms; typing the command
  // ~0.5 s, more on a loaded host), for at most 30 s.
  const edited = page.locator('.xterm-rows', { hasText: 'edited on the host' }).first();
  let looks = 0;
  for (;;) {
    looks++;
    await page.keyboard.type('cat /root/workspace/notes.txt\n');
    try {
      await edited.waitFor({ timeout: 3000 });
      break;
    } catch (err) {
      if (Date.now() - savedAt > 30_000) throw new Error(`the edit saved in VS Code did not reach the guest within 30 s (${looks} cat): ${(err as Error).message}`);
    }
  }
  step(`the edit saved in VS Code shows in the guest's terminal ${Date.now() - savedAt} ms after the save (cat ${looks} time(s))`);
  await shot(page, 'sync-edit-in-guest');

  // VM details: the webview draws the CPU plot from live samples (a polyline inside its frames).
  await contextMenu(page, row, 'Show Details');
  const webview = page.frameLocator('iframe.webview').frameLocator('iframe#active-frame');
  await webview.locator('svg polyline.line').first().waitFor({ timeout: 60_000 });
  await shot(page, 'details');
  step('details: the CPU and memory plots are drawn');

  await contextMenu(page, row, 'Save');
  await inline(row, 'Start', 120_000);
  await page.locator('.xterm-rows', { hasText: /saved/i }).first().waitFor({ timeout: 30_000 }).catch(() => undefined);
  await shot(page, 'saved');
  step('saved');
  await (await inline(row, 'Start', 10_000)).click();
  await inline(row, 'Open Terminal', 120_000);
  step('restored');
  await page.locator('.xterm').first().click();
  await page.keyboard.type('echo restored-$((6*7))\n');
  await page.locator('.xterm-rows', { hasText: 'restored-42' }).first().waitFor({ timeout: 60_000 });
  await shot(page, 'restored-terminal');
  await media(page, 'save-restore', { x: 0, y: 40, width: 1280, height: 740 });

  // Checkpoints: a file written, a checkpoint from the VM's context menu, the file changed in the
  // terminal, the checkpoint applied from its node, and the file as it was (in a new terminal).
  await page.locator('.xterm').first().click();
  await page.keyboard.type('echo original > /root/keep.txt; echo "before: $(cat /root/keep.txt)"\n');
  await page.locator('.xterm-rows', { hasText: 'before: original' }).first().waitFor({ timeout: 30_000 });
  await contextMenu(page, row, 'Create Checkpoint');
  await input.waitFor();
  await input.fill('known good');
  await shot(page, 'checkpoint-name');
  await page.keyboard.press('Enter');
  const checkpointRow = page.locator('.part.sidebar .monaco-list-row', { hasText: 'known good' }).filter({ hasNotText: 'before applying' }).first();
  await checkpointRow.waitFor({ timeout: 120_000 });
  await page.locator('.part.sidebar .monaco-list-row', { hasText: /^Now/ }).first().waitFor({ timeout: 30_000 });
  step('checkpoint "known good" shows under the VM with Now below it');
  await shot(page, 'checkpoint-created');
  await page.locator('.xterm').first().click();
  await page.keyboard.type('echo changed > /root/keep.txt; echo "changed to: $(cat /root/keep.txt)"\n');
  await page.locator('.xterm-rows', { hasText: 'changed to: changed' }).first().waitFor({ timeout: 30_000 });
  // Hovered, not clicked: a click at the row's left would land on its twistie and fold it.
  await checkpointRow.hover();
  await checkpointRow.locator('.action-label[aria-label="Apply Checkpoint..."]').first().click();
  await page.locator('.quick-input-widget', { hasText: 'Checkpoint the current state, then apply' }).first().waitFor({ timeout: 30_000 });
  await shot(page, 'checkpoint-apply-choice');
  await page.keyboard.press('Enter');
  await page.locator('.statusbar-item', { hasText: 'is back at "known good"' }).first().waitFor({ timeout: 180_000 });
  await page.locator('.part.sidebar .monaco-list-row', { hasText: 'before applying known good' }).first().waitFor({ timeout: 30_000 });
  await inline(row, 'Open Terminal', 180_000);
  // inline() clicks the row, which folds or unfolds it: unfolded for the screenshot.
  if ((await row.getAttribute('aria-expanded')) === 'false') await row.locator('.monaco-tl-twistie').click();
  await page.locator('.part.sidebar .monaco-list-row', { hasText: 'before applying known good' }).first().waitFor({ timeout: 30_000 });
  step('applied "known good"; the state left kept as "before applying known good"');
  await shot(page, 'checkpoint-applied');
  await contextMenu(page, row, 'Open Terminal');
  const prompt = page.locator('.xterm-rows:visible', { hasText: '#' }).first();
  // The new terminal has the focus (Open Terminal shows it); a click would hit the old one's widgets.
  await prompt.waitFor({ timeout: 60_000 });
  await page.keyboard.type('echo "after apply: $(cat /root/keep.txt)"\n');
  await page.locator('.xterm-rows:visible', { hasText: 'after apply: original' }).first().waitFor({ timeout: 60_000 });
  step('the file is back as it was at the checkpoint');
  await shot(page, 'checkpoint-file-back');

  await contextMenu(page, row, 'Stop');
  await inline(row, 'Start', 120_000);
  await shot(page, 'stopped');
  step('stopped');

  await contextMenu(page, row, 'Delete');
  const dialog = page.locator('.monaco-dialog-box').first();
  await dialog.waitFor({ timeout: 15_000 });
  await shot(page, 'delete-modal');
  await dialog.locator('.monaco-button', { hasText: /^Delete$/ }).click();
  await welcome.waitFor({ timeout: 60_000 });
  await shot(page, 'deleted');
  step('deleted; the view is empty again');

  // The walkthrough opened at the start: the commands just used completed its three steps.
  await openWalkthrough(page);
  await page.waitForTimeout(1000);
  const done = await page.locator('button.getting-started-step[aria-checked="true"]').count();
  await shot(page, 'walkthrough-done');
  step(`walkthrough: ${done} of 3 steps complete`);
  if (done !== 3) throw new Error(`the walkthrough shows ${done} of 3 steps complete after the journey ran their commands`);
}

/** Runs a command from the palette (F1) by its title. */
async function runCommand(page: Page, title: string): Promise<void> {
  await page.keyboard.press('F1');
  await page.locator('.quick-input-widget input').fill(`>${title}`);
  await page.locator('.quick-input-list .monaco-list-row', { hasText: title }).first().waitFor({ timeout: 15_000 });
  await page.keyboard.press('Enter');
}

/** Opens the extension's walkthrough, as the Welcome page offers it to a new user. */
async function openWalkthrough(page: Page): Promise<void> {
  await page.locator('.monaco-workbench').first().click({ position: { x: 900, y: 300 } });
  await page.keyboard.press('F1');
  await page.locator('.quick-input-widget input').fill('>Welcome: Open Walkthrough');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Open Walkthrough' }).first().waitFor();
  await page.keyboard.press('Enter');
  await page.locator('.quick-input-widget input').fill('Sandbox VMs');
  await page.locator('.quick-input-list .monaco-list-row', { hasText: 'Get Started with Sandbox VMs' }).first().waitFor();
  await page.keyboard.press('Enter');
  await page.locator('.gettingStartedContainer', { hasText: 'Save and restore' }).first().waitFor({ timeout: 30_000 });
}

/** Ends what the journey started as the user: VMs, the service, stragglers (by pid, found by the data path). */
function cleanUp(user: RunAs | undefined, cli: string, env: NodeJS.ProcessEnv): void {
  try {
    const vms = JSON.parse(asUser(user, 'node', [cli, 'list', '--json'], env)) as { name: string }[];
    for (const vm of vms) asUser(user, 'node', [cli, 'rm', '--force', vm.name], env);
    asUser(user, 'node', [cli, 'service', 'stop'], env);
  } catch (err) {
    console.error(`clean-up: ${(err as Error).message}`);
  }
  const r = spawnSync('pgrep', ['-f', env.SANDBOXVM_HOME!], { encoding: 'utf8' });
  for (const pid of r.stdout.split('\n').filter(Boolean).map(Number)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
}

async function main(): Promise<void> {
  const vsix = path.join(REPO, 'dist-vsix', 'sandbox-vms.vsix');
  if (!fs.existsSync(vsix)) throw new Error(`${vsix} is missing: run npm run package first`);
  step(`artifacts in ${ARTIFACTS}`);
  const user = journeyUser();
  const bin = codeServerFor(user);
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  for (const d of [SCREENS, path.join(ARTIFACTS, 'code-server'), path.join(ARTIFACTS, 'data'), path.join(ARTIFACTS, 'images')]) fs.mkdirSync(d, { recursive: true });
  fs.copyFileSync(vsix, path.join(ARTIFACTS, 'sandbox-vms.vsix'));
  const scratch = path.join(ARTIFACTS, 'code-server');
  const env = { SANDBOXVM_HOME: path.join(ARTIFACTS, 'data'), SANDBOXVM_IMAGE_CACHE: path.join(ARTIFACTS, 'images') };
  if (user) execFileSync('chown', ['-R', `${user.uid}:${user.gid}`, ARTIFACTS]);
  fs.chmodSync(env.SANDBOXVM_HOME, 0o700);
  const xdg = { XDG_CONFIG_HOME: path.join(scratch, 'config'), XDG_DATA_HOME: path.join(scratch, 'data'), XDG_CACHE_HOME: path.join(scratch, 'cache') };
  const extensions = path.join(scratch, 'extensions');
  asUser(user, bin, ['--extensions-dir', extensions, '--user-data-dir', path.join(scratch, 'user-data'), '--install-extension', path.join(ARTIFACTS, 'sandbox-vms.vsix')], xdg);
  const installed = fs.readdirSync(extensions).find((d) => d.startsWith('sandboxvms.sandbox-vms-'));
  if (!installed) throw new Error(`the .vsix did not install into ${extensions}`);
  const extDir = path.join(extensions, installed);
  step(`installed ${installed} as ${user?.user ?? 'the current user'}`);
  const base = await userImageCache(path.join(extDir, 'dist', 'guest-agent'), env.SANDBOXVM_IMAGE_CACHE, user);
  step(`image ${base} in ${env.SANDBOXVM_IMAGE_CACHE}`);

  const cs = await startCodeServer(bin, scratch, env, {}, user);
  step(`code-server ${cs.url} running as ${user?.user ?? 'the current user'}`);
  const browser = await launchChromium();
  const cli = path.join(extDir, 'dist', 'cli.js');
  try {
    const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    await journey(cs, page);
  } catch (err) {
    const pages = browser.contexts().flatMap((c) => c.pages());
    if (pages[0]) await pages[0].screenshot({ path: path.join(SCREENS, 'failure.png') }).catch(() => undefined);
    throw err;
  } finally {
    await browser.close().catch(() => undefined);
    await cs.stop();
    cleanUp(user, cli, env);
  }
  step(`journey passed in ${((Date.now() - t0) / 1000).toFixed(1)} s; screenshots in ${SCREENS}`);
}

main().then(() => process.exit(0), (err) => {
  console.error(`journey: ${(err as Error).stack ?? err}`);
  console.error(`screenshots and code-server's log: ${ARTIFACTS}`);
  process.exit(1);
});
