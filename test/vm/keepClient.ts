/**
 * A client process for keep-on-disconnect.test.ts, killed with SIGKILL mid-stream:
 *   keepClient.ts open <home> <vm> <out> <keep|nokeep> -- argv...   opens an exec session
 *   keepClient.ts attach <home> <vm> <out> <id>                      attaches it from <out>'s size
 * Every output chunk is appended to <out> (synchronously, before it is acknowledged). Prints
 * `id <n>` once the session is open or attached and `exit <code>` when it ends.
 */
import * as fs from 'node:fs';
import { ServiceClient } from '../../runtime/client/serviceClient';
import type { SessionEvents } from '../../runtime/client/sessionClient';

async function main(): Promise<void> {
  const [mode, home, vm, out, arg, , ...argv] = process.argv.slice(2);
  const service = await ServiceClient.connect({ home, autoStart: false });
  const sessions = await service.attach(vm);
  const fd = fs.openSync(out, 'a');
  const events: SessionEvents = {
    onData: (_stream, data) => void fs.writeSync(fd, data),
    onExit: (r) => {
      process.stdout.write(`exit ${r.code} ${r.error ?? ''}\n`);
      process.exit(0);
    },
  };
  if (mode === 'open') {
    const s = await sessions.open({ kind: 'exec', argv, keepOnDisconnect: arg === 'keep' }, events);
    process.stdout.write(`id ${s.id}\n`);
  } else {
    const { session } = await sessions.attach(Number(arg), events, { keepOnDisconnect: true, stdout: fs.statSync(out).size, stderr: 0 });
    process.stdout.write(`id ${session.id}\n`);
  }
}

main().catch((err) => {
  process.stdout.write(`error ${(err as Error).message}\n`);
  process.exit(2);
});
