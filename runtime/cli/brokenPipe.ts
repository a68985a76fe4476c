/**
 * A reader of our output that went away (`sandboxvm exec vm -- cat big | head -c 100`): writing
 * then fails with EPIPE. Like ssh (killed by SIGPIPE), the CLI ends quietly with status 141
 * (128 + SIGPIPE); a command that has something to end first (exec: its guest process) registers
 * a handler and returns that status itself.
 */
export const BROKEN_PIPE_STATUS = 141;

let handler: (() => void) | undefined;

/** Routes the next broken pipe to `h` instead of exiting at once. Returns the undo. */
export function onBrokenPipe(h: () => void): () => void {
  handler = h;
  return () => {
    if (handler === h) handler = undefined;
  };
}

/** True once stdout or stderr has failed: writes to it are dropped. */
export function outputGone(stream: NodeJS.WriteStream): boolean {
  return stream.destroyed || stream.writableEnded;
}

/** Installs the error listeners on stdout and stderr (once, at start). */
export function installBrokenPipeHandler(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', () => {
      stream.destroy();
      if (handler) {
        const h = handler;
        handler = undefined;
        h();
      } else process.exit(BROKEN_PIPE_STATUS);
    });
  }
}

/** One wait for 'drain' per stream, shared by every write that found its buffer full. */
const draining = new WeakMap<NodeJS.WriteStream, Promise<void>>();

function drained(stream: NodeJS.WriteStream): Promise<void> {
  let wait = draining.get(stream);
  if (!wait) {
    wait = new Promise((resolve) => {
      const done = () => {
        stream.off('drain', done);
        stream.off('close', done);
        draining.delete(stream);
        resolve();
      };
      stream.on('drain', done);
      stream.on('close', done);
    });
    draining.set(stream, wait);
  }
  return wait;
}

/** Writes `data`, resolving once it is taken (or at once if the stream is gone), never rejecting. */
export function writeTo(stream: NodeJS.WriteStream, data: Buffer): Promise<void> {
  if (outputGone(stream)) return Promise.resolve();
  return stream.write(data) ? Promise.resolve() : drained(stream);
}
