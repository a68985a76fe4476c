/**
 * vm: a session opened with keepOnDisconnect outlives its client's connection (a VS Code window
 * that reloads), and one without it is closed as before.
 * Procedure: boot a VM. A client process opens an exec that streams 40 batches of 2000 numbered
 * lines, a quarter second apart, with keepOnDisconnect; it appends every chunk to a file. At 200 KB
 * it is killed (SIGKILL); a second client attaches the session with the file's size as its offset
 * and appends the rest, and is killed at 1 MB. After 65 s (beyond the 60 s a detached session is
 * kept by default) the test attaches without offsets, as the extension does, and reads to the end:
 * the file is exactly a prefix of the expected output (nothing lost or doubled across the first
 * kill), the last attach replays from at or before the file's end (no gap) and the whole, with the
 * replayed overlap dropped, is the expected output by count and sha256, and the exit code is 0.
 * Without the flag: the killed client's session cannot be attached (it was closed).
 */
import { after, before, describe, test } from 'node:test';
import * as assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ServiceClient } from '../../runtime/client/serviceClient';
import { TestHome, waitFor } from './fixture';

const VM = 'keep';
const TAIL = 'abcdefghijklmnopqrstuvwxyz';
const BATCHES = 40;
const LINES = 2000;
const SCRIPT = `for i in $(seq 1 ${BATCHES}); do seq -f "line-$i-%g-${TAIL}" 1 ${LINES}; sleep 0.25; done`;

function expected(): Buffer {
  const parts: string[] = [];
  for (let i = 1; i <= BATCHES; i++) for (let j = 1; j <= LINES; j++) parts.push(`line-${i}-${j}-${TAIL}\n`);
  return Buffer.from(parts.join(''));
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('vm: keepOnDisconnect sessions outlive their client', { timeout: 900_000 }, () => {
  let home: TestHome;
  let scratch: string;
  const children: ChildProcess[] = [];

  before(async () => {
    home = new TestHome();
    scratch = fs.mkdtempSync('/tmp/sbx-keep-');
    await home.bootedVm(VM);
  });
  after(async () => {
    for (const c of children) c.kill('SIGKILL');
    fs.rmSync(scratch, { recursive: true, force: true });
    await home.dispose();
  });

  /** Starts keepClient.ts; resolves with the process and the session id it prints. */
  async function client(args: string[]): Promise<{ child: ChildProcess; id: number; lines: string[] }> {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(__dirname, 'keepClient.ts'), ...args], { env: home.env, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    const lines: string[] = [];
    child.stdout!.on('data', (d) => lines.push(...String(d).split('\n').filter(Boolean)));
    const first = await waitFor('the client to open or attach its session', () => lines[0], 60_000);
    const m = /^id (\d+)$/.exec(first);
    if (!m) throw new Error(`the client said: ${first}`);
    return { child, id: Number(m[1]), lines };
  }

  const size = (f: string) => fs.statSync(f, { throwIfNoEntry: false })?.size ?? 0;
  const kill = async (child: ChildProcess) => {
    const gone = new Promise((r) => child.once('exit', r));
    child.kill('SIGKILL');
    await gone;
  };

  test('killed twice mid-stream and attached 65 s later: every byte once, nothing lost', async () => {
    const out = path.join(scratch, 'stream.out');
    const want = expected();
    const a = await client(['open', home.dir, VM, out, 'keep', '--', 'sh', '-c', SCRIPT]);
    await waitFor('200 KB through the first client', () => size(out) >= 200_000 || undefined, 120_000);
    await kill(a.child);
    const b = await client(['attach', home.dir, VM, out, String(a.id)]);
    assert.equal(b.id, a.id);
    await waitFor('1 MB through the second client', () => size(out) >= 1_000_000 || undefined, 120_000);
    await kill(b.child);
    const file = fs.readFileSync(out);
    assert.ok(want.subarray(0, file.length).equals(file), `what the two clients wrote (${file.length} bytes) is exactly the start of the output`);

    await new Promise((r) => setTimeout(r, 65_000));
    const service = await ServiceClient.connect({ home: home.dir, autoStart: false });
    const sessions = await service.attach(VM);
    const chunks: Buffer[] = [];
    const exit = await new Promise<{ code: number | null; error?: string }>((resolve, reject) => {
      sessions.attach(a.id, { onData: (_s, d) => void chunks.push(Buffer.from(d)), onExit: resolve }, { keepOnDisconnect: true }).catch(reject);
    });
    sessions.dispose();
    service.dispose();
    assert.equal(exit.error, undefined);
    assert.equal(exit.code, 0);
    const rest = Buffer.concat(chunks);
    const from = want.length - rest.length;
    assert.ok(from >= 0 && from <= file.length, `the replay starts at byte ${from}, at or before the ${file.length} bytes the clients had (no gap)`);
    assert.ok(want.subarray(from).equals(rest), 'the replay is the rest of the output, in order');
    const whole = Buffer.concat([file, rest.subarray(file.length - from)]);
    assert.equal(whole.length, want.length);
    assert.equal(sha(whole), sha(want));
    console.log(`# ${want.length} bytes: ${file.length} through two killed clients, ${rest.length} replayed and streamed after 65 s (${file.length - from} bytes the killed client had not acknowledged, shown again)`);
  });

  test('without the flag the session is closed when its client is killed', async () => {
    const out = path.join(scratch, 'plain.out');
    const c = await client(['open', home.dir, VM, out, 'nokeep', '--', 'sh', '-c', 'echo up; sleep 600']);
    await waitFor('the shell to start', () => size(out) > 0 || undefined, 60_000);
    await kill(c.child);
    const service = await ServiceClient.connect({ home: home.dir, autoStart: false });
    const sessions = await service.attach(VM);
    try {
      await waitFor('the worker to notice the client is gone', async () => {
        const r = await sessions.attach(c.id, { onData: () => undefined, onExit: () => undefined }).then(() => 'attached', (err: Error) => err.message);
        return r === 'attached' ? assert.fail('a session without keepOnDisconnect could be attached after its client was killed') : r;
      }, 10_000).then((message) => assert.match(message, /no session \d+ to attach to/));
    } finally {
      sessions.dispose();
      service.dispose();
    }
  });
});
