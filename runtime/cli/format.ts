/** Human-readable rendering of status snapshots for the CLI. */
import * as path from 'node:path';
import { heartbeatAgeMs, type VmInfo } from '../common/status';
import type { GuestInfo } from '../client/guestFiles';
import { NETWORK_POLICY_DESCRIPTIONS } from '../common/config';
import { describeForward, inactiveForwards } from '../common/ports';
import { formatBytes } from './progress';

export function formatMiB(mib: number): string {
  return mib >= 1024 && mib % 1024 === 0 ? `${mib / 1024}G` : `${mib}M`;
}

/** The AGENT column: what the snapshot says, with the heartbeat's age as of `now`. */
export function agentSummary(info: VmInfo, now = Date.now()): string {
  const agent = info.runtime?.agent;
  if (!info.runtime) return '-';
  if (!agent?.connected) return 'not connected';
  if (agent.responding === false) return `not responding (last heartbeat ${Math.round((heartbeatAgeMs(agent, now) ?? 0) / 1000)}s ago)`;
  return 'ok';
}

export function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]))).join('  ')).join('\n');
}

export function listTable(vms: VmInfo[]): string {
  const rows = [['NAME', 'STATE', 'CPUS', 'MEMORY', 'DISK', 'NETWORK', 'AGENT']];
  for (const vm of vms) {
    rows.push([vm.name, vm.state, String(vm.config.cpus), formatMiB(vm.config.memoryMiB), `${vm.config.diskGiB}G`, vm.config.network, agentSummary(vm)]);
  }
  return table(rows);
}

/** The policy, what it means, and what carries it while the VM runs. */
export function networkSummary(vm: VmInfo): string {
  const policy = vm.config.network;
  const running = vm.runtime && vm.runtime.state !== 'stopped' && vm.runtime.state !== 'saved';
  const backend = policy === 'internet' ? (running ? (vm.runtime?.passtPid ? `, passt pid ${vm.runtime.passtPid}` : ', passt not running') : ', through passt') : policy === 'host' ? ', QEMU user networking' : '';
  return `${policy} (${NETWORK_POLICY_DESCRIPTIONS[policy] ?? 'unknown'}${backend})`;
}

/** "312.4 MiB (disk 10.2 MiB, checkpoints 302.2 MiB, saved state 0 B); base image 251.8 MiB shared, not counted". */
export function diskUsageText(d: NonNullable<VmInfo['disk']>): string {
  const parts = [`disk ${formatBytes(d.diskBytes)}`, `checkpoints ${formatBytes(d.checkpointsBytes)}`];
  if (d.savedStateBytes > 0) parts.push(`saved state ${formatBytes(d.savedStateBytes)}`);
  return `${formatBytes(d.totalBytes)} (${parts.join(', ')}); base image ${formatBytes(d.sharedBaseBytes)} shared, not counted`;
}

export function infoText(vm: VmInfo, guest?: GuestInfo): string {
  const r = vm.runtime;
  const lines: [string, string][] = [
    ['Name', vm.name],
    ['ID', vm.config.id],
    ['State', vm.state],
    ['CPUs', String(vm.config.cpus)],
    ['Memory', formatMiB(vm.config.memoryMiB)],
    ['Disk', `${vm.config.diskGiB}G (${diskOrigin(vm)})`],
    ['Network', networkSummary(vm)],
    ['Created', vm.config.createdAt],
  ];
  if (vm.disk) lines.splice(lines.length - 2, 0, ['Disk usage', diskUsageText(vm.disk)]);
  if (r) {
    lines.push(
      ['Accelerator', `${r.accel} (${r.accelReason})`],
      ['QEMU', `${r.qemuVersion}, pid ${r.qemuPid ?? '-'}`],
      ['Channel', r.channel],
      ['Worker pid', String(r.workerPid)],
      ['Agent', r.agent.connected ? `${agentSummary(vm)}, version ${r.agent.version}${r.agent.responding === false ? '' : `, heartbeat ${heartbeatAgeMs(r.agent) ?? '-'} ms ago`}` : 'not connected'],
      ['Guest', r.agent.connected ? `${r.agent.hostname}, kernel ${r.agent.kernel}` : '-'],
      ['Started', r.startedAt + (r.boot ? ` (${r.boot.kind}, agent ready in ${r.boot.readyMs} ms)` : '')],
    );
  }
  if (guest) {
    lines.push(
      ['OS', `${guest.os} (${guest.arch}), up ${guest.uptimeS} s`],
      ['Guest memory', `${guest.memory.freeMiB} MiB free of ${guest.memory.totalMiB} MiB`],
      ['Addresses', guest.addresses.map((a) => `${a.address} (${a.iface})`).join(', ') || '-'],
      ['Listening', guest.listening.join(', ') || '-'],
    );
  }
  const ports = vm.config.ports ?? { auto: true, forwards: [] };
  const forwards = r?.ports ?? inactiveForwards(ports);
  lines.push(['Ports', [`automatic forwarding ${ports.auto ? 'on' : 'off'}`, ...forwards.map(describeForward)].join('; ')]);
  lines.push(['Directory', vm.paths.dir], ['Disk file', vm.paths.disk], ['Console log', vm.paths.consoleLog], ['Worker log', vm.paths.workerLog]);
  if (vm.paths.savedState) lines.push(['Saved state', vm.paths.savedState]);
  if (vm.lastError) lines.push(['Last error', vm.lastError.message]);
  const w = Math.max(...lines.map(([k]) => k.length));
  return lines.map(([k, v]) => `${(k + ':').padEnd(w + 1)} ${v}`).join('\n');
}

/** What a VM's disk is an overlay on: the base image, the template it was made from, or the VM it is a linked clone of. */
function diskOrigin(vm: VmInfo): string {
  const base = `base ${vm.config.imageHash.slice(0, 12)}`;
  if (vm.config.linkedTo) return `linked clone of ${vm.config.linkedTo.vm} at checkpoint ${vm.config.linkedTo.checkpoint}, on ${base}`;
  if (vm.config.template) return `made from template ${path.basename(vm.config.template)}, on ${base}`;
  return `linked clone of ${base}`;
}
