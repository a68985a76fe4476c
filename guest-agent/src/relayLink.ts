/**
 * The agent's end of the relay's socketpair (fd SANDBOXVM_RELAY_FD, set by relay.c, which runs the
 * agent as its child). The relay has already split the port's byte stream and checked each header;
 * it sends whole frames: the host's CONTROL frames, and LOCAL notes about its sessions.
 */
import * as net from 'node:net';
import { FrameType, HEADER_SIZE, MAGIC, MAX_PAYLOAD } from '../../runtime/protocol/frames';
import { LOCAL_FRAME } from './relayProtocol';
import { Agent } from './agent';

export function serveRelay(fd: number, log: (m: string) => void): void {
  const socket = new net.Socket({ fd, readable: true, writable: true });
  const agent = new Agent((frame) => socket.write(frame), log, { send: (frame) => socket.write(frame) });
  let pending: Buffer = Buffer.alloc(0);
  socket.on('data', (chunk: Buffer) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
    let at = 0;
    while (pending.length - at >= HEADER_SIZE) {
      const length = pending.readUInt32BE(at + 8);
      if (pending.readUInt16BE(at) !== MAGIC || length > MAX_PAYLOAD) {
        log('the relay sent a malformed frame; exiting');
        process.exit(70);
      }
      if (pending.length - at < HEADER_SIZE + length) break;
      const type = pending[at + 2];
      const session = pending.readUInt32BE(at + 4);
      const payload = pending.subarray(at + HEADER_SIZE, at + HEADER_SIZE + length);
      if (type === LOCAL_FRAME) agent.relayNote(session, payload);
      else agent.onFrame({ type: type as FrameType, stream: pending[at + 3], session, payload });
      at += HEADER_SIZE + length;
    }
    pending = at === pending.length ? Buffer.alloc(0) : pending.subarray(at);
  });
  // The relay is our parent and owns the port: without it there is nothing to serve.
  socket.on('close', () => {
    log('the relay closed its socket; exiting');
    // Not process.exit(): with a terminal's child alive, node-pty's exit watcher can hold the
    // process open. Our pty masters close with us, which hangs up their sessions.
    process.kill(process.pid, 'SIGKILL');
  });
  socket.on('error', (err) => log(`relay socket: ${err.message}`));
  log(`serving through the relay on fd ${fd}`);
}
