/** `sandboxvm clone <source> <new name> [--checkpoint NAME] [--full]`: a thin call into the service (service/clones.ts). */
import { ErrorCode, SandboxError } from '../../common/errors';
import { validateVmName } from '../../common/names';
import type { CommandContext } from '../context';
import { ProgressBar } from '../progress';

export async function clone(ctx: CommandContext): Promise<number> {
  const [src, newName] = ctx.positionals;
  if (src === undefined || newName === undefined) throw new SandboxError(ErrorCode.BadArgument, 'clone needs a source VM and a new name: sandboxvm clone <vm> <new name> [--checkpoint NAME] [--full]');
  const name = validateVmName(src);
  const target = validateVmName(newName);
  const checkpoint = ctx.options.checkpoint === undefined ? undefined : String(ctx.options.checkpoint);
  const full = !!ctx.options.full;
  const client = await ctx.client();
  const bar = new ProgressBar(`Cloning ${name} as ${target}`);
  let r;
  try {
    r = await client.clone({ name, newName: target, checkpoint, full }, (s, t, m) => bar.update(s, t, m));
  } finally {
    bar.done();
  }
  if (ctx.options.json) {
    ctx.out(JSON.stringify(r, null, 2));
    return 0;
  }
  const from = checkpoint !== undefined ? `checkpoint ${JSON.stringify(checkpoint)} of ${name}` : name;
  ctx.out(`Cloned ${from} as ${target} (${r.kind}, ${r.elapsedMs} ms); it is ${r.state}. Start it with: sandboxvm start ${target}`);
  return 0;
}
