/** Errors as users read them: one plain sentence (pure; unit-tested). */
import { asSandboxError, ErrorCode } from '../../runtime/common/errors';

/** True for failures that are the user's own cancellation: never shown as errors. */
export function isCancellation(err: unknown): boolean {
  return asSandboxError(err).code === ErrorCode.Cancelled || (err as Error)?.name === 'Canceled';
}

/**
 * One sentence from the runtime's message (which says what happened and what to do): one line,
 * starting with a capital, ending with a full stop.
 */
export function sentence(err: unknown): string {
  const text = asSandboxError(err).message.trim().replace(/\s+/g, ' ');
  const capital = text.charAt(0).toUpperCase() + text.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}
