/**
 * `--timeout` bounds a whole command (connecting, opening the session and running it), not only
 * the guest process: a VM whose agent is stuck must not hold the shell past the limit.
 */
import type { CommandContext } from './context';
import { formatDuration, parseTimeout } from './duration';

/** The exit status of a command that ran out of time, as coreutils' `timeout` gives it. */
export const TIMED_OUT_STATUS = 124;
/**
 * Past the limit, the guest's own kill normally reports first (with the command's output to that
 * point); the CLI gives it this long before ending the command itself.
 */
export const DEADLINE_GRACE_MS = 1000;

/**
 * Wraps a command so it ends with TIMED_OUT_STATUS and one line on stderr when `--timeout` (plus
 * DEADLINE_GRACE_MS) passes before it returns. Without `--timeout` the command is unbounded.
 */
export function boundedByTimeout(run: (ctx: CommandContext) => Promise<number>): (ctx: CommandContext) => Promise<number> {
  return async (ctx) => {
    const limitMs = parseTimeout(ctx.options.timeout);
    if (!limitMs) return run(ctx);
    let timer: NodeJS.Timeout | undefined;
    const expired = new Promise<number>((resolve) => {
      timer = setTimeout(() => {
        process.stderr.write(`sandboxvm: ${ctx.command} did not finish within ${formatDuration(limitMs)} (--timeout); gave up\n`);
        resolve(TIMED_OUT_STATUS);
      }, limitMs + DEADLINE_GRACE_MS);
    });
    try {
      return await Promise.race([run(ctx), expired]);
    } finally {
      clearTimeout(timer);
    }
  };
}
