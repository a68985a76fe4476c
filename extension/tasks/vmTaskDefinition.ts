/**
 * The `sandboxvm` task type (package.json `taskDefinitions`): a command run in a VM, with an undo
 * point before each run unless `undoPoint` is false. Checked here (pure, unit-tested), since
 * tasks.json is the user's text.
 */
export const TASK_TYPE = 'sandboxvm';

export interface VmTaskDefinition {
  type: typeof TASK_TYPE;
  /** The VM's name. */
  vm: string;
  /** A shell command line, run with `/bin/sh -c` in the guest. */
  command: string;
  /** Take an undo point before each run (default true). */
  undoPoint?: boolean;
  /** The guest directory to run in (default: the guest user's home). */
  cwd?: string;
  env?: Record<string, string>;
}

/** The definition checked, or a sentence saying what is wrong with it. */
export function checkTaskDefinition(raw: Record<string, unknown>): VmTaskDefinition | string {
  if (raw.type !== TASK_TYPE) return `not a ${TASK_TYPE} task`;
  if (typeof raw.vm !== 'string' || raw.vm.trim() === '') return 'A sandboxvm task needs "vm": the name of the VM to run in.';
  if (typeof raw.command !== 'string' || raw.command.trim() === '') return 'A sandboxvm task needs "command": the command line to run in the VM.';
  if (raw.undoPoint !== undefined && typeof raw.undoPoint !== 'boolean') return '"undoPoint" of a sandboxvm task is true or false.';
  if (raw.cwd !== undefined && (typeof raw.cwd !== 'string' || !raw.cwd.startsWith('/'))) return '"cwd" of a sandboxvm task is an absolute guest path.';
  let env: Record<string, string> | undefined;
  if (raw.env !== undefined) {
    if (typeof raw.env !== 'object' || raw.env === null || Array.isArray(raw.env)) return '"env" of a sandboxvm task is an object of strings.';
    env = {};
    for (const [k, v] of Object.entries(raw.env)) {
      if (typeof v !== 'string' || !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) return `"env" of a sandboxvm task: ${JSON.stringify(k)} must be a variable name with a string value.`;
      env[k] = v;
    }
  }
  return { type: TASK_TYPE, vm: raw.vm.trim(), command: raw.command, undoPoint: raw.undoPoint as boolean | undefined, cwd: raw.cwd as string | undefined, env };
}

/** The `vm.checkpoint.create` limits from the settings: only those set (a positive whole number). */
export function undoLimits(maxCount: unknown, maxDiskMiB: unknown): { undoMaxCount?: number; undoMaxDiskMiB?: number } {
  const ok = (n: unknown) => typeof n === 'number' && Number.isInteger(n) && n > 0;
  return { ...(ok(maxCount) ? { undoMaxCount: maxCount as number } : {}), ...(ok(maxDiskMiB) ? { undoMaxDiskMiB: maxDiskMiB as number } : {}) };
}
