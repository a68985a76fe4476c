/**
 * The private protocol between the agent (Node) and its relay (guest-agent/native/relay.c) on the
 * socketpair at fd 3. Frames are the channel's own; types 1..4 pass through to the port as they
 * are, and LOCAL frames (type 16, never valid on the port) carry:
 *
 *   agent -> relay (directives; the frame's session id names the session)
 *     SPAWN   u16 argc, u16 envc, cwd\0, argv\0 x argc, env\0 x envc: run an exec session; the relay
 *             owns its pipes and process and reports `started`, `exit` or `error` to the host itself
 *     ATTACH  u8 kind, i32 fdIn, i32 fdOut, i32 pid: take the agent's fds (pidfd_getfd) for a pty
 *             master, a file to read or a file to write; the agent keeps its copies until DONE
 *     SIGNAL  u8 signal number, to an exec session's process group
 *     CLOSE   end the session now (an exec is killed); answered with DONE(ECANCELED) except for exec
 *     FORGET  drop the session without a word (an exec's process group is killed)
 *     RESIZE  u16 cols, u16 rows: a pty's window size
 *     RESUME  u8 hasOffsets, u64 stdout, u64 stderr: a new host end takes an exec or pty session over;
 *             the relay answers `resumed` to the host and replays the output not acknowledged from
 *             those offsets (or from the last acknowledged byte), then EOFs and the end message
 *     CONNECT u16 port, address\0: a connect session's TCP connection, made by the relay (non-blocking):
 *             host EOF shuts its write side, its EOF is the host's EOF on stdout; DONE 0 once both
 *             directions ended, or the errno that failed the connect or broke the connection
 *   relay -> agent (notes)
 *     DONE    i32 errno: the session's streams are complete (0) or failed; the relay has let it go
 *     INHERIT u8 kind (1 pty, 4 exec), i32 pid: a session that outlived the previous agent process
 *             (sent to a restarted agent before anything else)
 *     CONNECTED  a connect session's connection is up (the agent reports `started`)
 *
 * The relay holds a *pending* session for every `open` it forwards (recognised by the payload
 * starting with {"t":"open"), keeping its input until the agent sends SPAWN, ATTACH or FORGET.
 */
import { HEADER_SIZE, writeHeader, type FrameType } from '../../runtime/protocol/frames';

export const LOCAL_FRAME = 16;

export const enum RelayOp {
  Spawn = 1,
  Attach = 2,
  Signal = 3,
  Close = 4,
  Forget = 5,
  Resize = 6,
  Resume = 7,
  Connect = 8,
  Done = 0x81,
  Inherit = 0x82,
  Connected = 0x83,
}

export const enum AttachKind {
  Pty = 1,
  Read = 2,
  Write = 3,
}

export function encodeLocal(session: number, payload: Buffer): Buffer {
  const frame = Buffer.allocUnsafe(HEADER_SIZE + payload.length);
  writeHeader(frame, 0, LOCAL_FRAME as FrameType, session, payload.length);
  payload.copy(frame, HEADER_SIZE);
  return frame;
}

/** SPAWN: strings may not contain NUL (they could not reach execve anyway). */
export function encodeSpawn(session: number, argv: string[], env: Record<string, string>, cwd: string): Buffer {
  const envList = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  for (const s of [cwd, ...argv, ...envList]) if (s.includes('\0')) throw new Error('arguments, environment and working directory may not contain NUL');
  if (argv.length === 0 || argv.length > 0xffff || envList.length > 0xffff) throw new Error('too many arguments or environment variables');
  const strings = Buffer.from([cwd, ...argv, ...envList].map((s) => `${s}\0`).join(''), 'utf8');
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(RelayOp.Spawn, 0);
  head.writeUInt16BE(argv.length, 1);
  head.writeUInt16BE(envList.length, 3);
  return encodeLocal(session, Buffer.concat([head, strings]));
}

/** CONNECT: `address` an IP literal (checked by the caller), `port` 1-65535. */
export function encodeConnect(session: number, address: string, port: number): Buffer {
  const text = Buffer.from(`${address}\0`, 'latin1');
  const p = Buffer.allocUnsafe(3 + text.length);
  p.writeUInt8(RelayOp.Connect, 0);
  p.writeUInt16BE(port, 1);
  text.copy(p, 3);
  return encodeLocal(session, p);
}

/** True when the payload is a CONNECTED note. */
export function isConnected(payload: Buffer): boolean {
  return payload.length === 1 && payload[0] === RelayOp.Connected;
}

export function encodeAttach(session: number, kind: AttachKind, fdIn: number, fdOut: number, pid = 0): Buffer {
  const p = Buffer.allocUnsafe(14);
  p.writeUInt8(RelayOp.Attach, 0);
  p.writeUInt8(kind, 1);
  p.writeInt32BE(fdIn, 2);
  p.writeInt32BE(fdOut, 6);
  p.writeInt32BE(pid, 10);
  return encodeLocal(session, p);
}

export function encodeResize(session: number, cols: number, rows: number): Buffer {
  const p = Buffer.allocUnsafe(5);
  p.writeUInt8(RelayOp.Resize, 0);
  p.writeUInt16BE(cols, 1);
  p.writeUInt16BE(rows, 3);
  return encodeLocal(session, p);
}

/** RESUME: `offsets` are the bytes of stdout and stderr the client already has. */
export function encodeResume(session: number, offsets?: readonly [number, number]): Buffer {
  const p = Buffer.alloc(18);
  p.writeUInt8(RelayOp.Resume, 0);
  if (offsets) {
    p.writeUInt8(1, 1);
    p.writeBigUInt64BE(BigInt(offsets[0]), 2);
    p.writeBigUInt64BE(BigInt(offsets[1]), 10);
  }
  return encodeLocal(session, p);
}

export function encodeOp(session: number, op: RelayOp.Close | RelayOp.Forget): Buffer {
  return encodeLocal(session, Buffer.from([op]));
}

export function encodeSignal(session: number, signal: number): Buffer {
  return encodeLocal(session, Buffer.from([RelayOp.Signal, signal & 0xff]));
}

/** An INHERIT note: the session's kind and process, or undefined when the payload is not one. */
export function parseInherit(payload: Buffer): { kind: 'pty' | 'exec'; pid: number } | undefined {
  if (payload.length !== 6 || payload[0] !== RelayOp.Inherit) return undefined;
  const kind = payload[1] === 1 ? 'pty' : payload[1] === 4 ? 'exec' : undefined;
  return kind ? { kind, pid: payload.readInt32BE(2) } : undefined;
}

/** A DONE note's errno, or undefined when the payload is not a DONE note. */
export function parseDone(payload: Buffer): number | undefined {
  return payload.length === 5 && payload[0] === RelayOp.Done ? payload.readInt32BE(1) : undefined;
}
