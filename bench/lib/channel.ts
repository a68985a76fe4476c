/**
 * The host end of the agent channel, bare: frames in and out over the socket QEMU inherited, with
 * no worker in between. Used by peers to see when the guest agent answers.
 */
import { randomUUID } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { FrameDecoder, FrameType, encodeControl, type Frame } from '../../runtime/protocol/frames';
import { PROTOCOL_VERSION, parseAgentMessage, type AgentHello } from '../../runtime/protocol/messages';

/** How often the hello is repeated until answered: the worker's own interval (agentLink.ts). */
export const HELLO_RETRY_MS = 250;

export class RawChannel {
  /** Resync mode, like the worker before its handshake: a restored guest may send a frame's tail first. */
  private readonly decoder = new FrameDecoder(undefined, true);
  private readonly listeners = new Set<(frame: Frame) => void>();

  constructor(readonly socket: Duplex) {
    socket.on('data', (chunk: Buffer) => this.decoder.push(chunk, (f) => this.listeners.forEach((l) => l(f))));
    socket.on('error', () => undefined);
  }

  onFrame(listener: (frame: Frame) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  send(frame: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(frame);
  }

  /**
   * Sends a hello with a new epoch every HELLO_RETRY_MS until the agent answers it (an answer to
   * another epoch is ignored), as the worker does. Rejects when `abort` settles first.
   */
  greet(abort: Promise<never>): Promise<AgentHello> {
    const epoch = `bench-${randomUUID()}`;
    let timer: NodeJS.Timeout | undefined;
    let off = () => {};
    const answered = new Promise<AgentHello>((resolve) => {
      off = this.onFrame((f) => {
        if (f.type !== FrameType.Control || f.session !== 0) return;
        const m = parseAgentMessage(f.payload);
        if (typeof m !== 'string' && m.t === 'hello' && m.epoch === epoch) resolve(m);
      });
      const send = () => this.send(encodeControl(0, { t: 'hello', version: PROTOCOL_VERSION, epoch, time: Date.now() }));
      send();
      timer = setInterval(send, HELLO_RETRY_MS);
    });
    return Promise.race([answered, abort]).finally(() => {
      clearInterval(timer);
      off();
    });
  }
}
