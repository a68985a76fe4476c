/**
 * `sandboxvm console <vm>`: the VM's serial console (ttyS0) in this terminal, like `virsh console`.
 * Raw terminal; Ctrl-] detaches. Shows the boot so far (the last 64 KiB), then live; works while
 * the guest agent is dead. With a non-terminal stdin, its bytes are typed and its end detaches
 * (after a second for the answer to arrive).
 */
import { SerialClient } from '../../client/serialClient';
import { ErrorCode, SandboxError } from '../../common/errors';
import type { CommandContext } from '../context';

const DETACH = 0x1d; // Ctrl-]

export async function serialConsole(ctx: CommandContext): Promise<number> {
  const name = ctx.name();
  const vm = await (await ctx.client()).info(name);
  if (vm.state === 'stopped' || vm.state === 'saved') {
    throw new SandboxError(ErrorCode.WrongState, `${name} is ${vm.state}: start it (sandboxvm start ${name}) to use its console`);
  }
  // A VM that is starting gets its console a moment after QEMU is spawned.
  const serial = await SerialClient.connect(vm.paths.dir, { waitMs: vm.state === 'starting' ? 60_000 : 0 });
  await ctx.dispose();
  const stdin = process.stdin;
  const tty = stdin.isTTY === true;
  if (tty) process.stderr.write(`Connected to the serial console of ${name}; Ctrl-] detaches.\r\n`);
  const ended = new Promise<string>((resolve) => serial.onClose(resolve));
  serial.onData((d) => process.stdout.write(d));
  if (tty) stdin.setRawMode(true);
  stdin.on('data', (d: Buffer) => {
    const i = tty ? d.indexOf(DETACH) : -1;
    if (i >= 0) {
      if (i > 0) serial.write(d.subarray(0, i));
      serial.close('detached');
      return;
    }
    serial.write(d);
  });
  stdin.on('end', () => setTimeout(() => serial.close('detached'), 1000));
  const reason = await ended;
  if (tty) stdin.setRawMode(false);
  stdin.destroy();
  if (reason !== 'detached') process.stderr.write(`\r\nsandboxvm: ${reason}\n`);
  else if (tty) process.stderr.write('\r\n');
  return 0;
}
