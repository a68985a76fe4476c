/**
 * The one error type of the runtime. Every failure a user can see carries a stable `code`, a short
 * message that says what happened and what to do (with a log path where there is one), and an
 * optional cause. Errors cross process boundaries (service <-> CLI, worker <-> service) through
 * `toWire` / `fromWire`, which keep code, message and hint.
 */
export const enum ErrorCode {
  UnknownVm = 'UnknownVm',
  UnknownCheckpoint = 'UnknownCheckpoint',
  BadName = 'BadName',
  DuplicateName = 'DuplicateName',
  WrongState = 'WrongState',
  QemuMissing = 'QemuMissing',
  QemuTooOld = 'QemuTooOld',
  ImageBuildFailed = 'ImageBuildFailed',
  DiskFull = 'DiskFull',
  BadArgument = 'BadArgument',
  BootFailed = 'BootFailed',
  AgentUnavailable = 'AgentUnavailable',
  Timeout = 'Timeout',
  ServiceUnavailable = 'ServiceUnavailable',
  WorkerLost = 'WorkerLost',
  ProtocolViolation = 'ProtocolViolation',
  Cancelled = 'Cancelled',
  Internal = 'Internal',
}

export interface WireError {
  code: ErrorCode;
  message: string;
}

export class SandboxError extends Error {
  constructor(readonly code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SandboxError';
  }

  toWire(): WireError {
    return { code: this.code, message: this.message };
  }

  static fromWire(wire: WireError): SandboxError {
    return new SandboxError(wire.code, wire.message);
  }
}

/** Wraps anything thrown into a SandboxError; ENOSPC becomes DiskFull with a hint. */
export function asSandboxError(err: unknown, context?: string): SandboxError {
  if (err instanceof SandboxError) return err;
  const e = err as NodeJS.ErrnoException | undefined;
  const prefix = context ? `${context}: ` : '';
  if (e?.code === 'ENOSPC') {
    return new SandboxError(ErrorCode.DiskFull, `${prefix}the disk is full (${e.path ?? 'no path'}); free some space and try again`, { cause: err });
  }
  return new SandboxError(ErrorCode.Internal, `${prefix}${e?.message ?? String(err)}`, { cause: err });
}
