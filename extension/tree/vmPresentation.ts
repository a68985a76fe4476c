/**
 * How a VM looks in the tree, as plain data (no vscode import, unit-tested): the codicon and theme
 * colour of its state, its description and its Markdown tooltip.
 */
import { heartbeatAgeMs, type VmInfo, type VmState } from '../../runtime/common/status';

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

export function vmLook(info: VmInfo, now = Date.now()): VmLook {
  const s = STATE[info.state] ?? STATE.stopped;
  const failed = info.state === 'stopped' && info.lastError;
  const cpus = `${info.config.cpus} vCPU${info.config.cpus === 1 ? '' : 's'}`;
  const rt = info.runtime;
  const agentDown = (info.state === 'running') && rt && !rt.agent.connected;
  const words = [agentDown ? 'Running, agent not connected' : failed ? 'Off, failed' : s.word, cpus, formatMemory(info.config.memoryMiB)];
  const lines = [`**${md(info.name)}**: ${md(words[0].toLowerCase())}`, ''];
  lines.push(`- ${cpus}, ${formatMemory(info.config.memoryMiB)} memory, ${info.config.diskGiB} GiB disk`);
  if (rt && (info.state === 'running' || info.state === 'paused')) {
    lines.push(`- Up ${formatDuration(now - Date.parse(rt.startedAt))}${rt.boot ? ` (${rt.boot.kind === 'restore' ? 'restored' : rt.boot.kind === 'adopt' ? 'taken over' : 'booted'} in ${(rt.boot.readyMs / 1000).toFixed(1)} s)` : ''}`);
    lines.push(`- Accelerator: ${md(rt.accel.toUpperCase())} (${md(rt.accelReason)})`);
    const hb = heartbeatAgeMs(rt.agent, now);
    const agentWord = !rt.agent.connected ? 'not connected' : rt.agent.responding === false ? 'not responding' : 'connected';
    lines.push(`- Agent: ${agentWord}${hb !== undefined ? `, last heartbeat ${formatDuration(hb)} ago` : ''}`);
    if (rt.agent.kernel) lines.push(`- Guest kernel: ${md(rt.agent.kernel)}`);
    if (rt.agent.hostname) lines.push(`- Host name: ${md(rt.agent.hostname)}`);
  }
  if (info.state === 'saved') lines.push('- Its running state is saved: Start restores it in about a second');
  if (info.lastError) lines.push('', `Last error: ${md(info.lastError.message)}`);
  return {
    icon: failed ? 'warning' : agentDown ? 'vm-active' : s.icon,
    color: failed ? 'list.warningForeground' : agentDown ? 'charts.orange' : s.color,
    label: info.name,
    description: words.join(' · '),
    tooltip: lines.join('\n'),
    contextValue: `${info.state}Vm`,
  };
}
