/**
 * Which hardware accelerator this host offers QEMU, probed through koffi (the only way this project
 * reaches native code): KVM_GET_API_VERSION on /dev/kvm (Linux), kern.hv_support (macOS),
 * WHvGetCapability (Windows). Falls back to TCG with the reason recorded.
 */
import * as fs from 'node:fs';
import type { Accelerator } from '../qemu/argv';

export interface AccelChoice {
  accel: Accelerator;
  /** Why this accelerator: what the probe saw. */
  reason: string;
}

/** The native calls a probe makes, behind an interface so tests can fake the host. */
export interface NativeHost {
  platform: NodeJS.Platform;
  /** Linux: the result of ioctl(KVM_GET_API_VERSION) on /dev/kvm, or an error string. */
  kvmApiVersion(): number | string;
  /**
   * Linux x86: whether the CPU shows vmx or svm. A /dev/kvm that answers its ioctls on a CPU without
   * them (seen here: a Firecracker guest without nested virtualization) cannot run a guest: QEMU
   * aborts setting MSRs or hangs in the guest's first instructions.
   */
  cpuHasVirtualization(): boolean;
  /** macOS: kern.hv_support, or an error string. */
  hvSupport(): number | string;
  /** Windows: whether WHvCapabilityCodeHypervisorPresent is true, or an error string. */
  whpxPresent(): boolean | string;
}

const KVM_API_VERSION = 12;

/** Pure decision from what the host answered; table-tested. */
export function chooseAccelerator(host: NativeHost, requested?: string): AccelChoice {
  if (requested === 'tcg') return { accel: 'tcg', reason: 'requested with SANDBOXVM_ACCEL=tcg' };
  switch (host.platform) {
    case 'linux': {
      const v = host.kvmApiVersion();
      if (v === KVM_API_VERSION && !host.cpuHasVirtualization()) {
        return { accel: 'tcg', reason: '/dev/kvm answers, but the CPU shows no vmx/svm (nested virtualization is off), so KVM cannot run guests' };
      }
      if (v === KVM_API_VERSION) return { accel: 'kvm', reason: `/dev/kvm answers KVM_GET_API_VERSION=${v}` };
      return { accel: 'tcg', reason: typeof v === 'string' ? `no KVM: ${v}` : `no KVM: unexpected API version ${v}` };
    }
    case 'darwin': {
      const v = host.hvSupport();
      if (v === 1) return { accel: 'hvf', reason: 'kern.hv_support=1' };
      return { accel: 'tcg', reason: typeof v === 'string' ? `no HVF: ${v}` : 'no HVF: kern.hv_support=0' };
    }
    case 'win32': {
      const v = host.whpxPresent();
      if (v === true) return { accel: 'whpx', reason: 'WHvCapabilityCodeHypervisorPresent' };
      return { accel: 'tcg', reason: typeof v === 'string' ? `no WHPX: ${v}` : 'no WHPX: hypervisor not present' };
    }
    default:
      return { accel: 'tcg', reason: `no accelerator probe for ${host.platform}` };
  }
}

/** The real host, through koffi. Each call loads what it needs lazily and never throws. */
export const realHost: NativeHost = {
  platform: process.platform,
  cpuHasVirtualization() {
    if (process.arch !== 'x64' && process.arch !== 'ia32') return true;
    try {
      return /^flags\s*:.*\b(vmx|svm)\b/m.test(fs.readFileSync('/proc/cpuinfo', 'utf8'));
    } catch {
      return true;
    }
  },
  kvmApiVersion() {
    try {
      fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    } catch (err) {
      return `/dev/kvm is not usable (${(err as NodeJS.ErrnoException).code})`;
    }
    try {
      const koffi = require('koffi');
      const libc = koffi.load('libc.so.6');
      const open = libc.func('int open(const char *path, int flags)');
      const ioctl = libc.func('int ioctl(int fd, unsigned long request, ...)');
      const close = libc.func('int close(int fd)');
      const O_RDWR_CLOEXEC = 0o2 | 0o2000000;
      const fd = open('/dev/kvm', O_RDWR_CLOEXEC);
      if (fd < 0) return 'open(/dev/kvm) failed';
      try {
        return ioctl(fd, 0xae00) as number; // KVM_GET_API_VERSION = _IO(KVMIO, 0x00)
      } finally {
        close(fd);
      }
    } catch (err) {
      return `koffi probe failed: ${(err as Error).message}`;
    }
  },
  hvSupport() {
    try {
      const koffi = require('koffi');
      const lib = koffi.load('/usr/lib/libSystem.B.dylib');
      const sysctlbyname = lib.func('int sysctlbyname(const char *name, _Out_ int *oldp, _Inout_ size_t *oldlenp, void *newp, size_t newlen)');
      const value = [0];
      const len = [4];
      if (sysctlbyname('kern.hv_support', value, len, null, 0) !== 0) return 'sysctl kern.hv_support failed';
      return value[0];
    } catch (err) {
      return `koffi probe failed: ${(err as Error).message}`;
    }
  },
  whpxPresent() {
    try {
      const koffi = require('koffi');
      const lib = koffi.load('WinHvPlatform.dll');
      const get = lib.func('long __stdcall WHvGetCapability(int code, _Out_ int *buffer, uint32_t size, _Out_ uint32_t *written)');
      const buffer = [0];
      const written = [0];
      const hr = get(0, buffer, 4, written); // WHvCapabilityCodeHypervisorPresent
      if (hr !== 0) return `WHvGetCapability failed (HRESULT ${hr})`;
      return buffer[0] !== 0;
    } catch (err) {
      return `koffi probe failed: ${(err as Error).message}`;
    }
  },
};

export function probeAccelerator(env: NodeJS.ProcessEnv = process.env): AccelChoice {
  return chooseAccelerator(realHost, env.SANDBOXVM_ACCEL);
}
