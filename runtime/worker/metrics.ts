/**
 * Live figures for a VM's details view (Hyper-V Manager's lower pane), sampled by its worker once a
 * second while anyone watches, and not at all otherwise:
 *   - QEMU's CPU time (/proc/<pid>/stat utime+stime) over the interval, as % of one host core,
 *     and its resident memory on the host;
 *   - the guest's memory (MemTotal, MemAvailable) and root filesystem use, from the agent's
 *     `metrics` call (validated in protocol/messages.ts; at most one call in flight, so the guest
 *     is never asked more than once a second; a guest that does not know the call is not asked again);
 *   - the disk overlay's size on the host (disk.qcow2: bytes allocated and apparent size);
 *   - the guest's OS, addresses and listening ports (the agent's `info` call, validated), asked at
 *     most every GUEST_INFO_INTERVAL_MS; each sample carries the latest answer.
 * Figures the worker cannot get are left out of that sample, never guessed.
 */
import * as fs from 'node:fs';
import type { GuestMetrics } from '../protocol/messages';
import type { VmState } from '../common/status';
import type { AgentLink } from './agentLink';
import type { HandlerTable, RpcPeer } from '../common/rpc';

export const METRICS_INTERVAL_MS = 1000;
/** The guest's `info` (it reads /proc/net/tcp) is asked for at most this often while watched. */
export const GUEST_INFO_INTERVAL_MS = 5000;

/** What a sample says of the guest's identity and network (the validated fields of `info`). */
export interface GuestSummary {
  hostname: string;
  os: string;
  kernel: string;
  addresses: { iface: string; family: string; address: string }[];
  /** Listening TCP sockets, like "tcp 0.0.0.0:22" or "tcp6 [::]:8080". */
  listening: string[];
}

/** One sample. The service adds the VM's `name` when it forwards it as `vm.metrics`. */
export interface VmMetrics {
  /** When it was taken (ms since the epoch). */
  at: number;
  state: VmState;
  /** QEMU's CPU use over the last interval, % of one host core (can pass 100 with several vCPUs). */
  cpuPercent?: number;
  /** QEMU's resident memory on the host. */
  hostRssBytes?: number;
  guest?: GuestMetrics;
  /** The VM's qcow2 overlay on the host: bytes allocated on disk and the file's size. */
  overlay?: { allocatedBytes: number; fileBytes: number };
  guestInfo?: GuestSummary;
}

export interface MetricsSource {
  qemuPid(): number | undefined;
  state(): VmState;
  agent(): AgentLink | undefined;
  diskFile: string;
  log(message: string): void;
}

/** The clock ticks per second /proc reports CPU times in (USER_HZ: 100 on every Linux ABI Node runs on). */
const USER_HZ = 100;

/** utime+stime (ticks) and rss (pages) of `pid`, from /proc/<pid>/stat. */
export function parseProcStat(text: string): { ticks: number; rssPages: number } | undefined {
  // The command name (field 2) is in parentheses and may hold spaces or ')': split after the last ')'.
  const close = text.lastIndexOf(')');
  if (close < 0) return undefined;
  const fields = text.slice(close + 2).trim().split(/\s+/);
  // fields[0] is field 3 (state): utime is field 14, stime 15, rss 24.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  const rss = Number(fields[21]);
  if (![utime, stime, rss].every((n) => Number.isSafeInteger(n) && n >= 0)) return undefined;
  return { ticks: utime + stime, rssPages: rss };
}

export class MetricsSampler {
  private timer?: NodeJS.Timeout;
  private last?: { at: number; ticks: number; pid: number };
  private guestCall?: Promise<void>;
  private guest?: GuestMetrics;
  private guestUnsupported = false;
  private infoCall?: Promise<void>;
  private info?: GuestSummary;
  private infoAskedAt = 0;
  private readonly listeners = new Set<(m: VmMetrics) => void>();

  constructor(private readonly source: MetricsSource) {}

  /** Receives every sample while subscribed; sampling runs only while someone is. Returns the unsubscribe. */
  subscribe(listener: (m: VmMetrics) => void): () => void {
    this.listeners.add(listener);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), METRICS_INTERVAL_MS);
      this.tick();
    }
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size === 0) this.dispose();
    };
  }

  dispose(): void {
    clearInterval(this.timer);
    this.timer = undefined;
    this.last = undefined;
    this.guest = undefined;
    this.info = undefined;
    this.infoAskedAt = 0;
  }

  private tick(): void {
    const now = Date.now();
    const sample: VmMetrics = { at: now, state: this.source.state() };
    const pid = this.source.qemuPid();
    if (pid !== undefined) {
      const stat = readProcStat(pid);
      if (stat) {
        if (this.last && this.last.pid === pid && now > this.last.at) {
          sample.cpuPercent = Math.round((((stat.ticks - this.last.ticks) / USER_HZ) * 1000 * 100) / (now - this.last.at) * 10) / 10;
        }
        sample.hostRssBytes = stat.rssPages * PAGE_SIZE;
        this.last = { at: now, ticks: stat.ticks, pid };
      }
    }
    try {
      const st = fs.statSync(this.source.diskFile);
      sample.overlay = { allocatedBytes: st.blocks * 512, fileBytes: st.size };
    } catch {
      // no overlay figure this time
    }
    if (sample.state !== 'running') {
      this.guest = undefined;
      this.info = undefined;
      this.infoAskedAt = 0;
    }
    if (this.guest) sample.guest = this.guest;
    if (this.info) sample.guestInfo = this.info;
    this.askGuest(sample.state);
    this.askInfo(sample.state, now);
    for (const l of this.listeners) l(sample);
  }

  /** Starts one `metrics` call when none is in flight; its answer goes into the next sample. */
  private askGuest(state: VmState): void {
    const agent = this.source.agent();
    if (this.guestCall || this.guestUnsupported || state !== 'running' || !agent?.connected) return;
    this.guestCall = agent
      .call('metrics', {}, 5000)
      .then((value) => {
        this.guest = value as GuestMetrics;
      })
      .catch((err: Error) => {
        this.guest = undefined;
        if (/unknown method/.test(err.message)) {
          this.guestUnsupported = true;
          this.source.log('metrics: the guest agent has no metrics call (an older image); guest figures left out');
        }
      })
      .finally(() => (this.guestCall = undefined));
  }

  /** Starts one `info` call when none is in flight and the last answer is older than GUEST_INFO_INTERVAL_MS. */
  private askInfo(state: VmState, now: number): void {
    const agent = this.source.agent();
    if (this.infoCall || state !== 'running' || !agent?.connected) return;
    if (now - this.infoAskedAt < GUEST_INFO_INTERVAL_MS) return;
    this.infoAskedAt = now;
    this.infoCall = agent
      .call('info', {}, 5000)
      .then((value) => {
        const v = value as GuestSummary;
        if (this.timer) this.info = { hostname: v.hostname, os: v.os, kernel: v.kernel, addresses: v.addresses, listening: v.listening };
      })
      .catch(() => (this.info = undefined))
      .finally(() => (this.infoCall = undefined));
  }
}

const PAGE_SIZE = 4096;

function readProcStat(pid: number): { ticks: number; rssPages: number } | undefined {
  try {
    return parseProcStat(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return undefined;
  }
}

/**
 * `worker.metrics.watch {on}`: the calling peer (the service) receives `worker.metrics` (VmMetrics)
 * notifications while on; sampling stops when no peer watches (a closed peer stops watching).
 */
export function metricsHandlers(sampler: MetricsSampler): HandlerTable {
  const watching = new Map<RpcPeer, () => void>();
  const stop = (peer: RpcPeer) => {
    watching.get(peer)?.();
    watching.delete(peer);
  };
  return {
    'worker.metrics.watch': (p: { on?: unknown } | undefined, peer: RpcPeer) => {
      if (p?.on === false) return stop(peer);
      if (watching.has(peer)) return;
      watching.set(peer, sampler.subscribe((m) => peer.notify('worker.metrics', m)));
      peer.onClose(() => stop(peer));
    },
  };
}
