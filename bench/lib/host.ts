/** Facts about the host that make figures noisy: other QEMUs, load. Reported on stderr only. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import { log } from './output';

/** pids and short command lines of qemu-system processes other than `ours`. */
export function otherQemus(ours: ReadonlySet<number> = new Set()): string[] {
  if (process.platform !== 'linux') return [];
  const found: string[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || ours.has(Number(entry))) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmd[0] && /qemu-system/.test(cmd[0])) found.push(`${entry} ${cmd.slice(0, 6).join(' ')}`.slice(0, 140));
    } catch {
      // gone
    }
  }
  return found;
}

export function hostLine(): string {
  const [l1] = os.loadavg();
  return `${os.cpus().length} cpu(s), load ${l1.toFixed(2)}, ${(os.freemem() / 2 ** 30).toFixed(1)} GiB free`;
}

/** Logs a warning naming the other QEMUs sharing the CPUs, if any: figures taken beside them are noisy. */
export function warnOfOtherQemus(): void {
  const others = otherQemus();
  if (others.length > 0) log(`warning: ${others.length} other QEMU process(es) share the CPUs; figures will be noisy:\n  ${others.join('\n  ')}`);
}
