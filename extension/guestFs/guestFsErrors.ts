/**
 * The agent's and the runtime's failures as the FileSystemError kinds VS Code acts on (the
 * Explorer, editors and `workspace.fs` callers tell "not found" from "exists" from "unavailable" by
 * `code`). The guest's reason is untrusted text: it is bounded and stripped of control characters.
 */
import * as vscode from 'vscode';
import { ErrorCode, SandboxError } from '../../runtime/common/errors';

/** The one sentence for a VM whose files cannot be reached because of its state. */
export function notRunningMessage(vm: string, state: string | undefined): string {
  switch (state) {
    case undefined:
      return `there is no sandbox VM ${vm}; create it, or remove this folder from the workspace`;
    case 'paused':
      return `sandbox VM ${vm} is paused; resume it to see its files`;
    case 'starting':
      return `sandbox VM ${vm} is starting; its files show once its agent answers`;
    case 'saved':
      return `sandbox VM ${vm} is saved; start it to see its files`;
    default:
      return `sandbox VM ${vm} is not running; start it to see its files`;
  }
}

/** Errors that mean "the guest cannot be reached now", not "the file is wrong". */
const UNREACHABLE = new Set<string>([ErrorCode.AgentUnavailable, ErrorCode.WorkerLost, ErrorCode.ServiceUnavailable, ErrorCode.WrongState, ErrorCode.Timeout, ErrorCode.UnknownVm]);

/** True when `err` says the VM (not the file) is out of reach. */
export function isUnreachable(err: unknown): boolean {
  if (err instanceof vscode.FileSystemError) return err.code === 'Unavailable';
  if (err instanceof SandboxError && UNREACHABLE.has(err.code)) return true;
  const message = String((err as Error)?.message ?? err);
  return /connection (to the VM )?(was )?(lost|closed|disposed)|ECONNREFUSED|ENOENT.*\.sock|socket hang up|is not running|guest agent is not (responding|connected)|session client was disposed/i.test(message);
}

/**
 * `err` (a failed guest call or transfer on `uri`) as a FileSystemError: FileNotFound, FileExists,
 * FileNotADirectory, FileIsADirectory, NoPermissions, Unavailable (with `unavailable`'s sentence),
 * else a plain FileSystemError with the guest's reason.
 */
export function toFileSystemError(err: unknown, uri: vscode.Uri, unavailable: () => string): vscode.FileSystemError {
  if (err instanceof vscode.FileSystemError) return err;
  if (isUnreachable(err)) return vscode.FileSystemError.Unavailable(unavailable());
  const reason = String((err as Error)?.message ?? err).replace(/[\x00-\x1f\x7f]/g, ' ').slice(0, 512);
  if (/\bENOENT\b|no such file or directory|no such directory/.test(reason)) return vscode.FileSystemError.FileNotFound(uri);
  if (/\bEEXIST\b|already exists/.test(reason)) return vscode.FileSystemError.FileExists(uri);
  if (/\bENOTDIR\b|is not a directory/.test(reason)) return vscode.FileSystemError.FileNotADirectory(uri);
  if (/\bEISDIR\b|is a directory/.test(reason)) return vscode.FileSystemError.FileIsADirectory(uri);
  if (/\bEACCES\b|\bEPERM\b|\bEROFS\b|permission denied|not permitted|read-only file system/.test(reason)) return vscode.FileSystemError.NoPermissions(`${uri.authority}:${uri.path}: ${reason}`);
  return new vscode.FileSystemError(`${uri.authority}:${uri.path}: ${reason}`);
}
