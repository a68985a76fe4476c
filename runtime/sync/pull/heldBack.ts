/**
 * Files a pull holds back: paths that tools on the host obey or run by themselves when the user
 * merely opens the folder, enters it in a shell, or runs git in it. A guest that writes one could
 * run a program on the host without the user choosing to run anything from the guest. They are not
 * written into the folder: they go to a quarantine outside it (pullState.ts) and are listed, and a
 * later pull writes them when the user allows them (`--allow <path>`: that path, or everything
 * under it). Matched at any depth (a nested folder may be opened or entered on its own).
 *
 *   .git/hooks/**, .git/modules/** /hooks/**   git runs hooks on commit, checkout, merge...
 *   .git/config, .git/modules/** /config        core.fsmonitor, core.hooksPath, core.sshCommand,
 *                                               aliases, filter and credential helpers: commands
 *   .husky/**, .githooks/**                    hook folders that core.hooksPath commonly names
 *   .vscode/tasks.json                         tasks can run on folder open (runOn: folderOpen)
 *   .vscode/settings.json, *.code-workspace    settings name programs (terminal profiles,
 *                                               interpreters, linters, git.path...)
 *   .vscode/launch.json                        debug configurations run programs (preLaunchTask)
 *   .devcontainer/**, .devcontainer.json       initializeCommand runs on the host
 *   .envrc                                     direnv runs it on entering the folder
 *   .exrc, .nvimrc, .nvim.lua                  vim/neovim run them on start (exrc)
 *   .npmrc, .yarnrc, .yarnrc.yml               script-shell, node-options, yarnPath: any npm or
 *                                               yarn command then runs what they name
 *
 * Not held back, by decision: `.gitattributes` (it selects filter/diff drivers by name, but only
 * the host's own git config defines their commands), `package.json` scripts, `Makefile` and other
 * build files (they run when the user runs the project's build, which is running the guest's code
 * by choice, as with any source file pulled), `.gitmodules` (git ignores `update = !command`
 * from it), `.env` (read as data by dotenv; autoenv users add it with `heldBack` in code).
 */

export interface HeldBackRule {
  test(parts: string[]): boolean;
  why: string;
}

const at = (parts: string[], name: string) => parts.indexOf(name);
const lastIs = (parts: string[], ...names: string[]) => names.includes(parts[parts.length - 1]);
const parentIs = (parts: string[], name: string) => parts.length >= 2 && parts[parts.length - 2] === name;
const under = (parts: string[], name: string) => parts.slice(0, -1).includes(name);

export const HELD_BACK_RULES: readonly HeldBackRule[] = [
  { test: (p) => at(p, '.git') >= 0 && p.slice(at(p, '.git') + 1, -1).includes('hooks'), why: 'a git hook: git runs it' },
  { test: (p) => at(p, '.git') >= 0 && at(p, '.git') < p.length - 1 && lastIs(p, 'config') && (parentIs(p, '.git') || p.slice(at(p, '.git')).includes('modules')), why: 'git configuration: it can name commands git runs' },
  { test: (p) => under(p, '.husky') || under(p, '.githooks'), why: 'a git hook folder (core.hooksPath): git runs what it holds' },
  { test: (p) => parentIs(p, '.vscode') && lastIs(p, 'tasks.json'), why: 'VS Code tasks: they can run when the folder opens' },
  { test: (p) => parentIs(p, '.vscode') && lastIs(p, 'settings.json', 'launch.json'), why: 'VS Code settings or launch configurations: they name programs the editor runs' },
  { test: (p) => p[p.length - 1].endsWith('.code-workspace'), why: 'a VS Code workspace file: its settings and tasks name programs' },
  { test: (p) => under(p, '.devcontainer') || lastIs(p, '.devcontainer.json'), why: 'a dev container definition: initializeCommand runs on the host' },
  { test: (p) => lastIs(p, '.envrc'), why: 'direnv runs it on entering the folder' },
  { test: (p) => lastIs(p, '.exrc', '.nvimrc', '.nvim.lua'), why: 'vim or neovim runs it on start' },
  { test: (p) => lastIs(p, '.npmrc', '.yarnrc', '.yarnrc.yml'), why: 'package manager configuration: it can name programs npm or yarn runs' },
];

/** Why `rel` ('/'-separated) is held back, or undefined when it is written like any file. */
export function heldBackReason(rel: string, rules: readonly HeldBackRule[] = HELD_BACK_RULES): string | undefined {
  const parts = rel.split('/');
  return rules.find((r) => r.test(parts))?.why;
}

/** Whether the user allowed `rel`: one of `allow` is the path itself or a folder above it. */
export function isAllowed(rel: string, allow: readonly string[]): boolean {
  return allow.some((a) => {
    const clean = a.replace(/^\.\/+/, '').replace(/\/+$/, '');
    return clean !== '' && (rel === clean || rel.startsWith(`${clean}/`));
  });
}
