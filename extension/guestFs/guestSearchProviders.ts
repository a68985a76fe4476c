/**
 * VS Code's own Go to File (Quick Open) and Search view on `sandboxvm:` folders, through the
 * proposed FileSearchProvider and TextSearchProvider API (VS Code 1.100: proposals
 * `fileSearchProvider` and `textSearchProvider`, listed in package.json's enabledApiProposals).
 * VS Code grants them only where the platform allows the extension (`--enable-proposed-api
 * sandboxvms.sandbox-vms`, or product.json's extensionEnabledApiProposals); elsewhere the
 * registration throws, this logs one line, and Go to File in VM... / Find in VM Folder...
 * (guestSearch.ts) remain the way to search.
 *
 * Both run in the guest on its own disk through an exec session (`find`, `grep`), bounded
 * (MAX_OUTPUT_BYTES of output, the query's maxResults), and closed when VS Code cancels. Every
 * path the guest prints is checked to lie under the folder searched. `.git` is never searched;
 * VS Code's excludes (files.exclude, search.exclude) are applied to every result, and simple ones
 * (`**\/name`, `**\/name/**`) also prune the guest's walk. .gitignore files are not read.
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { excludeMatcher, fuzzyMatches } from './globMatcher';
import { parseFind, parseGrep, runGuestCommand, type GuestExec } from './guestSearch';
import { GUEST_SCHEME, parseGuestUri, type GuestLocation } from './guestUri';

/** Files listed for Go to File are kept this long per folder (Quick Open asks on every keystroke). */
const FILE_LIST_TTL_MS = 10_000;
const DEFAULT_MAX_RESULTS = 20_000;
const MATCHES_PER_FILE = 200;
/** A matching line is shown (and searched for columns) up to this many characters. */
const MAX_LINE_CHARS = 10_000;

// The proposed API's shapes (vscode.proposed.fileSearchProvider.d.ts, textSearchProvider.d.ts), as used here.
interface SearchOptionsBase {
  folder: vscode.Uri;
  includes: string[];
  excludes: string[];
  useIgnoreFiles: boolean;
  maxResults?: number;
}
interface FileSearchQuery {
  pattern: string;
}
interface TextSearchQuery {
  pattern: string;
  isRegExp?: boolean;
  isCaseSensitive?: boolean;
  isWordMatch?: boolean;
  isMultiline?: boolean;
}
interface TextSearchMatch {
  uri: vscode.Uri;
  ranges: vscode.Range[];
  preview: { text: string; matches: vscode.Range[] };
}

export interface SearchProviders extends vscode.Disposable {
  /** Whether VS Code took each provider (false: the platform does not grant the proposal). */
  readonly file: boolean;
  readonly text: boolean;
}

/** Registers both providers where VS Code allows it; logs why not elsewhere. */
export function registerSearchProviders(exec: GuestExec, log: (message: string) => void): SearchProviders {
  const ws = vscode.workspace as unknown as Record<string, unknown>;
  const registrations: vscode.Disposable[] = [];
  const files = new GuestFileSearch(exec);
  const register = (name: string, provider: object): boolean => {
    const fn = ws[name];
    if (typeof fn !== 'function') {
      log(`${name} is not in this VS Code; Go to File in VM... and Find in VM Folder... search guest folders`);
      return false;
    }
    try {
      registrations.push((fn as (scheme: string, p: object) => vscode.Disposable).call(vscode.workspace, GUEST_SCHEME, provider));
      return true;
    } catch (err) {
      log(`VS Code does not grant ${name} to this extension (${(err as Error).message.split('\n')[0]}); Go to File in VM... and Find in VM Folder... search guest folders`);
      return false;
    }
  };
  const file = register('registerFileSearchProvider', files);
  const text = register('registerTextSearchProvider', new GuestTextSearch(exec));
  if (file || text) log(`VS Code's ${[file && 'Go to File', text && 'Search'].filter(Boolean).join(' and ')} search guest folders`);
  return {
    file,
    text,
    dispose: () => {
      for (const r of registrations) r.dispose();
      files.clear();
    },
  };
}

/** Relative paths the options' includes and excludes let through. */
function pathFilter(options: SearchOptionsBase): (rel: string) => boolean {
  const excluded = excludeMatcher(options.excludes ?? []);
  const includes = (options.includes ?? []).filter((p) => typeof p === 'string' && p.length > 0);
  const included = includes.length ? excludeMatcher(includes) : () => true;
  return (rel) => !excluded(rel) && included(rel) && !rel.split('/').includes('.git');
}

/** Folder names the guest's walk can skip: excludes of the form `**\/name` or `**\/name/**`, and .git. */
function prunedNames(excludes: readonly string[]): string[] {
  const names = new Set(['.git']);
  for (const e of excludes ?? []) {
    const m = /^\*\*\/([A-Za-z0-9._-]{1,100})(?:\/\*\*)?$/.exec(e);
    if (m) names.add(m[1]);
  }
  return [...names].slice(0, 64);
}

function relativeTo(folder: GuestLocation, uri: vscode.Uri): string {
  return path.posix.relative(folder.path, uri.path);
}

class GuestFileSearch {
  private readonly lists = new Map<string, { at: number; files: Promise<vscode.Uri[]> }>();

  async provideFileSearchResults(query: FileSearchQuery, options: SearchOptionsBase, token: vscode.CancellationToken): Promise<vscode.Uri[]> {
    const folder = parseGuestUri(options.folder);
    const key = `${folder.vm}:${folder.path}\0${[...prunedNames(options.excludes)].join('/')}`;
    let cached = this.lists.get(key);
    if (!cached || Date.now() - cached.at > FILE_LIST_TTL_MS) {
      const argv = ['find', folder.path, '-xdev', '(', ...prunedNames(options.excludes).flatMap((n, i) => (i === 0 ? ['-name', n] : ['-o', '-name', n])), ')', '-prune', '-o', '-type', 'f', '-print0'];
      // Not cancelled by this query's token: the list serves the next keystrokes too.
      cached = { at: Date.now(), files: runGuestCommand(this.exec, folder, argv).then((r) => parseFind(folder, r.stdout).map((m) => m.uri)) };
      this.lists.set(key, cached);
      cached.files.catch(() => this.lists.delete(key));
    }
    const all = await cached.files;
    if (token.isCancellationRequested) return [];
    const keep = pathFilter(options);
    const max = Math.min(options.maxResults ?? DEFAULT_MAX_RESULTS, DEFAULT_MAX_RESULTS);
    const out: vscode.Uri[] = [];
    for (const uri of all) {
      const rel = relativeTo(folder, uri);
      if (keep(rel) && fuzzyMatches(query.pattern ?? '', rel)) out.push(uri);
      if (out.length >= max) break;
    }
    return out;
  }

  constructor(private readonly exec: GuestExec) {}

  clear(): void {
    this.lists.clear();
  }
}

class GuestTextSearch {
  constructor(private readonly exec: GuestExec) {}

  async provideTextSearchResults(query: TextSearchQuery, options: SearchOptionsBase, progress: vscode.Progress<TextSearchMatch>, token: vscode.CancellationToken): Promise<{ limitHit?: boolean }> {
    const folder = parseGuestUri(options.folder);
    const pattern = String(query.pattern ?? '');
    if (!pattern || pattern.length > 10_000) return {};
    const matcher = lineMatcher(query);
    const argv = [
      'grep', '-rIn', '--null', '-m', String(MATCHES_PER_FILE),
      query.isRegExp ? '-E' : '-F',
      ...(query.isCaseSensitive ? [] : ['-i']),
      ...(query.isWordMatch ? ['-w'] : []),
      ...prunedNames(options.excludes).map((n) => `--exclude-dir=${n}`),
      '-e', pattern, '--', folder.path,
    ];
    const out = await runGuestCommand(this.exec, folder, argv, { okCodes: [0, 1], token });
    if (out.cancelled) return {};
    const keep = pathFilter(options);
    const max = Math.min(options.maxResults ?? DEFAULT_MAX_RESULTS, DEFAULT_MAX_RESULTS);
    let reported = 0;
    for (const m of parseGrep(folder, out.stdout, { trim: false, maxText: MAX_LINE_CHARS })) {
      if (token.isCancellationRequested) return {};
      if (!keep(relativeTo(folder, m.uri))) continue;
      if (reported >= max) return { limitHit: true };
      const line = (m.line ?? 1) - 1;
      const text = m.text ?? '';
      const columns = matcher(text);
      const ranges = (columns.length ? columns : [[0, text.length] as [number, number]]).map(([a, b]) => new vscode.Range(line, a, line, b));
      progress.report({ uri: m.uri, ranges, preview: { text, matches: ranges.map((r) => new vscode.Range(0, r.start.character, 0, r.end.character)) } });
      reported++;
    }
    return { limitHit: out.truncated };
  }
}

/**
 * Where the query matches in one line (UTF-16 columns, for the ranges VS Code highlights): the
 * guest's grep decided which lines match; this finds the columns, or none when JavaScript's RegExp
 * reads the pattern differently (the whole line is then highlighted).
 */
export function lineMatcher(query: TextSearchQuery): (line: string) => [number, number][] {
  let re: RegExp | undefined;
  try {
    const body = query.isRegExp ? query.pattern : query.pattern.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
    re = new RegExp(query.isWordMatch ? `\\b(?:${body})\\b` : body, query.isCaseSensitive ? 'gu' : 'giu');
  } catch {
    re = undefined;
  }
  return (line) => {
    if (!re) return [];
    const out: [number, number][] = [];
    re.lastIndex = 0;
    for (let m = re.exec(line); m && out.length < 100; m = re.exec(line)) {
      if (m[0].length === 0) {
        re.lastIndex++;
        continue;
      }
      out.push([m.index, Math.min(m.index + m[0].length, line.length)]);
    }
    return out;
  };
}
