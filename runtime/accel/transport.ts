/**
 * Which channel the host uses to reach the guest agent. virtio-serial works everywhere QEMU runs;
 * vsock needs the host's vhost-vsock (/dev/vhost-vsock). The host never opens an AF_VSOCK socket
 * unless that device is usable: elsewhere (a VM without it, like this project's CI machines) the
 * host's vsock can lead to infrastructure that is not ours.
 */
import * as fs from 'node:fs';

export type Transport = 'virtio-serial' | 'vsock';

export interface TransportChoice {
  transport: Transport;
  reason: string;
}

export function chooseTransport(vhostVsockUsable: boolean, requested?: string): TransportChoice {
  if (requested === 'virtio-serial') return { transport: 'virtio-serial', reason: 'requested with SANDBOXVM_TRANSPORT' };
  if (!vhostVsockUsable) return { transport: 'virtio-serial', reason: '/dev/vhost-vsock is not usable on this host' };
  return { transport: 'vsock', reason: '/dev/vhost-vsock is usable' };
}

export function probeTransport(env: NodeJS.ProcessEnv = process.env): TransportChoice {
  let usable = false;
  if (process.platform === 'linux') {
    try {
      fs.accessSync('/dev/vhost-vsock', fs.constants.R_OK | fs.constants.W_OK);
      usable = true;
    } catch {
      usable = false;
    }
  }
  return chooseTransport(usable, env.SANDBOXVM_TRANSPORT);
}

/** A guest CID for a VM: stable per VM id, never 0-2 (reserved). Collisions make QEMU fail to start. */
export function guestCid(vmId: string): number {
  const n = parseInt(vmId.replace(/-/g, '').slice(0, 8), 16) || 0;
  return 3 + (n % 0x3fff_fff0);
}
