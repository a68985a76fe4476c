/**
 * What the details panel tells its webview and hears back (plain data, no vscode import; the
 * webview's script is media/details.js). `detailsStatus` turns a VM snapshot into the panel's
 * facts; times stay times (startedAt, lastHeartbeatAt) so the webview shows ages as of each second
 * without asking again.
 */
import { AGENT_SILENT_MS, heartbeatAgeMs, type VmInfo } from '../../runtime/common/status';
import type { VmMetricsEvent } from '../../runtime/client/serviceClient';
import { formatMemory } from '../tree/vmPresentation';
import { diskUseText } from '../tree/diskUse';

export interface DetailsStatus {
  name: string;
  state: string;
  /** One line: "Running · 2 vCPUs · 1 GiB memory · 10 GiB disk". */
  summary: string;
  cpus: number;
  memoryMiB: number;
  /** Epoch ms; present while running or paused. */
  startedAt?: number;
  /** "booted in 6.1 s", "restored in 0.5 s", "taken over". */
  boot?: string;
  accelerator?: string;
  agent?: string;
  lastHeartbeatAt?: number;
  /** The agent responds: its last heartbeat is within AGENT_SILENT_MS whatever lastHeartbeatAt says (pushed snapshots keep theirs). */
  agentResponding?: boolean;
  heartbeatWithinMs?: number;
  kernel?: string;
  hostname?: string;
  lastError?: string;
  /** The VM's files on the host (diskUse.ts). */
  diskUse?: string;
}

/** A sample as the webview plots it (the figures it needs, nothing from the guest it would render as markup). */
export interface DetailsSample {
  at: number;
  state: string;
  cpuPercent?: number;
  hostRssBytes?: number;
  memory?: { totalBytes: number; availableBytes: number };
  rootfs?: { totalBytes: number; usedBytes: number };
  overlayBytes?: number;
  guest?: { os: string; addresses: string[]; listening: string[] };
}

export type ToWebview =
  | { type: 'init'; status: DetailsStatus; samples: DetailsSample[]; historyMs: number }
  | { type: 'status'; status: DetailsStatus }
  | { type: 'sample'; sample: DetailsSample };

/** The webview's reports: it loaded (ready), it drew (what, so tests can check the plot). */
export type FromWebview =
  | { type: 'ready' }
  | { type: 'drawn'; cpuPoints: number; memoryPoints: number; cpuText: string; memoryText: string; theme: string };

const STATE_WORD: Record<string, string> = { running: 'Running', paused: 'Paused', saved: 'Saved', stopped: 'Off', starting: 'Starting', stopping: 'Stopping', saving: 'Saving' };

export function detailsStatus(info: VmInfo): DetailsStatus {
  const rt = info.runtime;
  const up = !!rt && (info.state === 'running' || info.state === 'paused');
  const c = info.config;
  const status: DetailsStatus = {
    name: info.name,
    state: info.state,
    summary: [STATE_WORD[info.state] ?? info.state, `${c.cpus} vCPU${c.cpus === 1 ? '' : 's'}`, `${formatMemory(c.memoryMiB)} memory`, `${c.diskGiB} GiB disk`, `network ${c.network}`].join(' · '),
    cpus: c.cpus,
    memoryMiB: c.memoryMiB,
  };
  if (info.disk) status.diskUse = diskUseText(info.disk);
  if (up && rt) {
    const started = Date.parse(rt.startedAt);
    if (Number.isFinite(started)) status.startedAt = started;
    if (rt.boot) status.boot = rt.boot.kind === 'adopt' ? 'taken over by a new worker' : `${rt.boot.kind === 'restore' ? 'restored' : 'booted'} in ${(rt.boot.readyMs / 1000).toFixed(1)} s`;
    status.accelerator = `${rt.accel.toUpperCase()} (${rt.accelReason})`;
    status.agent = !rt.agent.connected ? 'not connected' : rt.agent.responding === false ? 'not responding' : `connected${rt.agent.version ? `, version ${rt.agent.version}` : ''}`;
    if (heartbeatAgeMs(rt.agent) !== undefined) status.lastHeartbeatAt = rt.agent.lastHeartbeatAt;
    if (rt.agent.connected && rt.agent.responding) {
      status.agentResponding = true;
      status.heartbeatWithinMs = AGENT_SILENT_MS;
    }
    status.kernel = rt.agent.kernel;
    status.hostname = rt.agent.hostname;
  }
  if (info.lastError) status.lastError = info.lastError.message;
  return status;
}

export function detailsSample(m: VmMetricsEvent): DetailsSample {
  const s: DetailsSample = { at: m.at, state: m.state };
  if (m.cpuPercent !== undefined) s.cpuPercent = m.cpuPercent;
  if (m.hostRssBytes !== undefined) s.hostRssBytes = m.hostRssBytes;
  if (m.guest) {
    s.memory = { totalBytes: m.guest.memory.totalBytes, availableBytes: m.guest.memory.availableBytes };
    s.rootfs = { totalBytes: m.guest.rootfs.totalBytes, usedBytes: m.guest.rootfs.usedBytes };
  }
  if (m.overlay) s.overlayBytes = m.overlay.allocatedBytes;
  if (m.guestInfo) s.guest = { os: m.guestInfo.os, addresses: m.guestInfo.addresses.map((a) => `${a.address} (${a.iface})`), listening: m.guestInfo.listening };
  return s;
}
