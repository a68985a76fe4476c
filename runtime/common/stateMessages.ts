/** What a user is told when a VM is in the wrong state for what they asked: the state, and the command that gets it right. */
import type { VmState } from './status';

/** The command that brings a VM from `state` towards running, or what to wait for. */
function towardsRunning(name: string, state: VmState): string {
  switch (state) {
    case 'paused':
      return `resume it with \`sandboxvm resume ${name}\``;
    case 'stopped':
      return `start it with \`sandboxvm start ${name}\``;
    case 'saved':
      return `\`sandboxvm start ${name}\` restores it`;
    case 'starting':
      return 'wait for its start to finish';
    default:
      return `see \`sandboxvm info ${name}\``;
  }
}

/** Verbs whose work is done already in a state. */
const ALREADY: Record<string, VmState> = { start: 'running', stop: 'stopped', pause: 'paused', resume: 'running', save: 'saved' };

/**
 * The message for `verb` refused on VM `name` in `state` (allowed only in `allowed`). Reaching a
 * running VM's guest (`attach to`: exec, shell, cp, attach) reads "dev is paused; resume it with
 * `sandboxvm resume dev`"; other verbs keep "cannot pause dev: it is stopped" and add the way out; a verb whose work is
 * done says so ("dev is running already").
 */
export function wrongStateMessage(name: string, state: VmState, verb: string, allowed: readonly VmState[]): string {
  if (ALREADY[verb] === state) return `${name} is ${state} already`;
  if (verb === 'attach to') return `${name} is ${state}; ${towardsRunning(name, state)}`;
  if (allowed.length === 1 && allowed[0] === 'running' && state !== 'running') return `cannot ${verb} ${name}: it is ${state}; ${towardsRunning(name, state)}`;
  const busy = state === 'starting' || state === 'stopping' || state === 'saving';
  return `cannot ${verb} ${name}: it is ${state} (allowed when ${allowed.join(' or ')})${busy ? '; try again when that is done' : ''}`;
}
