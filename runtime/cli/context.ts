/** What a CLI command gets: its parsed arguments and a lazily connected service client. */
import { ErrorCode, SandboxError } from '../common/errors';
import { validateVmName } from '../common/names';
import { ServiceClient } from '../client/serviceClient';

export class CommandContext {
  private connected?: Promise<ServiceClient>;

  constructor(
    readonly command: string,
    readonly positionals: string[],
    readonly options: Record<string, string | boolean | string[] | undefined>,
    /** Arguments after `--` (exec's command). */
    readonly rest: string[],
  ) {}

  /** The VM name argument, validated. */
  name(): string {
    const name = this.positionals[0];
    if (name === undefined) throw new SandboxError(ErrorCode.BadArgument, `${this.command} needs a VM name: sandboxvm ${this.command} <name>`);
    return validateVmName(name);
  }

  client(): Promise<ServiceClient> {
    this.connected ??= ServiceClient.connect().then((client) => {
      const old = client.replacedService;
      if (old) process.stderr.write(`sandboxvm: replaced the running service (version ${old.version}, older than this CLI); running VMs carry on\n`);
      return client;
    });
    return this.connected;
  }

  out(line: string): void {
    process.stdout.write(line + '\n');
  }

  async dispose(): Promise<void> {
    if (this.connected) (await this.connected.catch(() => undefined))?.dispose();
  }
}
