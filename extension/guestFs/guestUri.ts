/**
 * The `sandboxvm` scheme: `sandboxvm://<vm name>/<absolute guest path>`, e.g.
 * `sandboxvm://dev/root/project/main.c`. The authority is the VM's name (a DNS label, as
 * runtime/common/names.ts checks, so it survives URI normalisation unchanged: lowercase, no port,
 * no user); the path is the guest's absolute path, as `ls` would print it. One URI names one file
 * in one VM whatever window or workspace holds it, and the Explorer's root label reads
 * `<vm>:/root/project` (package.json's resourceLabelFormatters).
 */
import * as path from 'node:path';
import * as vscode from 'vscode';
import { validateVmName } from '../../runtime/common/names';
import { MAX_GUEST_PATH } from './guestNames';

export const GUEST_SCHEME = 'sandboxvm';

export interface GuestLocation {
  vm: string;
  /** Absolute and normalised: no `.`/`..` segments, no trailing slash except for `/` itself. */
  path: string;
}

/** The URI of `guestPath` in `vm`. Throws on a bad VM name or path (see parseGuestUri). */
export function guestUri(vm: string, guestPath: string): vscode.Uri {
  const at = checkLocation(vm, guestPath);
  return vscode.Uri.from({ scheme: GUEST_SCHEME, authority: at.vm, path: at.path });
}

/** The VM and guest path a `sandboxvm:` URI names; throws FileSystemError.FileNotFound for anything else. */
export function parseGuestUri(uri: vscode.Uri): GuestLocation {
  if (uri.scheme !== GUEST_SCHEME) throw vscode.FileSystemError.FileNotFound(uri);
  try {
    return checkLocation(uri.authority, uri.path || '/');
  } catch (err) {
    throw vscode.FileSystemError.FileNotFound(`${uri.toString(true)} is not a guest path: ${(err as Error).message}`);
  }
}

function checkLocation(vm: string, guestPath: string): GuestLocation {
  validateVmName(vm);
  if (!guestPath.startsWith('/')) throw new Error('the path must be absolute');
  if (guestPath.includes('\0')) throw new Error('the path has a NUL character');
  const normal = path.posix.normalize(guestPath);
  const trimmed = normal.length > 1 ? normal.replace(/\/+$/, '') : normal;
  if (trimmed.length > MAX_GUEST_PATH) throw new Error(`the path is longer than ${MAX_GUEST_PATH} characters`);
  return { vm, path: trimmed };
}
