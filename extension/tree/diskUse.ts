/** A VM's host disk usage (VmInfo.disk) as the tree's tooltip and the details panel show it. */
import type { DiskUsage } from '../../runtime/common/status';

export function formatBytes(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 2 ** 20) return `${(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 2 ** 30) return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/** "1.2 GiB on the host (checkpoints 900.0 MiB, saved state 120.0 MiB); the base image is shared". */
export function diskUseText(d: DiskUsage): string {
  const parts: string[] = [];
  if (d.checkpointsBytes > 0) parts.push(`checkpoints ${formatBytes(d.checkpointsBytes)}`);
  if (d.savedStateBytes > 0) parts.push(`saved state ${formatBytes(d.savedStateBytes)}`);
  return `${formatBytes(d.totalBytes)} on the host${parts.length ? ` (${parts.join(', ')})` : ''}; the base image (${formatBytes(d.sharedBaseBytes)}) is shared`;
}
