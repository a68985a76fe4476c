/**
 * Operations on one key never interleave; different keys run in parallel (VS Code's SequencerByKey).
 * A failed operation does not block the ones queued behind it.
 */
export class SequencerByKey<K> {
  private readonly tails = new Map<K, Promise<unknown>>();

  queue<T>(key: K, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const run = previous.then(task, task);
    const tail = run.catch(() => undefined);
    this.tails.set(key, tail);
    tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return run;
  }

  isBusy(key: K): boolean {
    return this.tails.has(key);
  }
}
