/**
 * What a benchmark prints. stdout carries only results, one JSON object per line with exactly the
 * keys of ResultLine (in that order); everything for humans goes to stderr.
 */
import { summarize } from './stats';

export interface Result {
  bench: string;
  metric: string;
  unit: string;
  value: number;
  /** What the value is compared with (the baseline a user could get without this project). */
  peer: string;
  peer_value: number;
}

export interface ResultLine extends Result {
  /** value / peer_value: below 1 means this project is faster (for time metrics). */
  ratio: number;
}

export function resultLine(r: Result): ResultLine {
  return {
    bench: r.bench,
    metric: r.metric,
    unit: r.unit,
    value: round(r.value, 1),
    peer: r.peer,
    peer_value: round(r.peer_value, 1),
    ratio: round(r.value / r.peer_value, 3),
  };
}

export function emit(r: Result): void {
  process.stdout.write(JSON.stringify(resultLine(r)) + '\n');
}

const started = Date.now();

/** A progress line on stderr, prefixed with the seconds since the benchmark began. */
export function log(message: string): void {
  const t = ((Date.now() - started) / 1000).toFixed(1).padStart(6);
  process.stderr.write(`[bench ${t}s] ${message}\n`);
}

/** One stderr line describing a sample set: n, min, median, p99, max. */
export function describe(label: string, samples: readonly number[], unit = 'ms'): string {
  if (samples.length === 0) return `${label}: no samples`;
  const s = summarize(samples);
  // Sub-millisecond figures (round trips) keep two decimals; larger ones need none.
  const f = (x: number) => x.toFixed(s.median < 10 ? 2 : 0);
  return `${label}: n=${s.n} min ${f(s.min)} median ${f(s.median)} p99 ${f(s.p99)} max ${f(s.max)} ${unit}`;
}

export function round(x: number, digits: number): number {
  const k = 10 ** digits;
  return Math.round(x * k) / k;
}
