/** A VM's disk against its base image: the overlay may grow the image's filesystem, never shrink it. */
import { execFile } from 'node:child_process';
import { ErrorCode, SandboxError } from '../common/errors';

const GIB = 1024 ** 3;

/**
 * Throws BadArgument when `diskGiB` is smaller than the base image (`imageBytes`): the guest's
 * filesystem would end past its disk and the VM would never boot.
 */
export function checkDiskSize(diskGiB: number, imageBytes: number): void {
  if (diskGiB * GIB >= imageBytes) return;
  const min = Math.ceil(imageBytes / GIB);
  throw new SandboxError(ErrorCode.BadArgument, `the disk must be at least ${min}G, the size of the base image (got ${diskGiB}G); use --disk ${min}G or more`);
}

/** The virtual size in bytes of a disk image, as `qemu-img info` reports it. */
export function virtualSize(qemuImg: string, file: string): Promise<number> {
  return new Promise((resolve, reject) =>
    execFile(qemuImg, ['info', '--output=json', '-U', file], { timeout: 30_000 }, (err, stdout, stderr) => {
      if (err) return reject(new SandboxError(ErrorCode.Internal, `qemu-img info ${file} failed: ${stderr.trim() || err.message}`, { cause: err }));
      const size = (() => {
        try {
          return JSON.parse(stdout)['virtual-size'];
        } catch {
          return undefined;
        }
      })();
      if (!Number.isSafeInteger(size) || size <= 0) return reject(new SandboxError(ErrorCode.Internal, `qemu-img info ${file} gave no virtual size`));
      resolve(size);
    }),
  );
}
