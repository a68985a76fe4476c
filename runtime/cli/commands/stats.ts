/**
 * `sandboxvm stats <vm> [--json] [--count N]`: the VM's live figures (like `docker stats`), one line
 * a second: QEMU's CPU use, the guest's memory and root filesystem, the disk overlay on the host.
 * Runs until Ctrl-C, or for N samples.
 */
import { ErrorCode, SandboxError } from '../../common/errors';
import type { VmMetricsEvent } from '../../client/serviceClient';
import type { CommandContext } from '../context';

const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
const gib = (b: number) => `${(b / 2 ** 30).toFixed(2)} GiB`;

export function formatMetrics(m: VmMetricsEvent): string {
  const parts = [`${m.name} ${m.state}`, `cpu ${m.cpuPercent === undefined ? '-' : `${m.cpuPercent.toFixed(1)}%`}`];
  if (m.guest) {
    const g = m.guest;
    parts.push(`mem ${mib(g.memory.totalBytes - g.memory.availableBytes)} / ${mib(g.memory.totalBytes)}`);
    parts.push(`rootfs ${gib(g.rootfs.usedBytes)} / ${gib(g.rootfs.totalBytes)}`);
  }
  if (m.hostRssBytes !== undefined) parts.push(`host rss ${mib(m.hostRssBytes)}`);
  if (m.overlay) parts.push(`overlay ${mib(m.overlay.allocatedBytes)}`);
  return parts.join('  ');
}

export async function stats(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const count = ctx.options.count === undefined ? Infinity : Number(ctx.options.count);
  if (!(count >= 1 && (count === Infinity || Number.isInteger(count)))) throw new SandboxError(ErrorCode.BadArgument, `--count needs a whole number of samples, at least 1 (got ${ctx.options.count})`);
  const client = await ctx.client();
  let seen = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const stop = await client.onMetrics(name, (m) => {
    if (seen >= count) return;
    seen++;
    ctx.out(ctx.options.json ? JSON.stringify(m) : formatMetrics(m));
    if (seen >= count) done();
  });
  process.once('SIGINT', done);
  await finished;
  await stop();
  return 0;
}
