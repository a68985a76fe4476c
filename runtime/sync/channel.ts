/**
 * The host end of one sync session (wire.ts; the guest end is guest-agent/src/syncMain.ts): asks for the guest's manifest, streams records,
 * and waits for acks. Every guest line is checked (parseGuestLine); a malformed one, an entry out
 * of place or a manifest past its bound ends the session with a sentence, never a crash.
 */
import { SandboxError, ErrorCode } from '../common/errors';
import type { Session, SessionClient, SessionExit } from '../client/sessionClient';
import type { IgnoreGroup } from './ignore';
import { LineSplitter, MAX_MANIFEST_ENTRIES, encodeHeader, parseGuestLine, type TreeEntry } from './wire';

/** Where the image puts Node and the receiver (runtime/image/assemble-image.sh, build.mjs's sync-receive entry). */
const GUEST_NODE = '/opt/sandboxvm/bin/node';
const GUEST_RECEIVER = '/opt/sandboxvm/agent/sync-receive.js';
/** The bulk writer (guest-agent/native/syncWrite.c): dir, file and flush records only, several writer threads. */
const GUEST_WRITER = '/opt/sandboxvm/agent/bin/sandboxvm-sync-write';

/** `receiver`: the Node receiver (every record, the manifest); `writer`: the native bulk writer. */
export type GuestProgram = 'receiver' | 'writer';

export interface GuestFailure {
  path: string;
  message: string;
}

export class SyncChannel {
  private manifestWait?: { entries: Map<string, TreeEntry>; resolve: (m: Map<string, TreeEntry>) => void; reject: (e: Error) => void };
  private readonly acks = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private seq = 0;
  private endReason?: string;
  readonly ended: Promise<string>;
  private resolveEnded!: (why: string) => void;
  /** Per-record failures the guest reported (cleared by the reader). */
  readonly failures: GuestFailure[] = [];

  private constructor(private readonly session: Session) {
    this.ended = new Promise((r) => (this.resolveEnded = r));
  }

  /**
   * Starts the guest's receiver (or the bulk writer) on `guestPath` (made if missing) as an exec
   * session: its bytes go through the relay, never through the agent's loop. Rejects when the session cannot start; a
   * receiver that refuses the folder ends the channel with its sentence.
   */
  static async open(sessions: SessionClient, guestPath: string, program: GuestProgram = 'receiver', writerThreads?: number): Promise<SyncChannel> {
    let channel: SyncChannel | undefined;
    const early: Buffer[] = [];
    let exit: SessionExit | undefined;
    let stderr = '';
    const splitter = new LineSplitter(
      (line) => channel!.onLine(line),
      (why) => channel?.abort(`the guest sent ${why}`),
    );
    const reason = (r: SessionExit) => {
      const said = stderr.trim().split('\n').pop()?.replace(/[\x00-\x1f\x7f]/g, ' ');
      return r.error ?? (said ? said : r.code === 0 ? 'the sync session ended' : `the guest's sync receiver ended (code ${r.code ?? r.signal})`);
    };
    const session = await sessions.open(
      { kind: 'exec', argv: program === 'writer' ? [GUEST_WRITER, guestPath, ...(writerThreads === undefined ? [] : [String(writerThreads)])] : [GUEST_NODE, GUEST_RECEIVER, guestPath], cwd: '/' },
      {
        onData: (stream, data) => {
          if (stream === 2) {
            if (stderr.length < 4096) stderr += data.toString('utf8').slice(0, 4096 - stderr.length);
            return;
          }
          if (channel) splitter.push(data);
          else early.push(Buffer.from(data));
        },
        onExit: (r) => {
          exit = r;
          channel?.finish(reason(r));
        },
      },
    );
    channel = new SyncChannel(session);
    // A worker that took over cannot vouch for the stdin bytes the dead one had: start over.
    const reattached = session.reattached.bind(session);
    session.reattached = () => {
      reattached();
      channel!.abort("the VM's worker was replaced; comparing the folders again");
    };
    for (const b of early) splitter.push(b);
    if (exit) channel.finish(reason(exit));
    return channel;
  }

  get closed(): boolean {
    return this.endReason !== undefined;
  }

  /** The guest's folder as it is now (entries the rules ignore are not walked). */
  manifest(ignore: IgnoreGroup[]): Promise<Map<string, TreeEntry>> {
    if (this.endReason) return Promise.reject(this.error());
    return new Promise((resolve, reject) => {
      this.manifestWait = { entries: new Map(), resolve, reject };
      this.session.write(encodeHeader({ op: 'manifest', ignore })).catch((e) => this.abort(String(e?.message ?? e)));
    });
  }

  /** Sends bytes (whole records); resolves when the worker took them (within the guest's credit). */
  async send(bytes: Buffer): Promise<void> {
    if (this.endReason) throw this.error();
    await this.session.write(bytes);
    if (this.endReason) throw this.error();
  }

  /** Resolves once the guest has applied everything sent before it. */
  flush(): Promise<void> {
    if (this.endReason) return Promise.reject(this.error());
    const seq = ++this.seq;
    return new Promise((resolve, reject) => {
      this.acks.set(seq, { resolve, reject });
      this.session.write(encodeHeader({ op: 'flush', seq })).catch((e) => this.abort(String(e?.message ?? e)));
    });
  }

  /** Ends the session (the guest drops a file in progress). */
  async close(): Promise<void> {
    this.finish('the sync stopped');
    await this.session.close().catch(() => undefined);
  }

  private onLine(line: string): void {
    if (this.endReason) return;
    const m = parseGuestLine(line);
    if (typeof m === 'string') return this.abort(`the guest sent ${m}`);
    switch (m.t) {
      case 'entry': {
        const w = this.manifestWait;
        if (!w) return this.abort('the guest sent a manifest entry nobody asked for');
        if (w.entries.size >= MAX_MANIFEST_ENTRIES) return this.abort(`the guest folder holds more than ${MAX_MANIFEST_ENTRIES} entries`);
        w.entries.set(m.entry.path, m.entry);
        return;
      }
      case 'end': {
        const w = this.manifestWait;
        if (!w || w.entries.size !== m.count) return this.abort('the guest sent a manifest that does not add up');
        this.manifestWait = undefined;
        return w.resolve(w.entries);
      }
      case 'ack': {
        const done = this.acks.get(m.seq);
        if (!done) return this.abort('the guest acknowledged something never sent');
        this.acks.delete(m.seq);
        return done.resolve();
      }
      case 'fail':
        if (this.failures.length < 1000) this.failures.push({ path: m.path, message: m.message });
        return;
    }
  }

  private abort(why: string): void {
    if (this.endReason) return;
    this.finish(why);
    void this.session.close().catch(() => undefined);
  }

  private finish(why: string): void {
    if (this.endReason) return;
    this.endReason = why;
    this.manifestWait?.reject(this.error());
    this.manifestWait = undefined;
    for (const a of this.acks.values()) a.reject(this.error());
    this.acks.clear();
    this.resolveEnded(why);
  }

  private error(): SandboxError {
    return new SandboxError(ErrorCode.AgentUnavailable, this.endReason ?? 'the sync session ended');
  }
}
