/**
 * A minimal emitter with VS Code's event shape (`event(listener) -> { dispose }`), so the model can
 * run and be tested in plain Node while the views subscribe to it like to any vscode.Event.
 */
export interface Disposable {
  dispose(): void;
}
export type Event<T> = (listener: (e: T) => void) => Disposable;

export class Emitter<T> {
  private listeners = new Set<(e: T) => void>();

  /** Subscribe; the returned disposable unsubscribes (idempotent). */
  readonly event: Event<T> = (listener) => {
    const wrapped = (e: T) => listener(e);
    this.listeners.add(wrapped);
    return { dispose: () => void this.listeners.delete(wrapped) };
  };

  get listenerCount(): number {
    return this.listeners.size;
  }

  /** Calls every listener; one that throws does not keep the others from hearing the event. */
  fire(e: T): void {
    for (const l of [...this.listeners]) {
      try {
        l(e);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  dispose(): void {
    this.listeners.clear();
  }
}
