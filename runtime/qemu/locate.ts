/** Finds the QEMU binaries and checks they are new enough. */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ErrorCode, SandboxError } from '../common/errors';

export const MIN_QEMU: [number, number] = [7, 0];
/** The command that installs QEMU on Debian and Ubuntu (welcome views show it as it is). */
export const QEMU_INSTALL_COMMAND = 'sudo apt-get install qemu-system-x86 qemu-utils';
const INSTALL_HINT = `install it with: ${QEMU_INSTALL_COMMAND} (or set SANDBOXVM_QEMU to its path)`;

export interface QemuInstall {
  system: string;
  img: string;
  version: string;
}

/** Parses `qemu-system-x86_64 --version` output; returns undefined when it has no version. */
export function parseQemuVersion(output: string): [number, number, number] | undefined {
  const m = /version (\d+)\.(\d+)(?:\.(\d+))?/.exec(output);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

export function findOnPath(name: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  for (const dir of (env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

let cached: Promise<QemuInstall> | undefined;

/** Locates qemu-system-x86_64 and qemu-img (SANDBOXVM_QEMU overrides the former). Cached per process. */
export function locateQemu(env: NodeJS.ProcessEnv = process.env): Promise<QemuInstall> {
  if (env === process.env && cached) return cached;
  const p = locate(env);
  if (env === process.env) {
    cached = p;
    p.catch(() => {
      if (cached === p) cached = undefined; // a failure is not remembered: the user may install QEMU
    });
  }
  return p;
}

async function locate(env: NodeJS.ProcessEnv): Promise<QemuInstall> {
  const system = env.SANDBOXVM_QEMU || findOnPath('qemu-system-x86_64', env);
  if (!system || !fs.existsSync(system)) {
    throw new SandboxError(ErrorCode.QemuMissing, `QEMU was not found (${system ?? 'qemu-system-x86_64 is not on PATH'}); ${INSTALL_HINT}`);
  }
  const img = env.SANDBOXVM_QEMU_IMG || findOnPath('qemu-img', env);
  if (!img) throw new SandboxError(ErrorCode.QemuMissing, `qemu-img was not found on PATH; ${INSTALL_HINT}`);
  const output = await new Promise<string>((resolve, reject) =>
    execFile(system, ['--version'], { timeout: 10_000 }, (err, stdout) => (err ? reject(err) : resolve(stdout))),
  ).catch((err: Error) => {
    throw new SandboxError(ErrorCode.QemuMissing, `${system} does not run (${err.message}); ${INSTALL_HINT}`);
  });
  const version = parseQemuVersion(output);
  if (!version) throw new SandboxError(ErrorCode.QemuMissing, `${system} printed no version; ${INSTALL_HINT}`);
  if (version[0] < MIN_QEMU[0] || (version[0] === MIN_QEMU[0] && version[1] < MIN_QEMU[1])) {
    throw new SandboxError(ErrorCode.QemuTooOld, `QEMU ${version.join('.')} at ${system} is too old: ${MIN_QEMU.join('.')} or newer is needed; ${INSTALL_HINT}`);
  }
  return { system, img, version: version.join('.') };
}
