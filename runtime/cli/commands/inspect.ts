/** list, info, logs: read-only views. */
import * as fs from 'node:fs';
import type { CommandContext } from '../context';
import { infoText, listTable } from '../format';
import { GuestFiles, type GuestInfo } from '../../client/guestFiles';

export async function list(ctx: CommandContext): Promise<number> {
  const vms = await (await ctx.client()).list();
  if (ctx.options.json) ctx.out(JSON.stringify(vms, null, 2));
  else if (vms.length === 0) ctx.out('No VMs. Create one with: sandboxvm create dev');
  else ctx.out(listTable(vms));
  return 0;
}

/** Configuration, state and paths; for a running VM also what its agent reports (like Hyper-V's KVP). */
export async function info(ctx: CommandContext): Promise<number> {
  const client = await ctx.client();
  const vm = await client.info(ctx.name());
  let guest: GuestInfo | undefined;
  if (vm.state === 'running' && vm.runtime?.agent.connected && vm.runtime.agent.responding !== false) {
    // What the guest says about itself is a bonus: never wait on a guest for it.
    guest = await withinMs(GUEST_INFO_WAIT_MS, async () => {
      const sessions = await client.attach(vm.name);
      try {
        return await new GuestFiles(sessions).info();
      } finally {
        sessions.dispose();
      }
    });
  }
  ctx.out(ctx.options.json ? JSON.stringify({ ...vm, guest }, null, 2) : infoText(vm, guest));
  return 0;
}

/** How long `info` waits for the guest's own report (OS, addresses, ports) before going without. */
const GUEST_INFO_WAIT_MS = 2000;

/** What `task` resolves to within `ms`, else (or on failure) undefined. */
async function withinMs<T>(ms: number, task: () => Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ms)));
  try {
    return await Promise.race([task().catch(() => undefined), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Prints the console log; with -f keeps printing what is appended until interrupted. */
export async function logs(ctx: CommandContext): Promise<number> {
  const vm = await (await ctx.client()).info(ctx.name());
  const file = vm.paths.consoleLog;
  let offset = 0;
  const pump = () => {
    let fd: number;
    try {
      fd = fs.openSync(file, 'r');
    } catch {
      return;
    }
    try {
      const size = fs.fstatSync(fd).size;
      if (size < offset) offset = 0; // truncated
      const buf = Buffer.allocUnsafe(64 * 1024);
      while (offset < size) {
        const n = fs.readSync(fd, buf, 0, buf.length, offset);
        if (n <= 0) break;
        process.stdout.write(buf.subarray(0, n));
        offset += n;
      }
    } finally {
      fs.closeSync(fd);
    }
  };
  pump();
  if (!ctx.options.follow) return 0;
  await ctx.dispose();
  fs.watchFile(file, { interval: 250 }, pump);
  await new Promise<void>((resolve) => process.once('SIGINT', resolve));
  fs.unwatchFile(file);
  return 0;
}
