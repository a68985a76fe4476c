/** A progress bar on stderr for long work (image builds, boots); plain lines when not a terminal. */
export class ProgressBar {
  private lastLine = '';
  private lastStep = -1;
  private lastPrinted = 0;
  private active = false;
  private readonly started = Date.now();

  constructor(private readonly title: string, private readonly out: NodeJS.WriteStream = process.stderr) {}

  update(step: number, total: number, message: string): void {
    const width = 24;
    const filled = total > 0 ? Math.round((Math.min(step, total) / total) * width) : 0;
    const elapsed = ((Date.now() - this.started) / 1000).toFixed(1);
    const line = `${this.title} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${step}/${total} ${message} (${elapsed}s)`;
    if (this.out.isTTY) {
      const cols = this.out.columns || 100;
      this.out.write(`\r\x1b[2K${line.slice(0, cols - 1)}`);
      this.active = true;
    } else if (step !== this.lastStep && (total < 100 || step === total || Date.now() - this.lastPrinted >= 2000)) {
      // Not a terminal (a log, CI): step lines, and for byte counts at most one line per 2 s.
      this.out.write(`${this.title}: ${total < 100 ? `${step}/${total} ` : ''}${message}\n`);
      this.lastPrinted = Date.now();
      this.lastStep = step;
    }
    this.lastLine = line;
  }

  done(): void {
    if (this.active) this.out.write('\r\x1b[2K');
    this.active = false;
  }
}
