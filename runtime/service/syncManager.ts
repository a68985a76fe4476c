/**
 * The service's workspace syncs (like mutagen's daemon): each VM's syncs are kept in its
 * directory (`syncs.json`, written atomically) and run by the service while the VM runs; they
 * pick up again after a pause, a save and restore, a worker crash, an agent restart or a service
 * restart, catching up by comparing manifests (runtime/sync/engine.ts). Status snapshots go out
 * as `sync.status` notifications to subscribers; `sync.removed` {vm, id} when one stops.
 *
 *   sync.add    {name, hostDir, guestPath?, ignore?, gitignore?} -> SyncStatus     (running | paused)
 *               hostDir: an absolute host folder; guestPath: absolute, default /root/<basename>;
 *               the same folder pair again answers the sync already there
 *   sync.remove {name, id? | hostDir?} -> {removed: string[]}                       (any state)
 *               no id or folder: every sync of the VM
 *   sync.list   {name?} -> SyncStatus[]                                             (any state; never waits on a guest)
 */
import { randomBytes } from 'node:crypto';
import { promises as fsp, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { writeJsonAtomic } from '../common/atomicWrite';
import { ErrorCode, SandboxError } from '../common/errors';
import { validateVmName } from '../common/names';
import { VM_FILES, vmsDir } from '../common/paths';
import type { HandlerTable, RpcPeer } from '../common/rpc';
import { wrongStateMessage } from '../common/stateMessages';
import type { VmInfo } from '../common/status';
import { SessionClient } from '../client/sessionClient';
import { GuestFiles } from '../client/guestFiles';
import { SyncEngine } from '../sync/engine';
import { checkPattern } from '../sync/ignore';
import type { SyncSpec, SyncStatus } from '../sync/types';
import type { VmManager } from './vmManager';

const MAX_SYNCS_PER_VM = 32;

export class SyncManager {
  private readonly engines = new Map<string, Map<string, SyncEngine>>();

  constructor(private readonly home: string, private readonly vms: VmManager, private readonly subscribers: Set<RpcPeer>, private readonly log: (m: string) => void) {
    vms.onDidChangeVm((info) => this.onVm(info));
    vms.onDidRemoveVm((name) => void this.dropVm(name));
  }

  /** Loads every VM's syncs from disk and starts those whose VM runs. */
  async load(): Promise<void> {
    for (const info of await this.vms.list()) {
      let specs: SyncSpec[] = [];
      try {
        specs = parseSpecs(readFileSync(this.file(info.name), 'utf8'), info.name);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log(`${info.name}: ignoring ${VM_FILES.syncs}: ${(err as Error).message}`);
        continue;
      }
      for (const spec of specs) this.startEngine(spec);
    }
  }

  handlers(): HandlerTable {
    return {
      'sync.add': (p) => this.add(p ?? {}),
      'sync.remove': (p) => this.remove(p ?? {}),
      'sync.list': (p) => this.list(p ?? {}),
    };
  }

  private file(vm: string): string {
    return path.join(vmsDir(this.home), vm, VM_FILES.syncs);
  }

  private running(vm: string): boolean {
    try {
      const state = this.vms.workerOf(vm)?.status.state;
      return state === 'running' || state === 'paused';
    } catch {
      return false;
    }
  }

  private startEngine(spec: SyncSpec): SyncEngine {
    const engine = new SyncEngine(
      spec,
      {
        attach: async () => SessionClient.connect(this.vms.attachInfo(spec.vm).socket),
        running: () => this.running(spec.vm),
        log: this.log,
      },
      (status) => this.subscribers.forEach((peer) => peer.notify('sync.status', status)),
    );
    let set = this.engines.get(spec.vm);
    if (!set) this.engines.set(spec.vm, (set = new Map()));
    set.set(spec.id, engine);
    engine.kick();
    return engine;
  }

  private onVm(info: VmInfo): void {
    for (const engine of this.engines.get(info.name)?.values() ?? []) engine.kick();
  }

  private async dropVm(name: string): Promise<void> {
    const set = this.engines.get(name);
    this.engines.delete(name);
    for (const e of set?.values() ?? []) await e.dispose();
  }

  async add(p: Record<string, unknown>): Promise<SyncStatus> {
    const vm = validateVmName(p.name);
    const info = await this.vms.info(vm);
    if (info.state !== 'running' && info.state !== 'paused') throw new SandboxError(ErrorCode.WrongState, wrongStateMessage(vm, info.state, 'sync a folder to', ['running']));
    if (typeof p.hostDir !== 'string' || !path.isAbsolute(p.hostDir)) throw new SandboxError(ErrorCode.BadArgument, 'hostDir must be an absolute host folder');
    const hostDir = path.resolve(p.hostDir);
    const st = await fsp.stat(hostDir).catch(() => undefined);
    if (!st) throw new SandboxError(ErrorCode.BadArgument, `no such folder ${hostDir} on the host`);
    if (!st.isDirectory()) throw new SandboxError(ErrorCode.BadArgument, `${hostDir} is not a folder; give a folder to sync`);
    const guestPath = p.guestPath === undefined ? `/root/${path.basename(hostDir) || 'workspace'}` : p.guestPath;
    if (typeof guestPath !== 'string' || !path.posix.isAbsolute(guestPath) || guestPath.length > 4096 || guestPath.includes('\0')) throw new SandboxError(ErrorCode.BadArgument, 'the guest path must be absolute, e.g. /root/project');
    const guest = path.posix.normalize(guestPath).replace(/(.)\/+$/, '$1');
    if (guest === '/') throw new SandboxError(ErrorCode.BadArgument, 'the guest path may not be / (a sync removes what the host folder lacks); give a folder, e.g. /root/project');
    const ignore = p.ignore === undefined ? [] : p.ignore;
    if (!Array.isArray(ignore) || ignore.length > 1000) throw new SandboxError(ErrorCode.BadArgument, 'ignore must be a list of patterns');
    for (const pattern of ignore) {
      const why = checkPattern(pattern);
      if (why) throw new SandboxError(ErrorCode.BadArgument, why);
    }
    if (p.gitignore !== undefined && typeof p.gitignore !== 'boolean') throw new SandboxError(ErrorCode.BadArgument, 'gitignore must be true or false');
    const existing = [...(this.engines.get(vm)?.values() ?? [])];
    const same = existing.find((e) => e.spec.hostDir === hostDir && e.spec.guestPath === guest);
    if (same) return same.current;
    const clash = existing.find((e) => isUnder(guest, e.spec.guestPath) || isUnder(e.spec.guestPath, guest));
    if (clash) throw new SandboxError(ErrorCode.BadArgument, `${vm}:${guest} overlaps the sync of ${clash.spec.hostDir} to ${clash.spec.guestPath}; stop that one first (sandboxvm sync stop ${vm} ${clash.spec.id})`);
    if (existing.length >= MAX_SYNCS_PER_VM) throw new SandboxError(ErrorCode.BadArgument, `${vm} has ${MAX_SYNCS_PER_VM} syncs already; stop one first`);
    await this.checkGuestPath(vm, guest);
    const spec: SyncSpec = { id: randomBytes(4).toString('hex'), vm, hostDir, guestPath: guest, ignore: ignore as string[], gitignore: p.gitignore !== false };
    await this.persist(vm, [...existing.map((e) => e.spec), spec]);
    return this.startEngine(spec).current;
  }

  /** Refuses a guest path that exists and is not a directory (nothing is changed then). */
  private async checkGuestPath(vm: string, guest: string): Promise<void> {
    const sessions = await SessionClient.connect(this.vms.attachInfo(vm).socket);
    try {
      const entry = await new GuestFiles(sessions).stat(guest, true).catch((err: Error) => {
        if (/ENOENT|no such file/i.test(err.message)) return undefined;
        throw new SandboxError(ErrorCode.BadArgument, `cannot check ${vm}:${guest}: ${err.message}`);
      });
      if (entry && entry.type !== 'dir') throw new SandboxError(ErrorCode.BadArgument, `${vm}:${guest} is not a directory; give a guest folder (it is made if missing)`);
    } finally {
      sessions.dispose();
    }
  }

  async remove(p: Record<string, unknown>): Promise<{ removed: string[] }> {
    const vm = validateVmName(p.name);
    await this.vms.info(vm); // UnknownVm
    const set = this.engines.get(vm) ?? new Map<string, SyncEngine>();
    const which = typeof p.id === 'string' ? p.id : typeof p.hostDir === 'string' ? path.resolve(p.hostDir) : undefined;
    const victims = [...set.values()].filter((e) => which === undefined || e.spec.id === which || e.spec.hostDir === which);
    if (which !== undefined && victims.length === 0) throw new SandboxError(ErrorCode.BadArgument, `${vm} has no sync ${which}; see \`sandboxvm sync list ${vm}\``);
    await this.persist(vm, [...set.values()].filter((e) => !victims.includes(e)).map((e) => e.spec));
    for (const e of victims) {
      set.delete(e.spec.id);
      await e.dispose();
      this.subscribers.forEach((peer) => peer.notify('sync.removed', { vm, id: e.spec.id }));
    }
    return { removed: victims.map((e) => e.spec.id) };
  }

  async list(p: Record<string, unknown>): Promise<SyncStatus[]> {
    const vms = p.name === undefined ? [...this.engines.keys()] : [validateVmName(p.name)];
    if (p.name !== undefined) await this.vms.info(vms[0]);
    return vms.flatMap((vm) => [...(this.engines.get(vm)?.values() ?? [])].map((e) => e.current));
  }

  private async persist(vm: string, specs: SyncSpec[]): Promise<void> {
    await writeJsonAtomic(this.file(vm), specs);
  }

  async dispose(): Promise<void> {
    for (const set of this.engines.values()) for (const e of set.values()) await e.dispose();
    this.engines.clear();
  }
}

function isUnder(child: string, dir: string): boolean {
  return child === dir || child.startsWith(dir === '/' ? '/' : `${dir}/`);
}

/** The syncs in a VM's syncs.json, each checked; malformed entries are dropped. */
export function parseSpecs(text: string, vm: string): SyncSpec[] {
  const value = JSON.parse(text);
  if (!Array.isArray(value)) throw new Error('not a list');
  return value
    .filter(
      (s) =>
        s && typeof s.id === 'string' && /^[0-9a-f]{8}$/.test(s.id) && typeof s.hostDir === 'string' && path.isAbsolute(s.hostDir) &&
        typeof s.guestPath === 'string' && s.guestPath.startsWith('/') && s.guestPath !== '/' &&
        Array.isArray(s.ignore) && s.ignore.every((x: unknown) => checkPattern(x) === undefined),
    )
    .map((s) => ({ id: s.id, vm, hostDir: s.hostDir, guestPath: s.guestPath, ignore: s.ignore, gitignore: s.gitignore !== false }));
}
