/**
 * How a VM looks in the tree, as plain data (no vscode import, unit-tested): the codicon and theme
 * colour of its state, its description and its Markdown tooltip.
 */
import { AGENT_SILENT_MS, heartbeatAgeMs, type VmInfo, type VmState } from '../../runtime/common/status';
import type { GuestSummary } from '../../runtime/worker/metrics';
import { NETWORK_POLICY_DESCRIPTIONS } from '../../runtime/common/config';
import { diskUseText } from './diskUse';

/** What the tree knows of a VM beyond its snapshot while the view is visible (the metrics store's latest). */
export interface LiveFigures {
  cpuPercent?: number;
  guestInfo?: GuestSummary;
}

export interface VmLook {
  icon: string;
  /** A theme colour id, or undefined for the default foreground. */
  color?: string;
  label: string;
  description: string;
  tooltip: string;
  contextValue: string;
}

const STATE: Record<VmState, { icon: string; color?: string; word: string }> = {
  running: { icon: 'vm-running', color: 'charts.green', word: 'Running' },
  paused: { icon: 'debug-pause', color: 'charts.yellow', word: 'Paused' },
  saved: { icon: 'save', color: 'charts.blue', word: 'Saved' },
  stopped: { icon: 'vm-outline', color: 'disabledForeground', word: 'Off' },
  starting: { icon: 'loading~spin', word: 'Starting' },
  stopping: { icon: 'loading~spin', word: 'Stopping' },
  saving: { icon: 'loading~spin', word: 'Saving' },
};

export function formatMemory(mib: number): string {
  return mib % 1024 === 0 ? `${mib / 1024} GiB` : mib >= 1024 ? `${(mib / 1024).toFixed(1)} GiB` : `${mib} MiB`;
}

export function formatDuration(ms: number): string {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} days`;
}

/** Markdown-escapes text that comes from the guest or the disk. */
function md(text: string): string {
  return text.replace(/[\\`*_{}[\]()#+\-.!|<>]/g, (c) => `\\${c}`);
}

/** One listening TCP port of a guest, as the tree lists it under the VM. */
export interface PortLook {
  port: number;
  label: string;
  description: string;
}

/**
 * The guest's listening sockets ("tcp 0.0.0.0:22", "tcp6 [::]:22", as the agent reports them), one
 * entry per port number, ascending; strings that do not parse are left out (they come from the guest).
 */
export function portLooks(listening: readonly string[]): PortLook[] {
  const byPort = new Map<number, Set<string>>();
  for (const entry of listening) {
    const m = /^(tcp6?) (.+):(\d{1,5})$/.exec(entry);
    const port = m ? Number(m[3]) : NaN;
    if (!m || port < 1 || port > 65535) continue;
    let set = byPort.get(port);
    if (!set) byPort.set(port, (set = new Set()));
    set.add(m[2]);
  }
  return [...byPort.entries()]
    .sort((a, b) => a[0] - b[0])
    .map(([port, addrs]) => {
      const all = [...addrs];
      const local = all.every((a) => a.startsWith('127.') || a === '[::1]');
      const any = all.some((a) => a === '0.0.0.0' || a === '[::]');
      return { port, label: `${port}/tcp`, description: any ? 'all addresses' : local ? 'localhost only' : all.join(', ') };
    });
}

/** A CPU figure as the tree shows it: whole percent, as Hyper-V Manager's column (decimals would change every second). */
export function formatCpu(percent: number): string {
  return `${Math.round(percent)}% CPU`;
}

export function vmLook(info: VmInfo, now = Date.now(), live?: LiveFigures): VmLook {
  const s = STATE[info.state] ?? STATE.stopped;
  const failed = info.state === 'stopped' && info.lastError;
  const cpus = `${info.config.cpus} vCPU${info.config.cpus === 1 ? '' : 's'}`;
  const rt = info.runtime;
  const agentDown = (info.state === 'running') && rt && !rt.agent.connected;
  const words = [agentDown ? 'Running, agent not connected' : failed ? 'Off, failed' : s.word, cpus, formatMemory(info.config.memoryMiB)];
  const up = info.state === 'running' || info.state === 'paused';
  const guest = up ? live?.guestInfo : undefined;
  const cpuWord = info.state === 'running' && live?.cpuPercent !== undefined ? formatCpu(live.cpuPercent) : undefined;
  const lines = [`**${md(info.name)}**: ${md(words[0].toLowerCase())}`, ''];
  lines.push(`- ${cpus}, ${formatMemory(info.config.memoryMiB)} memory, ${info.config.diskGiB} GiB disk`);
  lines.push(`- Network: ${md(info.config.network)} (${md(NETWORK_POLICY_DESCRIPTIONS[info.config.network] ?? 'unknown policy')})`);
  if (info.disk) lines.push(`- Disk use: ${md(diskUseText(info.disk))}`);
  if (rt && (info.state === 'running' || info.state === 'paused')) {
    lines.push(`- Up ${formatDuration(now - Date.parse(rt.startedAt))}${rt.boot ? ` (${rt.boot.kind === 'restore' ? 'restored' : rt.boot.kind === 'adopt' ? 'taken over' : 'booted'} in ${(rt.boot.readyMs / 1000).toFixed(1)} s)` : ''}`);
    lines.push(`- Accelerator: ${md(rt.accel.toUpperCase())} (${md(rt.accelReason)})`);
    const hb = heartbeatAgeMs(rt.agent, now);
    const agentWord = !rt.agent.connected ? 'not connected' : rt.agent.responding === false ? 'not responding' : 'connected';
    // Pushed snapshots keep the heartbeat time of their moment: while the agent responds, it beat within AGENT_SILENT_MS.
    const hbText = hb === undefined ? '' : rt.agent.responding && hb > AGENT_SILENT_MS ? `, last heartbeat under ${AGENT_SILENT_MS / 1000} s ago` : `, last heartbeat ${formatDuration(hb)} ago`;
    lines.push(`- Agent: ${agentWord}${hbText}`);
    if (rt.agent.kernel) lines.push(`- Guest kernel: ${md(rt.agent.kernel)}`);
    if (rt.agent.hostname) lines.push(`- Host name: ${md(rt.agent.hostname)}`);
    if (guest) {
      lines.push(`- Guest OS: ${md(guest.os)}`);
      const addrs = guest.addresses.map((a) => `${a.address} (${a.iface})`);
      lines.push(`- Addresses: ${addrs.length > 0 ? md(addrs.join(', ')) : 'none'}`);
      const ports = portLooks(guest.listening).map((p) => p.port);
      lines.push(`- Listening ports: ${ports.length > 0 ? ports.join(', ') : 'none'}`);
    }
  }
  if (info.state === 'saved') lines.push('- Its running state is saved: Start restores it in about a second');
  if (info.lastError) lines.push('', `Last error: ${md(info.lastError.message)}`);
  return {
    icon: failed ? 'warning' : agentDown ? 'vm-active' : s.icon,
    color: failed ? 'list.warningForeground' : agentDown ? 'charts.orange' : s.color,
    label: info.name,
    description: (cpuWord ? [...words, cpuWord] : words).join(' · '),
    tooltip: lines.join('\n'),
    contextValue: `${info.state}Vm`,
  };
}
