/**
 * Ignore rules in .gitignore syntax, shared by the host (scan, watch) and the guest (its manifest
 * walk), so both ends skip the same paths.
 *
 * A rule set is an ordered list of rule groups, each anchored at a directory of the tree (the
 * root's defaults and user patterns at '', each `.gitignore` at its own directory). Within and
 * across groups the last matching rule wins, as git does; a negated rule (`!pattern`) re-includes.
 * Walkers never descend into an ignored directory, so, as in git, nothing below it can be
 * re-included. Ignored paths are neither copied nor deleted in the guest: what the guest makes
 * there itself (node_modules, build output) stays.
 *
 * Supported: `#` comments, `\#` and `\!` escapes, trailing-space trimming, `!`, a trailing `/`
 * (directories only), a leading or inner `/` (anchored at the group's directory), `*`, `?`,
 * `[...]` classes and `**` (`**\/x`, `x/**`, `a/**\/b`).
 */

export interface IgnoreGroup {
  /** The directory the patterns are relative to ('' = the tree's root). */
  base: string;
  patterns: string[];
}

/**
 * What is never synced unless a user pattern re-includes it (`!name`): editor and OS litter, and
 * our own temporaries. `.git/` is synced (so `git status` works in the guest), except its lock
 * files, which belong to a git process running on the host. node_modules and build output are
 * left to the project's .gitignore (honoured by default): they are made in the guest.
 */
export const DEFAULT_IGNORES: readonly string[] = [
  '.DS_Store',
  'Thumbs.db',
  '*.swp',
  '*.swx',
  '.*.sw?',
  '*~',
  '.#*',
  '/.git/*.lock',
  '/.git/refs/**/*.lock',
  '.*.sandboxvm-*.partial',
];

/** The longest pattern and the most patterns accepted (they cross the channel to the guest). */
export const MAX_PATTERN = 1024;
export const MAX_PATTERNS = 10_000;

interface Rule {
  negate: boolean;
  dirOnly: boolean;
  /** Matches the path relative to the group's base (anchored) or any of its final segments (not anchored). */
  regex: RegExp;
  anchored: boolean;
}

interface CompiledGroup {
  base: string;
  rules: Rule[];
}

export class IgnoreRules {
  private readonly groups: CompiledGroup[];

  constructor(readonly sources: readonly IgnoreGroup[]) {
    let count = 0;
    this.groups = sources.map((g) => {
      const rules: Rule[] = [];
      for (const line of g.patterns) {
        if (++count > MAX_PATTERNS) break;
        const rule = compile(line);
        if (rule) rules.push(rule);
      }
      return { base: g.base, rules };
    });
  }

  /** The rules with one more group (a .gitignore found at `base`). */
  with(base: string, patterns: string[]): IgnoreRules {
    return new IgnoreRules([...this.sources, { base, patterns }]);
  }

  /** Whether `rel` (a relative path; `isDir`: a directory) is ignored. Its parents are assumed not to be. */
  ignores(rel: string, isDir: boolean): boolean {
    let ignored = false;
    for (const g of this.groups) {
      if (g.base !== '' && !rel.startsWith(`${g.base}/`)) continue;
      const sub = g.base === '' ? rel : rel.slice(g.base.length + 1);
      const name = sub.slice(sub.lastIndexOf('/') + 1);
      for (const r of g.rules) {
        if (r.dirOnly && !isDir) continue;
        if (r.regex.test(r.anchored ? sub : name)) ignored = !r.negate;
      }
    }
    return ignored;
  }
}

/** Rules from the defaults (unless `defaults` is false) and a user's extra patterns, at the root. */
export function baseRules(extra: readonly string[] = [], defaults = true): IgnoreRules {
  return new IgnoreRules([{ base: '', patterns: [...(defaults ? DEFAULT_IGNORES : []), ...extra] }]);
}

/** Splits a .gitignore file into its lines (bounded). */
export function parseIgnoreFile(text: string): string[] {
  return text.split(/\r?\n/).slice(0, MAX_PATTERNS);
}

/** Checks a user's pattern: one line, not too long. Returns why it is refused, or undefined. */
export function checkPattern(p: unknown): string | undefined {
  if (typeof p !== 'string' || p.trim() === '') return 'an ignore pattern must be a non-empty string';
  if (p.length > MAX_PATTERN) return `an ignore pattern may be at most ${MAX_PATTERN} characters`;
  if (/[\r\n\0]/.test(p)) return 'an ignore pattern must be one line';
  return undefined;
}

function compile(line: string): Rule | undefined {
  if (line.length > MAX_PATTERN) return undefined;
  let p = line.replace(/(?<!\\)\s+$/, '');
  if (p === '' || p.startsWith('#')) return undefined;
  let negate = false;
  if (p.startsWith('!')) {
    negate = true;
    p = p.slice(1);
  } else if (p.startsWith('\\!') || p.startsWith('\\#')) p = p.slice(1);
  let dirOnly = false;
  if (p.endsWith('/')) {
    dirOnly = true;
    p = p.replace(/\/+$/, '');
  }
  if (p === '') return undefined;
  const anchored = p.includes('/');
  if (p.startsWith('/')) p = p.slice(1);
  if (p === '') return undefined;
  return { negate, dirOnly, anchored, regex: new RegExp(`^${globToRegex(p)}$`) };
}

function globToRegex(glob: string): string {
  let out = '';
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i];
    if (c === '*') {
      if (glob[i + 1] === '*') {
        const atStart = i === 0 || glob[i - 1] === '/';
        const atEnd = i + 2 === glob.length || glob[i + 2] === '/';
        if (atStart && atEnd) {
          if (i + 2 === glob.length) out += '.*'; // x/** : everything inside
          else {
            out += '(?:.*/)?'; // **/ : zero or more directories
            i++; // the '/'
          }
          i++;
          continue;
        }
      }
      out += '[^/]*';
    } else if (c === '?') out += '[^/]';
    else if (c === '[') {
      const close = glob.indexOf(']', i + 2);
      if (close < 0) out += '\\[';
      else {
        let cls = glob.slice(i + 1, close);
        if (cls.startsWith('!')) cls = `^${cls.slice(1)}`;
        out += `[${cls.replace(/\\/g, '\\\\')}]`;
        i = close;
      }
    } else if (c === '\\' && i + 1 < glob.length) {
      out += escapeRegex(glob[++i]);
    } else out += escapeRegex(c);
  }
  return out;
}

function escapeRegex(c: string): string {
  return /[.*+?^${}()|[\]\\/]/.test(c) ? `\\${c}` : c;
}
