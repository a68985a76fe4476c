/**
 * Guest agent entry point: serves the host over the channel's virtio-serial port and, where the
 * kernel has AF_VSOCK, on vsock port AGENT_VSOCK_PORT too (same protocol, one Agent per
 * connection). Started at boot by the image's init (runtime/image/guest), restarted if it exits.
 */
// vsock accept() waits on a threadpool thread; keep the default four free for file I/O.
process.env.UV_THREADPOOL_SIZE ??= '8';

import { Agent } from './agent';
import { PortStream, findPortDevice } from './port';
import { serveRelay } from './relayLink';
import { cleanStaleTemporaries } from './fileTarget';
import { AGENT_VSOCK_PORT, VsockListener, vsockSupported } from '../../runtime/native/vsock';

const PORT_NAME = process.env.SANDBOXVM_PORT_NAME ?? 'org.sandboxvm.agent';
const VSOCK_DELAY_MS = 2000;

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} sandboxvm-agent: ${message}\n`);
}

function serveVirtioSerial(): void {
  const device = findPortDevice(PORT_NAME);
  if (!device) {
    log(`no virtio-serial port named ${PORT_NAME}; retrying in 1 s`);
    setTimeout(serveVirtioSerial, 1000);
    return;
  }
  let agent: Agent | undefined;
  const port = new PortStream(device, (chunk) => agent!.receive(chunk), log);
  agent = new Agent((frame) => port.write(frame), log);
  port.start();
  log(`serving on ${device}`);
}

function serveVsock(): void {
  if (process.env.SANDBOXVM_VSOCK === '0' || !vsockSupported()) return;
  let listener: VsockListener;
  try {
    listener = VsockListener.listen(AGENT_VSOCK_PORT);
  } catch (err) {
    log(`not serving vsock: ${(err as Error).message}`);
    return;
  }
  listener.serve(
    (socket) => {
      const agent = new Agent((frame) => socket.write(frame), (m) => log(`vsock: ${m}`));
      socket.on('data', (chunk: Buffer) => agent.receive(chunk));
      socket.on('error', () => undefined);
      socket.on('close', () => agent.dispose());
    },
    (err) => log(`vsock accept failed: ${err.message}`),
  );
  log(`serving on vsock port ${AGENT_VSOCK_PORT}`);
}

process.on('uncaughtException', (err) => {
  log(`uncaught: ${err.stack ?? err}`);
  process.exit(1);
});

// Before any write can start: temporaries an interrupted copy left (a power-off, a crash) go.
cleanStaleTemporaries(log);

// Under the relay (relay.c, the image's default) the port is the relay's; alone, the agent opens it.
const relayFd = Number(process.env.SANDBOXVM_RELAY_FD);
delete process.env.SANDBOXVM_RELAY_FD;
if (Number.isInteger(relayFd) && relayFd > 2) serveRelay(relayFd, log);
else serveVirtioSerial();
// Loading koffi costs a few hundred ms under TCG: not before the host's first hello is answered.
setTimeout(serveVsock, VSOCK_DELAY_MS);
