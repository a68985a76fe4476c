/**
 * A vsock client for tests, run inside a guest: connects to the agent over vsock loopback (CID 1)
 * through the same koffi binding the host would use, greets it, runs one command, and prints a JSON
 * report. Usage: node vsock-probe.js [cid] [argv...]
 */
import { FrameDecoder, FrameType, encodeControl, encodeFrame, StreamId } from '../../runtime/protocol/frames';
import { PROTOCOL_VERSION } from '../../runtime/protocol/messages';
import { AGENT_VSOCK_PORT, VMADDR_CID_LOCAL, vsockConnect } from '../../runtime/native/vsock';

async function main(): Promise<void> {
  const cid = Number(process.argv[2] ?? VMADDR_CID_LOCAL);
  const argv = process.argv.length > 3 ? process.argv.slice(3) : ['uname', '-r'];
  const t0 = Date.now();
  const socket = await vsockConnect(cid, AGENT_VSOCK_PORT);
  const decoder = new FrameDecoder();
  const report: Record<string, unknown> = { connectedMs: Date.now() - t0 };
  let stdout = '';
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no answer within 20 s')), 20_000);
    socket.on('data', (chunk: Buffer) =>
      decoder.push(chunk, (f) => {
        if (f.type === FrameType.Control) {
          const m = JSON.parse(f.payload.toString());
          if (m.t === 'hello' && m.epoch === 'probe') {
            report.hello = { agentVersion: m.agentVersion, hostname: m.hostname };
            socket.write(encodeControl(1, { t: 'open', kind: 'exec', argv }));
          } else if (m.t === 'exit' && f.session === 1) {
            report.exit = m;
            clearTimeout(timer);
            resolve();
          } else if (m.t === 'error' && f.session === 1) {
            report.error = m.message;
            clearTimeout(timer);
            resolve();
          }
        } else if (f.type === FrameType.Data && f.session === 1 && f.stream === StreamId.Stdout) {
          stdout += f.payload.toString();
        }
      }),
    );
    socket.on('error', reject);
  });
  socket.write(encodeControl(0, { t: 'hello', version: PROTOCOL_VERSION, epoch: 'probe', time: Date.now() }));
  await done;
  socket.write(encodeFrame(FrameType.Eof, 1, undefined, StreamId.Stdin));
  report.stdout = stdout;
  report.totalMs = Date.now() - t0;
  process.stdout.write(JSON.stringify(report) + '\n');
  socket.destroy();
}

main().catch((err) => {
  process.stdout.write(JSON.stringify({ failed: String(err?.message ?? err) }) + '\n');
  process.exit(1);
});
