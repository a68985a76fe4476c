/**
 * `sandboxvm`: the service from a shell. One table of commands; each is a small async function
 * that returns the process's exit code. Errors print one line (what happened, what to do) and
 * exit 1.
 */
import { parseArgs } from 'node:util';
import { asSandboxError, ErrorCode, SandboxError } from '../common/errors';
import { CommandContext } from './context';
import * as lifecycle from './commands/lifecycle';
import * as inspect from './commands/inspect';
import * as sessions from './commands/sessions';
import { ServiceClient } from '../client/serviceClient';
import { ProgressBar } from './progress';
import { copy } from './commands/copy';
import { installBrokenPipeHandler } from './brokenPipe';
import { boundedByTimeout } from './deadline';
import { serialConsole } from './commands/console';
import { stats } from './commands/stats';
import { PULL_OPTIONS, pullCommand } from './commands/pull';
import { sync } from './commands/sync';
import { port, PORT_USAGE } from './commands/ports';
import { checkpoint, undo } from './commands/checkpoint';
import { exportCommand, importCommand } from './commands/transfer';
import { compact, imagePrune, unknownImageAction } from './commands/disk';
import { clone } from './commands/clone';

type Command = {
  run: (ctx: CommandContext) => Promise<number>;
  usage: string;
  options?: Record<string, { type: 'string' | 'boolean'; short?: string; multiple?: boolean }>;
  /** Takes a command line after `--` (exec, shell); for the others `--` only ends the options. */
  command?: boolean;
  /** The most arguments it takes besides options (default 1: a VM name); exec takes any. */
  maxArgs?: number;
};

const COMMANDS: Record<string, Command> = {
  create: { run: lifecycle.create, usage: 'create <name> [--cpus N] [--memory 1G] [--disk 10G] [--network isolated|internet|host]', options: { cpus: { type: 'string' }, memory: { type: 'string' }, disk: { type: 'string' }, network: { type: 'string' }, 'no-network': { type: 'boolean' } } },
  set: { run: lifecycle.set, usage: 'set <name> [--network isolated|internet|host] [--undo-points N] [--undo-disk SIZE]   network: a stopped VM (next start); undo-point limits: any time', options: { network: { type: 'string' }, 'undo-points': { type: 'string' }, 'undo-disk': { type: 'string' } } },
  start: { run: lifecycle.start, usage: 'start <name>            boot, or restore a saved VM' },
  stop: { run: lifecycle.stop, usage: 'stop <name> [--force]   graceful (agent, ACPI, kill); --force turns it off at once', options: { force: { type: 'boolean', short: 'f' } } },
  pause: { run: lifecycle.simple('pause', 'is paused'), usage: 'pause <name>' },
  resume: { run: lifecycle.simple('resume', 'is running'), usage: 'resume <name>' },
  save: { run: lifecycle.simple('save', 'is saved; `sandboxvm start` restores it'), usage: 'save <name>             write the running state to disk and stop' },
  restart: { run: lifecycle.restart, usage: 'restart <name>' },
  rm: { run: lifecycle.remove, usage: 'rm <name> [--force]     remove the VM and all its files', options: { force: { type: 'boolean', short: 'f' } } },
  list: { run: inspect.list, usage: 'list [--json]', options: { json: { type: 'boolean' } }, maxArgs: 0 },
  info: { run: inspect.info, usage: 'info <name> [--json]', options: { json: { type: 'boolean' } } },
  stats: { run: stats, usage: 'stats <name> [--json] [--count N]   live CPU, memory and disk figures, one line a second', options: { json: { type: 'boolean' }, count: { type: 'string' } } },
  logs: { run: inspect.logs, usage: 'logs <name> [-f]        the serial console log', options: { follow: { type: 'boolean', short: 'f' } } },
  exec: { run: boundedByTimeout(sessions.exec), usage: 'exec <name> [--cwd DIR] [--env K=V] [--timeout 30s] [--undo-point] -- <command> [args...]', options: { cwd: { type: 'string' }, env: { type: 'string', multiple: true }, timeout: { type: 'string' }, 'undo-point': { type: 'boolean' } }, command: true, maxArgs: Infinity },
  cp: { run: copy, usage: 'cp [-r] <src> <dst> [-q]  copy a file (-r: a folder); one side is <vm>:<path>', options: { quiet: { type: 'boolean', short: 'q' }, recursive: { type: 'boolean', short: 'r' } }, maxArgs: 2 },
  attach: { run: sessions.attach, usage: 'attach <name> <id>      pick up a session a save cut off or a detach (Ctrl-C twice) left', maxArgs: 2 },
  shell: { run: sessions.shell, usage: 'shell <name> [-- <program> [args...]]   an interactive terminal', options: { cwd: { type: 'string' }, env: { type: 'string', multiple: true } }, command: true },
  pull: { run: pullCommand, usage: 'pull <name> <guest-folder> [host-folder] [--allow=PATH]... [--json] [--max-file-size=1G] [--max-total=8G] [--max-files=50000] [--min-free=1G]', options: PULL_OPTIONS, maxArgs: 3 },
  console: { run: serialConsole, usage: 'console <name>          the serial console (ttyS0), live from boot; Ctrl-] detaches' },
  sync: { run: sync, usage: 'sync <name> [dir] [--to PATH] [--ignore PAT]... | sync list [name] [--json] | sync stop <name> [id|dir]   keep a folder synced into the VM', options: { to: { type: 'string' }, ignore: { type: 'string', multiple: true }, 'no-gitignore': { type: 'boolean' }, 'no-wait': { type: 'boolean' }, json: { type: 'boolean' } }, maxArgs: 3 },
  port: { run: port, usage: PORT_USAGE, options: { address: { type: 'string' }, json: { type: 'boolean' } }, maxArgs: 3 },
  checkpoint: { run: checkpoint, usage: 'checkpoint create|list|apply|rename|delete <name> [checkpoint] [new name] [--json] [--discard-current]', options: { json: { type: 'boolean' }, 'discard-current': { type: 'boolean' } }, maxArgs: 4 },
  clone: { run: clone, usage: 'clone <name> <new name> [--checkpoint NAME] [--full] [--json]   linked (ms) unless --full; from a checkpoint', options: { checkpoint: { type: 'string' }, full: { type: 'boolean' }, json: { type: 'boolean' } }, maxArgs: 2 },
  undo: { run: undo, usage: 'undo <name>              back to the last undo point (exec --undo-point)' },
  export: { run: exportCommand, usage: 'export <name> <file|->   the VM as one archive: disks, checkpoints, saved state (a running VM: through a checkpoint)', maxArgs: 2 },
  import: { run: importCommand, usage: 'import <file|-> [--name <new name>]   a new VM from an archive', options: { name: { type: 'string' } } },
  compact: { run: compact, usage: 'compact <name> [--json]  give back host space the disk no longer uses (fstrim when running, a rewrite when stopped)', options: { json: { type: 'boolean' } } },
  image: { run: imageCommand, usage: 'image build | image template | image prune [--dry-run] [--json]   build the base image; build the saved VM new VMs start from; remove images nothing uses', options: { 'dry-run': { type: 'boolean' }, json: { type: 'boolean' } } },
  service: { run: serviceCommand, usage: 'service status|stop       the background service (VMs keep running when it stops)' },
};

const ALIASES: Record<string, string> = { ls: 'list', remove: 'rm', delete: 'rm', ps: 'list' };

async function imageCommand(ctx: CommandContext): Promise<number> {
  const action = ctx.positionals[0] ?? 'build';
  if (action === 'prune') return imagePrune(ctx);
  if (action === 'template') return templateCommand(ctx);
  if (action !== 'build') unknownImageAction(action);
  const bar = new ProgressBar('Base image');
  let image;
  try {
    image = await (await ctx.client()).ensureImage((s, t, m) => bar.update(s, t, m));
  } finally {
    bar.done();
  }
  ctx.out(`Base image ${image.hash.slice(0, 16)}: ${image.disk}`);
  return 0;
}

/** `image template`: builds (or finds) the template VMs of the default configuration start from (instant create). */
async function templateCommand(ctx: CommandContext): Promise<number> {
  const bar = new ProgressBar('Template');
  let t;
  try {
    t = await (await ctx.client()).ensureTemplate((s, n, m) => bar.update(s, n, m));
  } finally {
    bar.done();
  }
  if (!t) throw new SandboxError(ErrorCode.BootFailed, 'building the template failed; see the service log (`sandboxvm service status` names it); new VMs boot meanwhile');
  ctx.out(`Template ${t.dir}: new VMs of the default configuration start from it.`);
  return 0;
}

async function serviceCommand(ctx: CommandContext): Promise<number> {
  const action = ctx.positionals[0] ?? 'status';
  if (action === 'stop') {
    const client = await ServiceClient.connect({ autoStart: false, checkVersion: false }).catch(() => undefined);
    if (!client) {
      ctx.out('The service is not running.');
      return 0;
    }
    await client.shutdownService();
    client.dispose();
    ctx.out('The service stopped; running VMs keep running.');
    return 0;
  }
  if (action === 'status') {
    const client = await ServiceClient.connect({ autoStart: false, checkVersion: false }).catch(() => undefined);
    if (!client) {
      ctx.out('The service is not running.');
      return 3;
    }
    const info = await client.serviceInfo();
    client.dispose();
    ctx.out(`The service is running: pid ${info.pid}, version ${info.version} (protocol ${info.protocol ?? 0}), data in ${info.home}`);
    return 0;
  }
  throw new SandboxError(ErrorCode.BadArgument, `unknown service action ${action}: use status or stop`);
}

function usage(): string {
  return ['Usage: sandboxvm <command> [options]', '', ...Object.values(COMMANDS).map((c) => `  sandboxvm ${c.usage}`)].join('\n');
}

/** node:util's parseArgs messages, said for a user of this command. */
function optionError(err: Error, name: string, command: Command, args: string[]): string {
  const code = (err as NodeJS.ErrnoException).code;
  const option = /'(-{1,2}[^' ]+)/.exec(err.message)?.[1];
  if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION' && option) {
    const known = Object.keys(command.options ?? {}).map((o) => `--${o}`);
    const vm = args[0] && !args[0].startsWith('-') ? args[0] : '<name>';
    const line = vm === '<name>' ? '<command> [args...]' : args.slice(1).join(' ');
    const hint = command.command ? `; the command goes after \`--\`: sandboxvm ${name} ${vm} -- ${line}` : '';
    return `${name} has no option ${option}${known.length ? ` (it takes ${known.join(', ')})` : ''}${hint}`;
  }
  if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE' && option) return `${option} needs a value`;
  return err.message;
}

async function main(argv: string[]): Promise<number> {
  const [first, ...args] = argv;
  if (!first || first === '-h' || first === '--help' || first === 'help') {
    process.stdout.write(usage() + '\n');
    return first ? 0 : 2;
  }
  const name = ALIASES[first] ?? first;
  const command = COMMANDS[name];
  if (!command) {
    process.stderr.write(`sandboxvm: unknown command ${JSON.stringify(first)}\n\n${usage()}\n`);
    return 2;
  }
  const dashdash = args.indexOf('--');
  const own = dashdash >= 0 ? args.slice(0, dashdash) : args;
  const after = dashdash >= 0 ? args.slice(dashdash + 1) : [];
  let parsed;
  try {
    parsed = parseArgs({ args: own, options: command.options ?? {}, allowPositionals: true, strict: true });
  } catch (err) {
    process.stderr.write(`sandboxvm: ${optionError(err as Error, name, command, own)}\nusage: sandboxvm ${command.usage}\n`);
    return 2;
  }
  // `rm -- name`: after `--` come arguments, never options (as with rm(1)).
  const positionals = command.command ? parsed.positionals : [...parsed.positionals, ...after];
  const maxArgs = command.maxArgs ?? 1;
  if (positionals.length > maxArgs) {
    const extra = positionals.slice(maxArgs).map((a) => JSON.stringify(a)).join(' ');
    const shape = command.usage.split(/\s+/).slice(1).filter((w) => !w.startsWith('[')).slice(0, maxArgs).join(' ');
    const takes = maxArgs === 0 ? 'no arguments' : `${maxArgs === 1 ? 'one argument' : `${maxArgs} arguments`} (${shape})`;
    process.stderr.write(`sandboxvm: ${name} takes ${takes}; unexpected ${extra}\nusage: sandboxvm ${command.usage}\n`);
    return 2;
  }
  const ctx = new CommandContext(name, positionals, parsed.values as Record<string, string | boolean | string[] | undefined>, command.command ? after : []);
  try {
    return await command.run(ctx);
  } catch (err) {
    const e = asSandboxError(err);
    process.stderr.write(`sandboxvm: ${e.message}\n`);
    if (e.code === ErrorCode.Internal && process.env.SANDBOXVM_DEBUG) process.stderr.write(`${(err as Error).stack}\n`);
    return 1;
  } finally {
    await ctx.dispose();
  }
}

/** Resolves once everything written to `stream` so far has reached the OS (pipes are asynchronous). */
function flushed(stream: NodeJS.WriteStream): Promise<void> {
  return new Promise((resolve) => {
    if (stream.destroyed || !stream.writable) return resolve();
    stream.write('', () => resolve());
  });
}

installBrokenPipeHandler();
main(process.argv.slice(2)).then(
  async (code) => {
    process.exitCode = code;
    // Every byte of output first (a session's last output may still be queued for a pipe), then
    // don't wait for stray handles (a watch, a half-closed socket) once the answer is out.
    await Promise.all([flushed(process.stdout), flushed(process.stderr)]);
    setImmediate(() => process.exit(code));
  },
  (err) => {
    process.stderr.write(`sandboxvm: ${(err as Error).stack ?? err}\n`);
    process.exit(1);
  },
);
