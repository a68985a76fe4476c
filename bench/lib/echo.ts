/**
 * Terminal round trips: one byte written to an interactive terminal running
 * `stty raw -echo; echo READY; exec cat` and its echo read back, for any transport (the runtime's
 * pty sessions, `ssh -tt`). The transport calls feed() with whatever output arrives.
 */
import { now } from './stats';

/** The command the terminal runs: no line discipline in the way, cat echoes each byte at once. */
export const ECHO_COMMAND = 'stty raw -echo; echo READY; exec cat';

export class EchoProbe {
  private received = '';
  private waiter?: { text: string; resolve: () => void };

  /** `write` sends bytes to the terminal; a returned promise is awaited before the next sample. */
  constructor(private readonly write: (data: string) => unknown) {}

  feed(data: Buffer | string): void {
    this.received += data.toString();
    if (this.received.length > 1 << 16) this.received = this.received.slice(-4096);
    const w = this.waiter;
    if (w && this.received.includes(w.text)) {
      this.waiter = undefined;
      w.resolve();
    }
  }

  /** Resolves once `text` has arrived (counting what arrived since the last reset). */
  waitFor(text: string, timeoutMs: number, what: string): Promise<void> {
    if (this.received.includes(text)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new Error(`${what}: no ${JSON.stringify(text)} within ${timeoutMs} ms (got ${JSON.stringify(this.received.slice(-200))})`));
      }, timeoutMs);
      this.waiter = {
        text,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
    });
  }

  /** One round trip: writes 'x' and resolves with the milliseconds until it came back. */
  async sample(timeoutMs = 10_000): Promise<number> {
    this.received = '';
    const t0 = now();
    const echoed = this.waitFor('x', timeoutMs, 'terminal echo').then(() => now() - t0);
    const written = Promise.resolve(this.write('x'));
    const [ms] = await Promise.all([echoed, written]);
    return ms;
  }

  /**
   * `warmup` untimed round trips, then `n` timed ones. The warm-up is long enough for V8 to have
   * optimised the host side's hot path (a fresh worker takes a few hundred round trips): a
   * terminal is measured as it is used, in its steady state, on both sides alike.
   */
  async samples(n: number, warmup = 300): Promise<number[]> {
    for (let i = 0; i < warmup; i++) await this.sample();
    const out: number[] = [];
    for (let i = 0; i < n; i++) out.push(await this.sample());
    return out;
  }
}
