#!/bin/bash
# Stage 1 of the default base image (slow, cached by recipe hash): kernel, initramfs, Debian root.
#
#   build-rootfs.sh OUT_DIR
#
# Writes into OUT_DIR (which should be empty; the caller builds into a temp dir and renames):
#   vmlinuz        the Debian cloud kernel, taken from its .deb (never installed into the host's /boot)
#   initrd.img     a small busybox initramfs (guest/initramfs-init as /init + the virtio modules)
#   rootfs.tar     a Debian minbase root made by mmdebstrap (packages: rootfs-packages.txt)
#   stage1.json    what was built (kernel package and version, suite, packages)
#
# Progress goes to stdout as lines `STEP <n> <total> <message>`; everything else goes to stderr.
#
# Environment (all optional):
#   SANDBOXVM_KERNEL_PKG       kernel package (default: what linux-image-cloud-amd64 depends on)
#   SANDBOXVM_KERNEL_VERSION   its version (default: apt's candidate)
#   SANDBOXVM_DEBIAN_MIRROR    default http://deb.debian.org/debian
#   SANDBOXVM_DEBIAN_SECURITY  default http://deb.debian.org/debian-security
#   SANDBOXVM_SUITE            default bookworm
#   SANDBOXVM_INITRD_COMPRESSION  none (default) or gzip. Measured under TCG (-M microvm): the
#                              uncompressed cpio (2.8 MB) reached the agent ~50 ms sooner than gzip (1.25 MB).
#
#   SANDBOXVM_ROOTFS_MODE      how mmdebstrap runs when not root: fakechroot (packages fakechroot and
#                              fakeroot; the default when installed) or unshare (package uidmap,
#                              subuid/subgid ranges, unprivileged user namespaces). baseImage.ts sets
#                              it from prerequisites.ts, which says what a host lacks.
#
# Root or not, the output is the same: mmdebstrap's tar records root's owners, modes, setuid bits
# and /dev nodes in every mode (checked: the same members, owners, modes and contents), and the
# initramfs's /dev/console is written into the archive rather than made with mknod.
set -euo pipefail
umask 022

OUT_DIR=${1:?usage: build-rootfs.sh OUT_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUITE=${SANDBOXVM_SUITE:-bookworm}
MIRROR=${SANDBOXVM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${SANDBOXVM_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
COMPRESSION=${SANDBOXVM_INITRD_COMPRESSION:-none}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C.UTF-8
if [ "$(id -u)" = 0 ]; then
  MODE=root
else
  MODE=${SANDBOXVM_ROOTFS_MODE:-}
  [ -n "$MODE" ] || { command -v fakechroot >/dev/null && MODE=fakechroot || MODE=unshare; }
  case "$MODE" in
    fakechroot|unshare) ;;
    *) echo "SANDBOXVM_ROOTFS_MODE=$MODE: expected fakechroot or unshare" >&2; exit 1 ;;
  esac
fi

# Progress on the original stdout (fd 3); all other output to stderr.
exec 3>&1 1>&2
TOTAL=5
step() { echo "STEP $1 $TOTAL $2" >&3; echo "=== step $1/$TOTAL: $2 ($(date -u +%H:%M:%S))"; }

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sandboxvm-stage1.XXXXXX")
cleanup() { rm -rf "$WORK" 2>/dev/null || true; }
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
step 1 "resolving the kernel package"
KPKG=${SANDBOXVM_KERNEL_PKG:-}
if [ -z "$KPKG" ]; then
  KPKG=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }' || true)
fi
[ -n "$KPKG" ] || { echo "cannot resolve the kernel package behind linux-image-cloud-amd64 (run apt-get update?)"; exit 1; }
KVER=${SANDBOXVM_KERNEL_VERSION:-$(apt-cache policy "$KPKG" | awk '/Candidate:/ { print $2; exit }' || true)}
[ -n "$KVER" ] && [ "$KVER" != "(none)" ] || { echo "no installable version of $KPKG"; exit 1; }
echo "kernel package: $KPKG=$KVER"

BUSYBOX=$(command -v busybox || true)
[ -n "$BUSYBOX" ] || { echo "busybox not found: apt-get install busybox-static"; exit 1; }
if ldd "$BUSYBOX" >/dev/null 2>&1; then
  echo "$BUSYBOX is dynamically linked; the initramfs needs a static one: apt-get install busybox-static"; exit 1
fi

# ---------------------------------------------------------------------------------------------
step 2 "downloading the kernel ($KPKG $KVER)"
mkdir -p "$WORK/deb" "$WORK/kernel"
( cd "$WORK/deb" && apt-get download -q "$KPKG=$KVER" ) 2>&1 | grep -v 'Download is performed unsandboxed' || true
DEB=$(ls "$WORK/deb"/*.deb 2>/dev/null | head -n1)
[ -n "$DEB" ] || { echo "apt-get download $KPKG=$KVER produced no .deb"; exit 1; }
dpkg-deb -x "$DEB" "$WORK/kernel"
VMLINUZ=$(ls "$WORK/kernel/boot"/vmlinuz-* | head -n1)
MODDIR=$(ls -d "$WORK/kernel/lib/modules"/* | head -n1)
KREL=$(basename "$MODDIR")
cp "$VMLINUZ" "$OUT_DIR/vmlinuz"
echo "kernel release: $KREL"

# ---------------------------------------------------------------------------------------------
step 3 "building the initramfs"
# The .deb ships no modules.dep (depmod runs at install time): generate one with busybox.
"$BUSYBOX" depmod -b "$WORK/kernel" "$KREL"
WANTED="virtio_ring virtio virtio_mmio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
virtio_blk virtio_console failover net_failover virtio_net
vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport vsock_loopback"

# Resolve each wanted module's dependencies from modules.dep (depth first, each module once).
declare -A SEEN=()
ORDER=()
dep_line() { grep -E "(^|/)$1\.ko(\.[a-z]+)?:" "$MODDIR/modules.dep" | head -n1 || true; }
add_module() {  # $1 = path relative to the modules dir
  local rel=$1 d
  [ -n "${SEEN[$rel]:-}" ] && return 0
  SEEN[$rel]=1
  for d in $(grep -E "^$rel:" "$MODDIR/modules.dep" | cut -d: -f2); do add_module "$d"; done
  ORDER+=("$rel")
}
for m in $WANTED; do
  line=$(dep_line "$m")
  if [ -z "$line" ]; then
    if grep -qE "/$m\.ko" "$MODDIR/modules.builtin" 2>/dev/null; then echo "module $m is built in"; else echo "module $m not found, skipped"; fi
    continue
  fi
  add_module "${line%%:*}"
done

IR="$WORK/initramfs"
mkdir -p "$IR"/{bin,dev,proc,sys,newroot,etc,lib/modules}
cp "$BUSYBOX" "$IR/bin/busybox"
for applet in sh mount umount mkdir cat cut tr insmod switch_root usleep sleep sync echo; do
  ln -s busybox "$IR/bin/$applet"
done
install -m 0755 "$HERE/guest/initramfs-init" "$IR/init"
: > "$IR/etc/modules.load"
for rel in "${ORDER[@]}"; do
  mkdir -p "$IR/lib/modules/$(dirname "$rel")"
  cp "$MODDIR/$rel" "$IR/lib/modules/$rel"
  echo "/lib/modules/$rel" >> "$IR/etc/modules.load"
done
echo "initramfs modules, in load order:"; sed 's/^/  /' "$IR/etc/modules.load"
# A newc member for a character device (the kernel unpacks concatenated archives). mknod needs
# root, and busybox is static so fakeroot cannot fake one: write the header instead.
cpio_chardev() {  # NAME MODE MAJOR MINOR
  local namesize=$(( ${#1} + 1 ))
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0' \
    1 $(( 0020000 | 8#$2 )) 0 0 1 0 0 0 0 "$3" "$4" "$namesize" 0 "$1"
  head -c $(( (4 - (110 + namesize) % 4) % 4 )) /dev/zero
  printf '070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%s\0\0\0\0' 0 0 0 0 1 0 0 0 0 0 0 11 0 'TRAILER!!!'
}
( cd "$IR" && find . -mindepth 1 | LC_ALL=C sort | "$BUSYBOX" cpio -o -H newc -R 0:0 2>/dev/null ) > "$WORK/initrd.cpio"
cpio_chardev dev/console 0600 5 1 >> "$WORK/initrd.cpio"
case "$COMPRESSION" in
  gzip) gzip -9 -n < "$WORK/initrd.cpio" > "$OUT_DIR/initrd.img" ;;
  none) cp "$WORK/initrd.cpio" "$OUT_DIR/initrd.img" ;;
  *) echo "unknown SANDBOXVM_INITRD_COMPRESSION=$COMPRESSION"; exit 1 ;;
esac
ls -l "$OUT_DIR/initrd.img"

# ---------------------------------------------------------------------------------------------
step 4 "installing Debian $SUITE (minbase) with mmdebstrap"
PKGS=$(grep -vE '^\s*(#|$)' "$HERE/rootfs-packages.txt" | tr -s ' \n' ',' | sed 's/,$//')
echo "mmdebstrap mode: $MODE"
mmdebstrap --mode="$MODE" \
  --variant=minbase \
  --include="$PKGS" \
  --aptopt='Acquire::Languages "none"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/cache/debconf/*-old "$1"/var/log/apt/* "$1"/var/log/dpkg.log "$1"/var/log/alternatives.log' \
  --customize-hook='mkdir -p "$1"/var/lib/apt/lists/partial "$1"/var/cache/apt/archives/partial' \
  --customize-hook='rm -f "$1"/etc/machine-id "$1"/var/lib/dbus/machine-id; : > "$1"/etc/machine-id' \
  --customize-hook='echo "sandbox" > "$1"/etc/hostname' \
  "$SUITE" "$OUT_DIR/rootfs.tar" \
  "deb $MIRROR $SUITE main" \
  "deb $MIRROR $SUITE-updates main" \
  "deb $SECURITY $SUITE-security main"

# ---------------------------------------------------------------------------------------------
step 5 "recording the build"
cat > "$OUT_DIR/stage1.json" <<EOF
{
  "kernelPackage": "$KPKG",
  "kernelVersion": "$KVER",
  "kernelRelease": "$KREL",
  "suite": "$SUITE",
  "packages": "$PKGS",
  "initrdCompression": "$COMPRESSION",
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
}
EOF
ls -l "$OUT_DIR"
