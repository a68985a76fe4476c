/**
 * A progress bar on stderr for long work (image builds, boots, copies); plain lines when not a
 * terminal. Steps show `step/total`; byte counts (`bytes: true`) show sizes in one unit family
 * (B, KiB, MiB, GiB), and a total of 0 means unknown: no bar, no "of".
 */
export class ProgressBar {
  private lastStep = -1;
  private lastPrinted = 0;
  private active = false;
  private readonly started = Date.now();

  constructor(private readonly title: string, private readonly out: NodeJS.WriteStream = process.stderr, private readonly options: { bytes?: boolean } = {}) {
    // Byte counts in a log start after 2 s: a quick copy prints no progress at all.
    if (options.bytes) this.lastPrinted = this.started;
  }

  update(step: number, total: number, message: string): void {
    const width = 24;
    const known = total > 0;
    const filled = known ? Math.round((Math.min(step, total) / total) * width) : 0;
    const elapsed = ((Date.now() - this.started) / 1000).toFixed(1);
    const amount = this.options.bytes ? (known ? `${formatBytes(step)} of ${formatBytes(total)}` : formatBytes(step)) : known ? `${step}/${total}` : `${step}`;
    const bar = known ? ` [${'#'.repeat(filled)}${'.'.repeat(width - filled)}]` : '';
    const line = `${this.title}${bar} ${amount}${message ? ` ${message}` : ''} (${elapsed}s)`;
    if (this.out.isTTY) {
      const cols = this.out.columns || 100;
      this.out.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
      this.active = true;
      return;
    }
    // Not a terminal (a log, CI): step lines, and for byte counts at most one line per 2 s.
    const counted = !this.options.bytes && known && total < 100;
    if (step === this.lastStep || !(counted || (!this.options.bytes && step === total) || Date.now() - this.lastPrinted >= 2000)) return;
    this.out.write(`${this.title}: ${counted ? `${step}/${total} ` : ''}${this.options.bytes ? `${amount}${message ? ` ${message}` : ''}` : message}\n`);
    this.lastPrinted = Date.now();
    this.lastStep = step;
  }

  done(): void {
    if (this.active) this.out.write('\r\x1b[2K');
    this.active = false;
  }
}

/** A byte count in the binary family: `512 B`, `3.4 KiB`, `12.0 MiB`, `1.25 GiB`. */
export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 2 ** 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 2 ** 30) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}
