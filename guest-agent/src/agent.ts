/**
 * The agent's dispatcher: decodes frames from the host, runs the handshake, owns the sessions,
 * sends heartbeats. Transport-agnostic: it is given a `send` and fed bytes.
 */
import * as os from 'node:os';
import { execFile } from 'node:child_process';
import { FrameDecoder, FrameType, ProtocolError, encodeControl, type Frame } from '../../runtime/protocol/frames';
import { MAX_SESSIONS, PROTOCOL_VERSION, parseHostMessage, type HostMessage, type LiveSession } from '../../runtime/protocol/messages';
import { DEFAULT_SHELL, GuestSession, sessionEnvironment, type AgentSession } from './session';
import { RelaySession, type RelayPort } from './relaySession';
import { RelayOp, encodeOp, isConnected, parseDone, parseInherit } from './relayProtocol';
import { handleCall } from './calls';
import { checkStart, refusalFrames } from './resolveCommand';

/** Session kinds whose bytes the relay moves when there is one. */
const RELAYED_KINDS = new Set(['exec', 'pty', 'read', 'write', 'connect']);

export const AGENT_VERSION = '0.1.0';
const HEARTBEAT_MS = 1000;
/** Ended sessions kept until the host releases them (their end not yet confirmed). */
const MAX_LINGERING = 64;

/** A byte offset the host sent for a resume: a whole, non-negative, safe number. */
function isOffset(v: unknown): v is number {
  return Number.isSafeInteger(v) && (v as number) >= 0;
}
/** Clock differences above this are corrected when the host tells us its time. */
const CLOCK_TOLERANCE_MS = 500;

export class Agent {
  private readonly decoder = new FrameDecoder(undefined, true);
  private readonly sessions = new Map<number, AgentSession>();
  private epoch = '';
  private heartbeat?: NodeJS.Timeout;

  /**
   * @param send writes a frame towards the host
   * @param relay when the relay (relay.c) carries the channel: session bytes go through it, and
   *   `send` is its socket too
   */
  constructor(private readonly send: (frame: Buffer) => void, private readonly log: (m: string) => void, private readonly relay?: RelayPort) {
    // Announce a fresh start (epoch ''): a host end that knew an earlier agent greets us at once
    // instead of waiting to miss our heartbeats.
    this.sendHello('');
  }

  receive(chunk: Buffer): void {
    try {
      this.decoder.push(chunk, (frame) => this.onFrame(frame));
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.log(`protocol error from host: ${err.message}; resynchronising`);
      this.decoder.reset();
    }
  }

  /** A note from the relay about one of its sessions (a LOCAL frame's payload). */
  relayNote(id: number, payload: Buffer): void {
    const inherited = parseInherit(payload);
    if (inherited && this.relay && !this.sessions.has(id)) {
      const session = RelaySession.inherit(id, this.relay, this.log, inherited.kind, inherited.pid);
      this.sessions.set(id, session);
      session.onExit = () => {
        this.sessions.delete(id);
        this.lingering.delete(id);
      };
      session.onLinger = () => this.linger(id, session);
      this.inherited = true;
      return;
    }
    const session = this.sessions.get(id);
    if (isConnected(payload)) {
      if (session instanceof RelaySession) session.relayConnected();
      return;
    }
    const err = parseDone(payload);
    if (err !== undefined && session instanceof RelaySession) session.relayFinished(err);
  }

  /** Ended sessions kept for a resume, oldest first; past MAX_LINGERING the oldest is let go. */
  private readonly lingering = new Map<number, AgentSession>();

  private linger(id: number, session: AgentSession): void {
    this.lingering.set(id, session);
    if (this.lingering.size <= MAX_LINGERING) return;
    const [oldestId, oldest] = this.lingering.entries().next().value as [number, AgentSession];
    this.log(`session ${oldestId}: ${MAX_LINGERING} ended sessions wait for their host end already; letting it go`);
    oldest.release();
  }

  /** Set when the relay handed this (restarted) agent sessions of the agent process before it. */
  private inherited = false;

  /** A whole frame from the host (the relay has already split the stream). */
  onFrame(frame: Frame): void {
    if (frame.type === FrameType.Control) {
      const message = parseHostMessage(frame.payload);
      if (message) this.onControl(frame.session, message);
      else this.log(`unparseable control message on session ${frame.session}`);
      return;
    }
    const session = this.sessions.get(frame.session);
    if (!session) return;
    if (frame.type === FrameType.Data) session.input(frame.payload);
    else if (frame.type === FrameType.Window) session.grant(frame.stream, frame.payload.readUInt32BE(0));
    else if (frame.type === FrameType.Eof) session.endInput();
  }

  private onControl(id: number, m: HostMessage): void {
    if (id === 0) {
      if (m.t === 'hello') this.hello(m.epoch, m.time);
      else if (m.t === 'shutdown') this.shutdown(m.reboot);
      else if (m.t === 'time') this.setClock(m.time);
      return;
    }
    if (m.t === 'call') {
      // An answer is for the host end that asked: a call in flight when the VM was saved, cloned
      // or taken from a template must not answer a new host end's call of the same id.
      const epoch = this.epoch;
      const answer = (result: Record<string, unknown>) => {
        if (this.epoch === epoch) this.send(encodeControl(id, { t: 'result', ...result }));
      };
      handleCall(m.method, m.params ?? {}).then(
        (value) => answer({ ok: true, value }),
        (err: Error) => answer({ ok: false, error: String(err?.message ?? err).slice(0, 4000) }),
      );
      return;
    }
    if (m.t === 'open') {
      if (this.sessions.has(id)) {
        // the relay kept the live session; it holds nothing new for this id
        this.send(encodeControl(id, { t: 'error', message: `session ${id} is already open` }));
        return;
      }
      const relayed = this.relay !== undefined && RELAYED_KINDS.has(m.kind);
      // The relay holds every forwarded open's input until told what to do with it.
      if (this.relay && !relayed) this.relay.send(encodeOp(id, RelayOp.Forget));
      if (!this.epoch) {
        if (relayed) this.relay!.send(encodeOp(id, RelayOp.Forget));
        this.send(encodeControl(id, { t: 'error', message: 'the guest agent restarted and has not been greeted yet; retry' }));
        return;
      }
      if (m.kind === 'exec' || m.kind === 'pty') {
        // Answered as a shell would (127, 126, a bad directory) before anything is spawned.
        const { env, cwd } = sessionEnvironment(m);
        const argv0 = m.kind === 'pty' && !m.argv?.length ? DEFAULT_SHELL[0] : m.argv?.[0];
        const problem = argv0 === undefined ? undefined : checkStart(argv0, env.PATH, cwd);
        if (problem) {
          if (relayed) this.relay!.send(encodeOp(id, RelayOp.Forget));
          for (const frame of refusalFrames(id, m.kind, problem)) this.send(frame);
          return;
        }
      }
      const session = relayed ? new RelaySession(id, this.relay!, this.log) : new GuestSession(id, { send: this.send }, this.log);
      this.sessions.set(id, session);
      session.onExit = () => {
        this.sessions.delete(id);
        this.lingering.delete(id);
      };
      session.onLinger = () => this.linger(id, session);
      session.open(m);
      return;
    }
    const session = this.sessions.get(id);
    if (m.t === 'resume') {
      const offsets = isOffset(m.stdout) && isOffset(m.stderr) ? ([m.stdout, m.stderr] as const) : undefined;
      if (session) session.resume(offsets);
      else this.send(Buffer.concat([encodeControl(id, { t: 'resumed' }), encodeControl(id, { t: 'error', message: `session ${id} is gone` })]));
      return;
    }
    if (!session) return;
    if (m.t === 'release') session.release();
    else if (m.t === 'resize') session.resize(m.cols, m.rows);
    else if (m.t === 'signal') session.signal(m.signal);
    else if (m.t === 'close') session.kill();
  }

  private hello(epoch: string, hostTime: number): void {
    if (this.epoch === '' && this.inherited) {
      // The first greeting after a restart: the sessions the relay carried over belong to this
      // host end (it greets us with its own epoch again), and live on.
      this.log(`greeted after a restart (epoch ${epoch}): ${this.sessions.size} session(s) carried over`);
      this.epoch = epoch;
      this.inherited = false;
    }
    if (epoch !== this.epoch) {
      if (this.sessions.size > 0) this.log(`new host end (epoch ${epoch}): closing ${this.sessions.size} session(s) of the old one`);
      for (const s of [...this.sessions.values()]) s.abandon();
      this.sessions.clear();
      this.lingering.clear();
      this.epoch = epoch;
    }
    // The same epoch from a new connection is a worker that took over: it learns what still runs.
    this.sendHello(epoch, [...this.sessions].filter(([, s]) => s.kind !== undefined).slice(0, MAX_SESSIONS).map(([id, s]) => ({ id, kind: s.kind! })));
    // Every greeting carries the host's time: a restored VM (same epoch, hours later) is set right too.
    // After the answer: starting `date` blocks this process for a fork, which the host need not wait for.
    this.setClock(hostTime);
    if (!this.heartbeat) this.heartbeat = setInterval(() => this.beat(), HEARTBEAT_MS);
    this.beat();
  }

  private sendHello(epoch: string, sessions?: LiveSession[]): void {
    this.send(encodeControl(0, { t: 'hello', version: PROTOCOL_VERSION, epoch, agentVersion: AGENT_VERSION, pid: process.pid, hostname: os.hostname(), kernel: os.release(), sessions }));
  }

  private beat(): void {
    this.send(encodeControl(0, { t: 'heartbeat', uptime: os.uptime(), time: Date.now() }));
  }

  /** Sets the guest clock to the host's when they differ (a restored VM wakes up in the past). */
  private setClock(hostTime: number): void {
    if (typeof hostTime !== 'number' || !Number.isFinite(hostTime)) return;
    if (Math.abs(Date.now() - hostTime) <= CLOCK_TOLERANCE_MS) return;
    execFile('date', ['-u', '-s', `@${(hostTime / 1000).toFixed(3)}`], (err) => {
      if (err) this.log(`setting the clock failed: ${err.message}`);
    });
  }

  /** The connection is gone: end its sessions and heartbeats. */
  dispose(): void {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    for (const s of [...this.sessions.values()]) s.abandon();
    this.sessions.clear();
  }

  private shutdown(reboot: boolean): void {
    this.log(reboot ? 'reboot requested by the host' : 'shutdown requested by the host');
    for (const s of [...this.sessions.values()]) s.kill();
    const script = reboot ? '/opt/sandboxvm/bin/reboot' : '/opt/sandboxvm/bin/poweroff';
    execFile(script, (err) => {
      if (err) this.log(`${script} failed: ${err.message}`);
    });
  }
}
