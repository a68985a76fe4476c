/**
 * The service's JSON-RPC API: one flat table. Each method names the states it is allowed in (the
 * manager enforces them and answers WrongState otherwise).
 *
 *   vm.create   {name, cpus?, memoryMiB?, diskGiB?, network?, progressToken?} -> VmInfo   (name must be new)
 *               network: 'isolated' | 'internet' | 'host' (default internet; true/false from older clients)
 *   vm.set      {name, network?, undoMaxCount?, undoMaxDiskMiB?} -> VmInfo               (network: stopped; undo limits: any)
 *   vm.start    {name, progressToken?, bootTimeoutMs?} -> VmInfo                          (stopped | saved)
 *   vm.stop     {name, force?} -> VmInfo                                                  (running | paused | saved)
 *               force: not queued; kills QEMU at once, also while starting (the start fails: turned off)
 *   vm.pause    {name} -> VmInfo                                                          (running)
 *   vm.resume   {name} -> VmInfo                                                          (paused)
 *   vm.save     {name} -> VmInfo                                                          (running | paused)
 *   vm.restart  {name, progressToken?} -> VmInfo                                          (running | paused)
 *               one queued operation: a graceful stop, then a start
 *   vm.remove   {name, force?}                                                            (any; running needs force)
 *   vm.list     {} -> VmInfo[]                                                            (never waits on a guest)
 *   vm.info     {name} -> VmInfo                                                          (never waits on a guest)
 *   vm.attach   {name} -> {socket}: the worker socket to open sessions on                (running)
 *   vm.checkpoint.create {name, checkpoint?, undo?, undoMaxCount?, undoMaxDiskMiB?} -> CreatedCheckpoint   (running | paused | saved | stopped)
 *               undo: an undo point; older ones beyond undoMaxCount (1-1000) or undoMaxDiskMiB MiB of
 *               undo points are deleted, oldest first, never the newest (`pruned` lists them). A VM's own
 *               limits (vm.set) win over these; without either: 10 and 2048 MiB. The extension passes its
 *               sandboxvm.undoPoints.maxCount / sandboxvm.undoPoints.maxDiskMiB settings here.
 *   vm.checkpoint.list   {name} -> CheckpointList: the tree, the position, sizes             (any)
 *   vm.checkpoint.apply  {name, checkpoint, discardCurrent?} -> AppliedCheckpoint           (running | paused | saved | stopped)
 *               the state left is checkpointed first unless discardCurrent
 *   vm.checkpoint.rename {name, checkpoint, newName} -> CheckpointView                     (any)
 *   vm.checkpoint.delete {name, checkpoint} -> {id, name, reclaimedBytes}                  (running | paused | saved | stopped)
 *   vm.clone    {name, newName, checkpoint?, full?, progressToken?} -> CloneResult          (running | paused | saved | stopped)
 *               linked (an overlay on a frozen layer of the source) unless full; saved when the state has memory (clones.ts)
 *   vm.undo     {name} -> AppliedCheckpoint & {checkpoint}: applies the newest undo point  (running | paused | saved | stopped)
 *   vm.compact  {name, progressToken?} -> CompactResult: the host space the disk no longer uses given back (running | stopped | saved)
 *               running: fstrim in the guest; stopped/saved: the writable disk rewritten (compact.ts)
 *   image.ensure {progressToken?} -> {hash, kernel, initrd, disk}: builds the base image if missing
 *   template.ensure {progressToken?} -> {dir, bootMs?} | undefined: the default configuration's template
 *               for instant create (templates.ts), built now if missing
 *   host.status, image.build, image.cancel: see imageApi.ts (main.ts adds its table)
 *   service.info {} -> {pid, home, version, protocol}: also the handshake a client compares itself with (common/version.ts)
 *   service.subscribe {}: start receiving `vm.status` (VmInfo) and `vm.removed` ({name}) notifications
 *               and `vm.checkpoints` ({name}) after a checkpoint operation on the VM (list it again)
 *   service.shutdown {}: the service exits; VMs keep running
 *   vm.metrics.watch {name, on?}: while on, `vm.metrics` ({name, ...VmMetrics}) about once a second (metricsHub.ts)
 *   sync.add {name, hostDir, guestPath?, ignore?, gitignore?} -> SyncStatus          (running | paused)
 *   sync.remove {name, id? | hostDir?} -> {removed}, sync.list {name?} -> SyncStatus[]: workspace syncs
 *               (syncManager.ts; main.ts adds its table); subscribers get `sync.status` and `sync.removed`
 *   vm.port.add, vm.port.remove, vm.port.auto, vm.port.list: port forwarding (portApi.ts)
 *   vm.export {name, path | socket, progressToken?} -> ExportedVm   (running | paused: through a checkpoint | saved | stopped)
 *   vm.import {path | socket, name?, progressToken?} -> ImportedVm: a new VM from an archive
 *   vm.transfer.cancel {progressToken}: cancels that export or import (runtime/transfer/transfers.ts)
 *
 * Progress of long operations arrives as `progress` notifications {token, step, total, message}.
 */
import type { HandlerTable, RpcPeer } from '../common/rpc';
import type { VmManager } from './vmManager';
import { portApiHandlers } from './portApi';
import { compactVm } from './compact';

export function apiHandlers(manager: VmManager, subscribers: Set<RpcPeer>, info: () => unknown, shutdown: () => void): HandlerTable {
  const progressTo = (peer: RpcPeer, token: unknown) => (step: number, total: number, message: string) => {
    if (token !== undefined) peer.notify('progress', { token, step, total, message });
  };
  return {
    'vm.create': (p, peer) => manager.create(p, progressTo(peer, p.progressToken)),
    'vm.set': (p) => manager.set(p),
    'vm.start': (p, peer) => manager.start(p.name, progressTo(peer, p.progressToken), p.bootTimeoutMs),
    'vm.stop': (p) => manager.stop(p.name, !!p.force, p.stepMs),
    'vm.pause': (p) => manager.pause(p.name),
    'vm.resume': (p) => manager.resume(p.name),
    'vm.save': (p) => manager.save(p.name),
    'vm.restart': (p, peer) => manager.restart(p.name, progressTo(peer, p.progressToken)),
    'vm.remove': (p) => manager.remove(p.name, !!p.force),
    'vm.list': () => manager.list(),
    'vm.info': (p) => manager.info(p.name),
    'vm.attach': (p) => manager.attachInfo(p.name),
    'vm.checkpoint.create': (p) => manager.checkpoints.create(p.name, p.checkpoint, !!p.undo, p.undoMaxCount !== undefined || p.undoMaxDiskMiB !== undefined ? { maxCount: p.undoMaxCount, maxDiskMiB: p.undoMaxDiskMiB } : undefined),
    'vm.checkpoint.list': (p) => manager.checkpoints.list(p.name),
    'vm.checkpoint.apply': (p) => manager.checkpoints.apply(p.name, p.checkpoint, !!p.discardCurrent),
    'vm.checkpoint.rename': (p) => manager.checkpoints.rename(p.name, p.checkpoint, p.newName),
    'vm.checkpoint.delete': (p) => manager.checkpoints.delete(p.name, p.checkpoint),
    'vm.undo': (p) => manager.checkpoints.undo(p.name),
    'vm.compact': (p, peer) => compactVm(manager, p.name, progressTo(peer, p.progressToken)),
    'vm.clone': (p, peer) => manager.clones.clone(p, progressTo(peer, p.progressToken)),
    'image.ensure': (p, peer) => manager.ensureImage(progressTo(peer, p.progressToken)),
    'template.ensure': (p, peer) => manager.ensureTemplate(progressTo(peer, p.progressToken)),
    ...portApiHandlers(manager),
    ...manager.transfers.handlers(progressTo),
    'service.info': () => info(),
    'service.subscribe': (_p, peer) => {
      subscribers.add(peer);
      peer.onClose(() => subscribers.delete(peer));
    },
    'service.shutdown': () => {
      setImmediate(shutdown);
    },
  };
}
