/**
 * A scripted guest for unit tests of the host end of the channel (AgentLink): a Duplex whose
 * host-written frames are parsed (to learn the handshake epoch and what the host sent) and into
 * which the test pushes whatever bytes a hostile guest might send.
 */
import { Duplex } from 'node:stream';
import { FrameType, encodeControl, type Frame } from '../../runtime/protocol/frames';
import { AgentLink } from '../../runtime/worker/agentLink';

export class FakeGuest {
  readonly socket: Duplex;
  readonly link: AgentLink;
  readonly logs: string[] = [];
  epoch = '';
  /** Control messages the host sent, newest last (bounded). */
  readonly fromHost: { session: number; message: any; text: string }[] = [];
  hostBytes = 0;
  /** Credit the host granted (WINDOW frames), in order. */
  readonly grants: { session: number; stream: number; bytes: number }[] = [];
  keepHostFrames = true;

  constructor() {
    this.socket = new Duplex({
      read() {},
      write: (chunk: Buffer, _enc, cb) => {
        this.hostBytes += chunk.length;
        if (chunk[2] === FrameType.Window) this.grants.push({ session: chunk.readUInt32BE(4), stream: chunk[3], bytes: chunk.readUInt32BE(12) });
        if (chunk[2] === FrameType.Control) {
          const text = chunk.subarray(12).toString();
          const message = JSON.parse(text);
          if (message.t === 'hello') this.epoch = message.epoch;
          if (this.keepHostFrames && this.fromHost.length < 10_000) this.fromHost.push({ session: chunk.readUInt32BE(4), message, text });
        }
        cb();
      },
    });
    this.link = new AgentLink(this.socket, (m) => {
      if (this.logs.length < 10_000) this.logs.push(m);
    });
  }

  push(buf: Buffer): void {
    this.socket.push(buf);
  }

  /** Answers the host's current greeting, as a well-behaved agent would. */
  hello(pid = 100): void {
    this.push(encodeControl(0, { t: 'hello', version: 1, epoch: this.epoch, agentVersion: 'fake', pid, hostname: 'fake', kernel: '6.1' }));
  }

  /** Lets queued stream events run. */
  async settle(): Promise<void> {
    await new Promise((r) => setImmediate(r));
  }

  dispose(): void {
    this.link.dispose();
    this.socket.destroy();
  }
}

export type { Frame };
