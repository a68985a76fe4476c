/**
 * What Ctrl-C means during an exec: the first is the guest process's (SIGINT forwarded); a second
 * within INTERRUPT_WINDOW_MS of the one before detaches the CLI, leaving the session running in the
 * guest; a third within the window after that kills the session. A pause longer than the window
 * starts over.
 */
export const INTERRUPT_WINDOW_MS = 1000;

export type InterruptAction = 'forward' | 'detach' | 'kill';

export class InterruptCounter {
  private count = 0;
  private last = -Infinity;

  constructor(private readonly windowMs = INTERRUPT_WINDOW_MS) {}

  /** The meaning of a Ctrl-C at `now` (milliseconds). */
  next(now: number): InterruptAction {
    this.count = now - this.last <= this.windowMs ? this.count + 1 : 1;
    this.last = now;
    return this.count === 1 ? 'forward' : this.count === 2 ? 'detach' : 'kill';
  }
}
