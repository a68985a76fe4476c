/** Status snapshots: whole pictures of a VM, never deltas. Clients just re-render them. */
import type { Accelerator } from '../qemu/argv';
import type { VmConfig } from './config';
import type { WireError } from './errors';
import type { ForwardStatus } from './ports';

/**
 * stopped: no QEMU. saved: no QEMU, a saved state to restore on start. starting, stopping, saving:
 * an operation is under way. running / paused: QEMU is up (paused = vCPUs stopped).
 */
export type VmState = 'stopped' | 'starting' | 'running' | 'paused' | 'saving' | 'saved' | 'stopping';

export interface AgentStatus {
  connected: boolean;
  version?: string;
  hostname?: string;
  kernel?: string;
  /**
   * When the worker last heard the agent's heartbeat (epoch ms, host clock); undefined before the
   * first one. Compute the age when reading (heartbeatAgeMs below), never store it. Pushed
   * snapshots (`vm.status`) are published when contact is lost or regained, not on every
   * heartbeat: while `responding` is true the last heartbeat is within AGENT_SILENT_MS, whatever a
   * pushed snapshot's time says; `vm.list` and `vm.info` answers carry the latest time.
   */
  lastHeartbeatAt?: number;
  /**
   * False once no heartbeat has come for AGENT_SILENT_MS (the agent is stopped, or the guest too
   * busy to run it); true again with the next one. Undefined while not connected.
   */
  responding?: boolean;
}

/** After this long without a heartbeat the agent counts as not responding (it beats every second). */
export const AGENT_SILENT_MS = 5000;

/** Milliseconds since the agent's last heartbeat, as of `now`; undefined before the first one. */
export function heartbeatAgeMs(agent: AgentStatus | undefined, now = Date.now()): number | undefined {
  return agent?.lastHeartbeatAt === undefined ? undefined : Math.max(0, now - agent.lastHeartbeatAt);
}

/** The one sentence every refusal and failure says when the agent has gone silent. */
export function notRespondingMessage(ageMs: number | undefined, vmName?: string): string {
  const age = ageMs === undefined ? '' : ` (last heartbeat ${Math.round(ageMs / 1000)} s ago)`;
  return `the guest agent is not responding${age}${vmName ? `; see \`sandboxvm logs ${vmName}\`` : ''}`;
}

/** What a worker reports about its VM. */
export interface WorkerStatus {
  state: VmState;
  accel: Accelerator;
  accelReason: string;
  /** How the host reaches the agent. */
  channel: 'virtio-serial' | 'vsock';
  qemuVersion: string;
  workerPid: number;
  qemuPid?: number;
  /** passt's pid when the VM's network policy is `internet` and passt runs. */
  passtPid?: number;
  agent: AgentStatus;
  startedAt: string;
  /** How the agent became ready: cold boot or restore, and how long it took. */
  /** How the worker got its VM: booted it, restored it, or took it over from a worker that died. */
  /**
   * How the VM came up. `phases`: ms after QEMU's spawn when each step ended (qmp: the greeting,
   * loaded: the saved state read, agent: the agent answered, identity: a clone took its own
   * identity). `newIdentity`: this restore gave the guest a new identity (a clone's first start).
   */
  boot?: { kind: 'boot' | 'restore' | 'adopt'; readyMs: number; phases?: Record<string, number>; newIdentity?: boolean };
  /** Port forwards and their state (runtime/worker/portForwarder.ts). */
  ports?: ForwardStatus[];
}

/** What the service reports about a VM. */
export interface VmInfo {
  name: string;
  state: VmState;
  config: Pick<VmConfig, 'id' | 'cpus' | 'memoryMiB' | 'diskGiB' | 'network' | 'createdAt' | 'ports' | 'undoPoints' | 'linkedTo' | 'template'> & { imageHash: string };
  runtime?: WorkerStatus;
  paths: { dir: string; disk: string; consoleLog: string; workerLog: string; savedState?: string };
  lastError?: WireError;
  /** Host bytes the VM's files take (service/diskUsage.ts); from stat alone, so always cheap. */
  disk?: DiskUsage;
  /**
   * Set while a checkpoint is applied: the VM turns off and comes back as the checkpoint has it.
   * `withMemory`: the checkpoint holds a running (paused, saved) state, so the guest's shells as
   * they were then come back with it (clients keep their terminals waiting instead of ending them).
   */
  applying?: { checkpoint: string; withMemory: boolean };
}

/** A VM's files on the host, in allocated bytes (service/diskUsage.ts says what each counts). */
export interface DiskUsage {
  /** disk + checkpoints + savedState: what removing the VM frees. */
  totalBytes: number;
  /** The writable disk (top layer). */
  diskBytes: number;
  /** Checkpoints' layers and memory states. */
  checkpointsBytes: number;
  /** saved.state while saved (not when it is a checkpoint's memory too). */
  savedStateBytes: number;
  /** The base image, shared with every VM on it: not in totalBytes. */
  sharedBaseBytes: number;
}

/** A worker's record in its VM directory (worker.json): how a new service finds and checks it. */
export interface WorkerRecord {
  vmId: string;
  workerPid: number;
  qemuPid: number;
  socket: string;
  startedAt: string;
  /** passt's pid (network policy `internet`): a worker taking over ends it with the VM. */
  passtPid?: number;
  /** The channel's epoch: a worker taking over greets the agent with it, so its sessions live on. */
  epoch?: string;
}
