/** Durations as the CLI takes them (`exec --timeout`). */
import { ErrorCode, SandboxError } from '../common/errors';

/** The longest timeout the worker accepts: 7 days. */
export const MAX_TIMEOUT_MS = 7 * 24 * 3600 * 1000;

const UNITS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const;

/**
 * "30s", "2m", "1.5h", "7d", "500ms", "10" (seconds) -> milliseconds (at least 1). Zero means no
 * timeout, as with coreutils' timeout: undefined, as when the option is absent. Throws
 * BadArgument, naming the limit, past MAX_TIMEOUT_MS.
 */
export function parseTimeout(value: unknown, option = '--timeout'): number | undefined {
  if (value === undefined) return undefined;
  const text = String(value).trim();
  const m = /^(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?$/.exec(text);
  if (!m) throw new SandboxError(ErrorCode.BadArgument, `invalid ${option} ${JSON.stringify(text)}: use a number with a unit, e.g. 30s, 5m, 2h, 500ms (0 for no timeout)`);
  const ms = Number(m[1]) * UNITS[(m[2] ?? 's') as keyof typeof UNITS];
  if (ms === 0) return undefined;
  if (ms > MAX_TIMEOUT_MS) throw new SandboxError(ErrorCode.BadArgument, `${option} ${text} is past the limit of 7 days; use 7d or less, or 0 for no timeout`);
  return Math.max(1, Math.round(ms));
}

/** 1500 -> "1.5 s", 90000 -> "1.5 min", 7200000 -> "2 h": for messages. */
export function formatDuration(ms: number): string {
  const fmt = (n: number) => String(Math.round(n * 10) / 10);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60_000) return `${fmt(ms / 1000)} s`;
  if (ms < 3_600_000) return `${fmt(ms / 60_000)} min`;
  if (ms < 86_400_000) return `${fmt(ms / 3_600_000)} h`;
  return `${fmt(ms / 86_400_000)} d`;
}
