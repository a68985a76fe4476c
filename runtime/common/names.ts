/** VM names: what a user may type, checked before anything touches the disk. */
import { ErrorCode, SandboxError } from './errors';

const NAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/** Throws BadName unless `name` is 1-63 lowercase letters, digits and inner dashes (a DNS label). */
export function validateVmName(name: unknown): string {
  if (typeof name !== 'string' || !NAME.test(name)) {
    const shown = typeof name === 'string' ? JSON.stringify(name.slice(0, 80)) : String(name);
    throw new SandboxError(
      ErrorCode.BadName,
      `invalid VM name ${shown}: use 1-63 lowercase letters, digits and dashes, starting and ending with a letter or digit (e.g. "dev")`,
    );
  }
  return name;
}
