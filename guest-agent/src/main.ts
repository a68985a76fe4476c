/**
 * Guest agent entry point: finds the channel's virtio-serial port and serves the host over it.
 * Started at boot by the image's init (runtime/image/guest), restarted by it if it exits.
 */
import { Agent } from './agent';
import { PortStream, findPortDevice } from './port';

const PORT_NAME = process.env.SANDBOXVM_PORT_NAME ?? 'org.sandboxvm.agent';

function log(message: string): void {
  process.stderr.write(`${new Date().toISOString()} sandboxvm-agent: ${message}\n`);
}

function main(): void {
  const device = findPortDevice(PORT_NAME);
  if (!device) {
    log(`no virtio-serial port named ${PORT_NAME}; retrying in 1 s`);
    setTimeout(main, 1000);
    return;
  }
  let agent: Agent | undefined;
  const port = new PortStream(device, (chunk) => agent!.receive(chunk), log);
  agent = new Agent((frame) => port.write(frame), log);
  port.start();
  log(`serving on ${device}`);
}

process.on('uncaughtException', (err) => {
  log(`uncaught: ${err.stack ?? err}`);
  process.exit(1);
});

main();
