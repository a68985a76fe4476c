/**
 * Go to File in VM... and Find in VM Folder...: what VS Code's own Go to File and Search cannot do
 * for the `sandboxvm` scheme (their providers for a new scheme, FileSearchProvider and
 * TextSearchProvider, are proposed API that a published extension may not use; without them the
 * Search view waits forever on a guest folder). Both run in the guest on its own disk (`find`,
 * `grep -F`) through an exec session and show the result in a quick pick that opens the file (at
 * the line). The guest's output is untrusted: read up to MAX_OUTPUT_BYTES, each path checked to lie
 * under the folder searched with valid names, at most MAX_RESULTS kept.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import type { Session, SessionClient } from '../../runtime/client/sessionClient';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';
import type { CommandDeps } from '../commands/deps';
import { DEFAULT_GUEST_DIR, checkGuestPath } from '../commands/copyFiles';
import type { VmModel } from '../model/vmModel';
import { pickVm } from '../ui/pickVm';
import { checkRelativePath } from './guestNames';
import { GUEST_SCHEME, guestUri, parseGuestUri, type GuestLocation } from './guestUri';

export const MAX_OUTPUT_BYTES = 8 * 1024 * 1024;
export const MAX_RESULTS = 20_000;
/** Matches per file, and their text as shown. */
const MATCHES_PER_FILE = 50;
const MATCH_TEXT = 200;
const SKIPPED = ['.git', 'node_modules'];

/** Test and automation arguments: skip the prompts. */
export interface SearchOptions {
  /** The folder to search: a `sandboxvm:` URI string. */
  folder?: string;
  /** Find in VM Folder: the text. */
  text?: string;
  /** Return the results instead of showing a quick pick. */
  resultsOnly?: boolean;
}

export interface GuestMatch {
  uri: vscode.Uri;
  /** 1-based; absent for Go to File. */
  line?: number;
  text?: string;
}

/** Go to File in VM...: every file under the folder (skipping .git and node_modules), picked by name. */
export async function goToFileInVm(deps: CommandDeps, target?: unknown, options: SearchOptions = {}): Promise<GuestMatch[] | undefined> {
  const folder = await chooseFolder(deps, target, options, 'find a file in');
  if (!folder) return undefined;
  const argv = ['find', folder.path, '-xdev', '(', ...SKIPPED.flatMap((n, i) => (i === 0 ? ['-name', n] : ['-o', '-name', n])), ')', '-prune', '-o', '-type', 'f', '-print0'];
  const results = await runInGuest(deps, folder, argv, (out) => parseFind(folder, out));
  if (options.resultsOnly) return results;
  const picked = await vscode.window.showQuickPick(
    results.map((m) => ({ label: path.posix.basename(m.uri.path), description: path.posix.relative(folder.path, path.posix.dirname(m.uri.path)) || '.', match: m })),
    { title: `Go to File in ${folder.vm}:${folder.path}`, placeHolder: `${results.length}${results.length >= MAX_RESULTS ? '+' : ''} files; type to filter`, matchOnDescription: true },
  );
  if (picked) await vscode.window.showTextDocument(picked.match.uri, { preview: true });
  return results;
}

/** Find in VM Folder...: lines containing the text (literally), in text files under the folder. */
export async function findInVmFolder(deps: CommandDeps, target?: unknown, options: SearchOptions = {}): Promise<GuestMatch[] | undefined> {
  const folder = await chooseFolder(deps, target, options, 'search in');
  if (!folder) return undefined;
  const text = options.text ?? (await vscode.window.showInputBox({ title: `Find in ${folder.vm}:${folder.path}`, prompt: 'Text to find (matched literally, case-sensitive)', validateInput: (v) => (v.length === 0 ? 'Type the text to find.' : v.length > 1000 ? 'At most 1,000 characters.' : undefined) }));
  if (!text) return undefined;
  const argv = ['grep', '-rIn', '-F', '--null', '-m', String(MATCHES_PER_FILE), ...SKIPPED.map((n) => `--exclude-dir=${n}`), '-e', text, '--', folder.path];
  const results = await runInGuest(deps, folder, argv, (out) => parseGrep(folder, out), [0, 1]);
  if (options.resultsOnly) return results;
  if (results.length === 0) {
    void vscode.window.showInformationMessage(`No text file under ${folder.vm}:${folder.path} contains "${text.slice(0, 80)}".`);
    return results;
  }
  const picked = await vscode.window.showQuickPick(
    results.map((m) => ({ label: m.text ?? '', description: `${path.posix.relative(folder.path, m.uri.path)}:${m.line}`, match: m })),
    { title: `"${text.slice(0, 80)}" in ${folder.vm}:${folder.path}: ${results.length}${results.length >= MAX_RESULTS ? '+' : ''} lines`, matchOnDescription: true },
  );
  if (picked) {
    const line = Math.max(0, (picked.match.line ?? 1) - 1);
    await vscode.window.showTextDocument(picked.match.uri, { preview: true, selection: new vscode.Range(line, 0, line, 0) });
  }
  return results;
}

/** The folder: the Explorer's (a `sandboxvm:` folder right-clicked), given, the one guest folder of the workspace, one of several picked, or a VM and a path asked. */
async function chooseFolder(deps: CommandDeps, target: unknown, options: SearchOptions, verb: string): Promise<GuestLocation | undefined> {
  if (target instanceof vscode.Uri && target.scheme === GUEST_SCHEME) return parseGuestUri(target);
  if (options.folder) return parseGuestUri(vscode.Uri.parse(options.folder, true));
  const guestFolders = (vscode.workspace.workspaceFolders ?? []).filter((f) => f.uri.scheme === GUEST_SCHEME);
  if (guestFolders.length === 1) return parseGuestUri(guestFolders[0].uri);
  if (guestFolders.length > 1) {
    const picked = await vscode.window.showQuickPick(guestFolders.map((f) => ({ label: f.name, description: `${f.uri.authority}:${f.uri.path}`, uri: f.uri })), { title: `Choose the VM folder to ${verb}` });
    return picked ? parseGuestUri(picked.uri) : undefined;
  }
  await deps.connection.client();
  const vm = await pickVm(deps.model, undefined, ['running'], `${verb}`);
  if (!vm) return undefined;
  const dir = await vscode.window.showInputBox({ title: `Folder in ${vm} to ${verb}`, value: DEFAULT_GUEST_DIR, validateInput: checkGuestPath });
  if (dir === undefined) return undefined;
  const problem = checkGuestPath(dir);
  if (problem) throw new SandboxError(ErrorCode.BadArgument, problem);
  return parseGuestUri(guestUri(vm, dir));
}

/** What running a command in a guest needs: the VM's state, and a session connection to its worker. */
export interface GuestExec {
  model: VmModel;
  attach(vm: string): Promise<SessionClient>;
}

/** The commands' GuestExec. */
function execOf(deps: CommandDeps): GuestExec {
  return { model: deps.model, attach: async (vm) => (await deps.connection.client()).attach(vm) };
}

async function runInGuest(deps: CommandDeps, folder: GuestLocation, argv: string[], parse: (out: Buffer) => GuestMatch[], okCodes = [0]): Promise<GuestMatch[]> {
  const out = await runGuestCommand(execOf(deps), folder, argv, { okCodes });
  return parse(out.stdout).slice(0, MAX_RESULTS);
}

/**
 * Runs argv in the guest and returns its stdout, read up to `maxBytes` (default MAX_OUTPUT_BYTES;
 * then the command is closed and what came is used: `truncated`). `okCodes`: exit codes that are
 * not failures (grep: 1 = no match); any other is thrown as one sentence. A cancelled `token`
 * closes the command (the guest kills it) and resolves with what came.
 */
export async function runGuestCommand(exec: GuestExec, folder: GuestLocation, argv: string[], opts: { okCodes?: number[]; token?: vscode.CancellationToken; maxBytes?: number } = {}): Promise<{ stdout: Buffer; truncated: boolean; cancelled: boolean }> {
  const okCodes = opts.okCodes ?? [0];
  const maxBytes = opts.maxBytes ?? MAX_OUTPUT_BYTES;
  if (exec.model.get(folder.vm)?.state !== 'running') throw new SandboxError(ErrorCode.WrongState, `${folder.vm} is not running; start it to search its files.`);
  if (opts.token?.isCancellationRequested) return { stdout: Buffer.alloc(0), truncated: false, cancelled: true };
  let sessions: SessionClient | undefined;
  let cancel: vscode.Disposable | undefined;
  try {
    sessions = await exec.attach(folder.vm);
    const chunks: Buffer[] = [];
    let bytes = 0;
    let truncated = false;
    let cancelled = false;
    let stderr = '';
    let opened: Session | undefined;
    const stop = () => void opened?.close().catch(() => undefined);
    cancel = opts.token?.onCancellationRequested(() => {
      cancelled = true;
      stop();
    });
    const exit = await new Promise<{ code: number | null; error?: string }>((resolve, reject) => {
      sessions!.open({ kind: 'exec', argv, timeoutMs: 120_000 }, {
        onData: (stream, data) => {
          if (stream === 2) {
            if (stderr.length < 2000) stderr += data.toString('utf8');
            return;
          }
          if (truncated) return;
          const room = maxBytes - bytes;
          chunks.push(Buffer.from(data.subarray(0, room)));
          bytes += Math.min(data.length, room);
          if (bytes >= maxBytes) {
            truncated = true;
            stop();
          }
        },
        onExit: resolve,
      }).then((s) => {
        opened = s;
        if (truncated || cancelled) stop();
      }, reject);
    });
    if (!truncated && !cancelled && !okCodes.includes(exit.code ?? -1) && !(exit.code === 1 && argv[0] === 'find' && bytes > 0)) {
      const why = (exit.error ?? stderr.split('\n').find((l) => l.trim()) ?? `exit code ${exit.code}`).replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 300);
      throw new SandboxError(ErrorCode.BadArgument, `Searching ${folder.vm}:${folder.path} failed: ${why}`);
    }
    return { stdout: Buffer.concat(chunks, bytes), truncated, cancelled };
  } finally {
    cancel?.dispose();
    sessions?.dispose();
  }
}

/** A guest path from the output, if it lies under `folder` with valid names. */
export function underFolder(folder: GuestLocation, guestPath: string): vscode.Uri | undefined {
  const prefix = folder.path === '/' ? '/' : `${folder.path}/`;
  if (!guestPath.startsWith(prefix)) return undefined;
  const rel = guestPath.slice(prefix.length);
  return checkRelativePath(rel) ? guestUri(folder.vm, guestPath) : undefined;
}

/** `find -print0`: NUL-separated paths; a last one without its NUL was cut off and is dropped. */
export function parseFind(folder: GuestLocation, out: Buffer): GuestMatch[] {
  const parts = out.toString('utf8').split('\0');
  parts.pop();
  const results: GuestMatch[] = [];
  for (const p of parts) {
    const uri = underFolder(folder, p);
    if (uri) results.push({ uri });
    if (results.length >= MAX_RESULTS) break;
  }
  return results;
}

/**
 * `grep -n --null`: `<path>\0<line>:<text>\n` per match; anything else is skipped. The text has
 * control characters as spaces (columns kept), trimmed and cut to MATCH_TEXT unless told otherwise.
 */
export function parseGrep(folder: GuestLocation, out: Buffer, shown: { trim: boolean; maxText: number } = { trim: true, maxText: MATCH_TEXT }): GuestMatch[] {
  const results: GuestMatch[] = [];
  const text = out.toString('utf8');
  let at = 0;
  while (at < text.length && results.length < MAX_RESULTS) {
    const nul = text.indexOf('\0', at);
    if (nul < 0) break;
    const end = text.indexOf('\n', nul);
    if (end < 0) break;
    const file = text.slice(at, nul);
    const rest = text.slice(nul + 1, end);
    at = end + 1;
    const m = /^(\d{1,9}):(.*)$/s.exec(rest);
    const uri = m ? underFolder(folder, file) : undefined;
    if (!m || !uri) continue;
    const line = m[2].replace(/[\x00-\x1f\x7f]/g, ' ');
    results.push({ uri, line: Number(m[1]), text: (shown.trim ? line.trim() : line).slice(0, shown.maxText) });
  }
  return results;
}
