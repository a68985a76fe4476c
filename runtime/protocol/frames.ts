/**
 * The channel's framing: one definition, imported by the worker (host end) and the guest agent.
 *
 * A frame is a 12-byte header followed by its payload:
 *
 *   offset 0  u16  magic 0x5356 ('SV'): lets a reader that lost its place find the next frame
 *   offset 2  u8   type (FrameType)
 *   offset 3  u8   stream: 0 stdin, 1 stdout, 2 stderr for DATA / WINDOW / EOF; 0 otherwise
 *   offset 4  u32  session id (big endian); 0 is the channel itself
 *   offset 8  u32  payload length (big endian), at most MAX_PAYLOAD
 *
 * CONTROL payloads are UTF-8 JSON objects (see messages.ts); DATA payloads are raw bytes; WINDOW
 * payloads are one u32, the number of bytes the receiver grants the sender on that stream; EOF has
 * no payload.
 */

export const MAGIC = 0x5356;
export const HEADER_SIZE = 12;
/** The largest payload either side may send. The host rejects anything bigger. */
export const MAX_PAYLOAD = 64 * 1024;
/** The guest writes at most 32 KiB per write() (virtio-serial's limit): header and payload together. */
export const GUEST_WRITE_MAX = 32 * 1024;
export const GUEST_DATA_CHUNK = GUEST_WRITE_MAX - HEADER_SIZE;

export const enum FrameType {
  Control = 1,
  Data = 2,
  Window = 3,
  Eof = 4,
}

export const enum StreamId {
  Stdin = 0,
  Stdout = 1,
  Stderr = 2,
}

export interface Frame {
  type: FrameType;
  stream: number;
  session: number;
  payload: Buffer;
}

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

export function encodeFrame(type: FrameType, session: number, payload: Buffer = EMPTY, stream = 0): Buffer {
  if (payload.length > MAX_PAYLOAD) throw new RangeError(`frame payload of ${payload.length} bytes exceeds ${MAX_PAYLOAD}`);
  const frame = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeHeader(frame, 0, type, session, payload.length, stream);
  payload.copy(frame, HEADER_SIZE);
  return frame;
}

export function writeHeader(target: Buffer, offset: number, type: FrameType, session: number, length: number, stream = 0): void {
  target.writeUInt16BE(MAGIC, offset);
  target.writeUInt8(type, offset + 2);
  target.writeUInt8(stream, offset + 3);
  target.writeUInt32BE(session >>> 0, offset + 4);
  target.writeUInt32BE(length, offset + 8);
}

export function encodeControl(session: number, message: object): Buffer {
  return encodeFrame(FrameType.Control, session, Buffer.from(JSON.stringify(message), 'utf8'));
}

export function encodeWindow(session: number, stream: number, credit: number): Buffer {
  const payload = Buffer.allocUnsafe(4);
  payload.writeUInt32BE(credit >>> 0, 0);
  return encodeFrame(FrameType.Window, session, payload, stream);
}

const EMPTY = Buffer.alloc(0);

/**
 * Splits a byte stream into frames. Holds at most one partial frame (HEADER_SIZE + maxPayload
 * bytes), so memory stays bounded whatever the peer sends. `push` throws ProtocolError on a bad
 * magic, an unknown type, a stream out of range or an oversize length; after that the decoder is
 * unusable until `reset()`.
 */
export class FrameDecoder {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private failed = false;

  /**
   * @param resync when true, a bad header is not an error: the decoder skips to the next magic.
   * The guest uses this (a restored VM may see the tail of a frame a previous host end sent); the
   * host uses it only until the handshake completes.
   */
  constructor(private readonly maxPayload = MAX_PAYLOAD, public resync = false) {}

  /** Frames skipped over while resynchronising. */
  skippedBytes = 0;

  /** Bytes held waiting for the rest of a frame. */
  get buffered(): number {
    return this.pendingBytes;
  }

  reset(): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.failed = false;
  }

  push(chunk: Buffer, onFrame: (frame: Frame) => void): void {
    if (this.failed) throw new ProtocolError('decoder used after a protocol error');
    if (chunk.length === 0) return;
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    // Chunks are only joined once a whole frame is there: a 64 KiB frame arriving in 4 KiB reads
    // (virtio-serial's unit) is copied once, not sixteen times.
    for (;;) {
      if (this.pendingBytes < HEADER_SIZE) return;
      const head = this.contiguous(HEADER_SIZE);
      if (this.resync) {
        if (headerProblem(head, 0, this.maxPayload) !== undefined) {
          this.skipToMagic();
          continue;
        }
      } else {
        this.validateHeader(head, 0);
      }
      const total = HEADER_SIZE + head.readUInt32BE(8);
      if (this.pendingBytes < total) return;
      const frame = this.take(total);
      onFrame({ type: frame[2] as FrameType, stream: frame[3], session: frame.readUInt32BE(4), payload: frame.subarray(HEADER_SIZE) });
    }
  }

  /** Makes the first `n` pending bytes one buffer (joining chunks as needed) and returns it. */
  private contiguous(n: number): Buffer {
    if (this.pending[0].length < n) {
      const joined = Buffer.concat(this.pending, this.pendingBytes);
      this.pending = [joined];
    }
    return this.pending[0].subarray(0, n);
  }

  /** Removes and returns the first `n` pending bytes. */
  private take(n: number): Buffer {
    const first = this.pending[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.pending.shift();
      else this.pending[0] = first.subarray(n);
    } else {
      out = Buffer.allocUnsafe(n);
      let filled = 0;
      while (filled < n) {
        const c = this.pending[0];
        const k = Math.min(c.length, n - filled);
        c.copy(out, filled, 0, k);
        filled += k;
        if (k === c.length) this.pending.shift();
        else this.pending[0] = c.subarray(k);
      }
    }
    this.pendingBytes -= n;
    if (this.pending.length === 1 && this.pending[0].length < 4096 && this.pending[0].byteOffset > 0) {
      // Copy a small remainder so it does not pin a large chunk.
      this.pending[0] = Buffer.from(this.pending[0]);
    }
    return out;
  }

  /** Resync mode: drops bytes up to the next magic after the current position. */
  private skipToMagic(): void {
    const all = this.contiguous(this.pendingBytes);
    const next = all.indexOf(MAGIC_BYTES, 1);
    const skip = next < 0 ? all.length - 1 : next;
    this.skippedBytes += skip;
    this.pending = [Buffer.from(all.subarray(skip))];
    this.pendingBytes -= skip;
  }

  private validateHeader(buf: Buffer, offset: number): number {
    const why = headerProblem(buf, offset, this.maxPayload);
    if (why !== undefined) {
      this.failed = true;
      throw new ProtocolError(why);
    }
    return buf.readUInt32BE(offset + 8);
  }
}

const MAGIC_BYTES = Buffer.from([MAGIC >> 8, MAGIC & 0xff]);

/** Why the header at `offset` is invalid, or undefined when it is valid. */
function headerProblem(buf: Buffer, offset: number, maxPayload: number): string | undefined {
  const magic = buf.readUInt16BE(offset);
  if (magic !== MAGIC) return `bad frame magic 0x${magic.toString(16)}`;
  const type = buf[offset + 2];
  if (type < FrameType.Control || type > FrameType.Eof) return `unknown frame type ${type}`;
  const stream = buf[offset + 3];
  if (stream > StreamId.Stderr) return `stream ${stream} out of range`;
  const length = buf.readUInt32BE(offset + 8);
  if (length > maxPayload) return `frame payload of ${length} bytes exceeds the limit of ${maxPayload}`;
  if (type === FrameType.Window && length !== 4) return `window frame with a ${length}-byte payload`;
  if (type === FrameType.Eof && length !== 0) return `eof frame with a ${length}-byte payload`;
  return undefined;
}
