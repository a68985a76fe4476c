/**
 * The glob patterns VS Code passes as a watch's `excludes` (`**\/node_modules/**`, `**\/.git/objects/**`,
 * `{a,b}`), as a predicate on paths relative to the watched folder. Supports `**`, `*`, `?`, `{a,b}`
 * and `[...]`; anything it cannot read is ignored (the event is then reported, never lost).
 */

/** A predicate true for paths (relative, `/`-separated) that any of `patterns` matches. */
export function excludeMatcher(patterns: readonly string[]): (relative: string) => boolean {
  const regexps: RegExp[] = [];
  for (const p of patterns.slice(0, 256)) {
    const re = globToRegExp(p);
    if (re) regexps.push(re);
  }
  if (regexps.length === 0) return () => false;
  return (relative) => regexps.some((re) => re.test(relative));
}

/** One glob as an anchored RegExp, or undefined when it is empty, too long or unbalanced. */
export function globToRegExp(glob: string): RegExp | undefined {
  if (typeof glob !== 'string' || glob.length === 0 || glob.length > 1024) return undefined;
  let pattern = glob.replace(/^\.\//, '').replace(/^\/+/, '');
  let out = '';
  let braces = 0;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') {
      if (pattern[i + 1] === '*') {
        // `**/` matches any number of whole segments (none too); a trailing `**` anything below.
        const slash = pattern[i + 2] === '/';
        out += slash ? '(?:.*/)?' : '.*';
        i += slash ? 2 : 1;
      } else out += '[^/]*';
    } else if (c === '?') out += '[^/]';
    else if (c === '{') {
      braces++;
      out += '(?:';
    } else if (c === '}' && braces > 0) {
      braces--;
      out += ')';
    } else if (c === ',' && braces > 0) out += '|';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 1);
      if (end < 0) return undefined;
      const body = pattern.slice(i + 1, end).replace(/^!/, '^').replace(/\\/g, '\\\\');
      out += `[${body}]`;
      i = end;
    } else out += c.replace(/[.+^$()|\\\]]/g, '\\$&');
  }
  if (braces !== 0) return undefined;
  pattern = out;
  try {
    // A folder that matches excludes what is under it too.
    return new RegExp(`^${pattern}(?:/.*)?$`, 's');
  } catch {
    return undefined;
  }
}

/** Quick Open's matching, as VS Code's fuzzy filter reads a pattern: its characters in order, case-insensitive, spaces ignored. */
export function fuzzyMatches(pattern: string, candidate: string): boolean {
  const p = pattern.replace(/\s+/g, '').toLowerCase();
  if (!p) return true;
  const c = candidate.toLowerCase();
  let at = 0;
  for (const ch of p) {
    at = c.indexOf(ch, at);
    if (at < 0) return false;
    at++;
  }
  return true;
}
