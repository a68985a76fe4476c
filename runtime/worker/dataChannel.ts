/**
 * A client's data channel to the worker: a second connection to worker.sock that opens with a
 * frame (magic 'SV') where JSON-RPC would send "Content-Length". It carries the bytes and events of
 * the sessions its client opened with `dataChannel: true`, in the channel's own frames
 * (protocol/frames.ts), so keystrokes and file contents cost no JSON and no base64:
 *
 *   client -> worker  CONTROL(0) {t:'attach', token}  first and once; the token from session.dataToken
 *                     DATA(id, stdin)       input; answered by WINDOW(id, stdin, n) once it is on its
 *                                           way to the guest (what resolves the client's write)
 *                     WINDOW(id, out|err)   output consumed (the client's ack)
 *                     EOF(id, stdin)
 *                     CONTROL(id) {t:'release'}  the client has the session's exit: the guest may
 *                                           forget it (it keeps ended sessions for a resume)
 *   worker -> client  CONTROL(0) {t:'attached'}
 *                     CONTROL(id) {t:'started',pid} | {t:'event',kind,path} | {t:'exit',code,signal,error}
 *                                 | {t:'writeFailed', bytes, message}
 *                     DATA(id, out|err), EOF(id, out|err), WINDOW(id, stdin, n)
 *
 * Events and bytes of one session travel on this one connection, so their order is kept. The
 * client is local and owner-only (the socket is 0600), but its frames are checked all the same: a
 * malformed frame closes the channel.
 */
import type * as net from 'node:net';
import { FrameDecoder, FrameType, ProtocolError, StreamId, encodeControl, encodeFrame, encodeWindow, type Frame } from '../protocol/frames';

export interface DataChannelSessions {
  /** Input for a session of this client; resolves once it is on its way to the guest. */
  write(id: number, data: Buffer): Promise<void>;
  ack(id: number, stream: StreamId, bytes: number): void;
  eof(id: number): void;
  /** The client has the exit of session `id` (one of its own). */
  release(id: number): void;
}

export class DataChannel {
  private readonly decoder = new FrameDecoder();
  private sessions?: DataChannelSessions;
  private closed = false;
  private readonly closeListeners: (() => void)[] = [];

  /**
   * @param attach resolves a token to the sessions of the RPC connection that asked for it, or
   *   undefined when the token is unknown (the channel is then closed)
   */
  constructor(
    private readonly socket: net.Socket,
    private readonly attach: (token: string, channel: DataChannel) => DataChannelSessions | undefined,
    private readonly log: (m: string) => void,
  ) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      for (const l of this.closeListeners) l();
    });
  }

  onClose(listener: () => void): void {
    this.closeListeners.push(listener);
  }

  /**
   * Ends the channel once what was written has been handed to the OS (the worker is exiting: the
   * client must still get the output the guest was told it has). Resolves then, or on close.
   */
  end(): Promise<void> {
    if (this.closed || this.socket.destroyed) return Promise.resolve();
    return new Promise((resolve) => {
      this.socket.once('close', () => resolve());
      this.socket.end(() => resolve());
    });
  }

  receive(chunk: Buffer): void {
    try {
      this.decoder.push(chunk, (frame) => this.onFrame(frame));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.fail(`data channel: ${err.message}`);
    }
  }

  private onFrame(frame: Frame): void {
    if (!this.sessions) {
      let token: unknown;
      try {
        token = frame.type === FrameType.Control && frame.session === 0 ? JSON.parse(frame.payload.toString('utf8'))?.token : undefined;
      } catch {
        token = undefined;
      }
      const sessions = typeof token === 'string' ? this.attach(token, this) : undefined;
      if (!sessions) return this.fail('data channel: the first frame must attach with a valid token');
      this.sessions = sessions;
      this.send(encodeControl(0, { t: 'attached' }));
      return;
    }
    const id = frame.session;
    switch (frame.type) {
      case FrameType.Data:
        if (frame.stream !== StreamId.Stdin) return this.fail('data channel: input on an output stream');
        this.sessions.write(id, frame.payload).then(
          () => this.send(encodeWindow(id, StreamId.Stdin, frame.payload.length)),
          (err: Error) => this.control(id, { t: 'writeFailed', bytes: frame.payload.length, message: err.message }),
        );
        return;
      case FrameType.Window:
        if (frame.stream === StreamId.Stdin) return this.fail('data channel: credit on the input stream');
        return this.sessions.ack(id, frame.stream, frame.payload.readUInt32BE(0));
      case FrameType.Eof:
        return this.sessions.eof(id);
      default: {
        let message: unknown;
        try {
          message = JSON.parse(frame.payload.toString('utf8'));
        } catch {
          message = undefined;
        }
        if ((message as { t?: unknown } | undefined)?.t === 'release') return this.sessions.release(id);
        return this.fail('data channel: unexpected control frame');
      }
    }
  }

  control(id: number, message: object): void {
    this.send(encodeControl(id, message));
  }

  data(id: number, stream: StreamId, data: Buffer): void {
    this.send(encodeFrame(FrameType.Data, id, data, stream));
  }

  eof(id: number, stream: StreamId): void {
    this.send(encodeFrame(FrameType.Eof, id, undefined, stream));
  }

  private send(frame: Buffer): void {
    if (!this.closed && !this.socket.destroyed) this.socket.write(frame);
  }

  private fail(why: string): void {
    this.log(why);
    this.closed = true;
    this.socket.destroy();
  }
}

/** True when a connection's first bytes are a frame (a data channel), not JSON-RPC. */
export function looksLikeFrame(chunk: Buffer): boolean {
  return chunk.length >= 2 && chunk[0] === 0x53 && chunk[1] === 0x56;
}
