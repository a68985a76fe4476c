/**
 * Which file is a VM's writable disk. Without checkpoints it is disk.qcow2; each checkpoint
 * freezes the disk where it lies and puts a new overlay under layers/ on top, named in
 * checkpoints.json (`top`; service/checkpointStore.ts). Files QEMU has open are never renamed.
 */
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { VM_FILES } from './paths';

/** A layer's or the top's path relative to the VM's folder: disk.qcow2 or layers/<16 hex>.qcow2. */
export const LAYER_PATH = /^(disk\.qcow2|layers\/[0-9a-f]{16}\.qcow2)$/;

/** The absolute path of the VM's writable disk (what QEMU's -drive opens). */
export function activeDisk(vmDir: string): string {
  try {
    const top = JSON.parse(readFileSync(path.join(vmDir, VM_FILES.checkpointIndex), 'utf8')).top;
    if (typeof top === 'string' && LAYER_PATH.test(top)) return path.join(vmDir, top);
  } catch {
    // no checkpoints yet (or an unreadable index: the service's recovery reports it)
  }
  return path.join(vmDir, VM_FILES.disk);
}
