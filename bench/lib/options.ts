/** What bench/run.ts passes to every benchmark module, and what a module exports. */

export interface BenchOptions {
  /** Samples per metric (--runs N). */
  runs: number;
}

export interface BenchModule {
  /** One line for the usage text. */
  summary: string;
  run(options: BenchOptions): Promise<void>;
}
