#!/bin/bash
# Stage 2 of the default base image (fast): stage 1's root + init scripts + Node + agent -> qcow2.
#
#   assemble-image.sh STAGE1_DIR AGENT_DIR NODE_BIN OUT_DIR
#
# STAGE1_DIR  output of build-rootfs.sh (vmlinuz, initrd.img, rootfs.tar)
# AGENT_DIR   the guest agent: agent.js and node_modules/node-pty/{package.json,lib,build/Release/pty.node}
# NODE_BIN    a Linux node binary the guest can run (glibc of Debian bookworm or older)
# OUT_DIR     gets base.qcow2, vmlinuz, initrd.img, manifest.json
#
# Progress goes to stdout as lines `STEP <n> <total> <message>`; everything else goes to stderr.
# Environment: SANDBOXVM_DISK_SIZE (default 4G; the raw image is sparse, the qcow2 holds only data).
#
# Root or not, the image is the same. A normal user's run re-executes itself inside one fakeroot
# session (package fakeroot): tar's chowns, setuid bits and device nodes from rootfs.tar are
# recorded by fakeroot, and mkfs.ext4 -d, in the same session, writes them into the image. The
# image is checked before it is converted: /usr/bin/su (setuid), /root and /etc/shadow keep root's modes.
set -euo pipefail
umask 022
if [ "$(id -u)" != 0 ]; then
  if [ -n "${FAKEROOTKEY:-}" ]; then echo "fakeroot did not take effect (uid $(id -u) inside it); cannot give the image's files their owners" >&2; exit 1; fi
  command -v fakeroot >/dev/null || { echo "fakeroot is not installed; a normal user needs it to build the image: sudo apt-get install fakeroot" >&2; exit 1; }
  exec fakeroot -- bash "${BASH_SOURCE[0]}" "$@"
fi

STAGE1_DIR=${1:?usage: assemble-image.sh STAGE1_DIR AGENT_DIR NODE_BIN OUT_DIR}
AGENT_DIR=${2:?usage: assemble-image.sh STAGE1_DIR AGENT_DIR NODE_BIN OUT_DIR}
NODE_BIN=${3:?usage: assemble-image.sh STAGE1_DIR AGENT_DIR NODE_BIN OUT_DIR}
OUT_DIR=${4:?usage: assemble-image.sh STAGE1_DIR AGENT_DIR NODE_BIN OUT_DIR}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SIZE=${SANDBOXVM_DISK_SIZE:-4G}
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"
export LC_ALL=C.UTF-8

exec 3>&1 1>&2
TOTAL=4
step() { echo "STEP $1 $TOTAL $2" >&3; echo "=== step $1/$TOTAL: $2 ($(date -u +%H:%M:%S))"; }

for f in vmlinuz initrd.img rootfs.tar; do
  [ -f "$STAGE1_DIR/$f" ] || { echo "stage 1 output $STAGE1_DIR/$f is missing"; exit 1; }
done
[ -f "$AGENT_DIR/agent.js" ] || { echo "$AGENT_DIR/agent.js is missing"; exit 1; }
[ -x "$NODE_BIN" ] || { echo "$NODE_BIN is not an executable"; exit 1; }

mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sandboxvm-stage2.XXXXXX")
cleanup() { rm -rf "$WORK" 2>/dev/null || true; }
trap cleanup EXIT
ROOT="$WORK/root"
mkdir -p "$ROOT"

# ---------------------------------------------------------------------------------------------
step 1 "unpacking the Debian root"
tar -x -p --numeric-owner --xattrs --xattrs-include='*' -f "$STAGE1_DIR/rootfs.tar" -C "$ROOT"

# ---------------------------------------------------------------------------------------------
step 2 "installing Node, the agent and the init scripts"
install -d -m 0755 "$ROOT/opt/sandboxvm/bin" "$ROOT/opt/sandboxvm/agent" "$ROOT/usr/local/sbin"
install -m 0755 "$HERE/guest/sandboxvm-init" "$ROOT/sbin/sandboxvm-init"
install -m 0755 "$HERE/guest/agent-loop" "$ROOT/opt/sandboxvm/bin/agent-loop"
install -m 0755 "$HERE/guest/poweroff" "$ROOT/opt/sandboxvm/bin/poweroff"
install -m 0755 "$HERE/guest/reboot" "$ROOT/opt/sandboxvm/bin/reboot"
# No init system in the guest: make `poweroff` / `reboot` in a shell do the right thing.
ln -sf /opt/sandboxvm/bin/poweroff "$ROOT/usr/local/sbin/poweroff"
ln -sf /opt/sandboxvm/bin/poweroff "$ROOT/usr/local/sbin/halt"
ln -sf /opt/sandboxvm/bin/reboot "$ROOT/usr/local/sbin/reboot"
install -m 0755 "$NODE_BIN" "$ROOT/opt/sandboxvm/bin/node"
ln -sf /opt/sandboxvm/bin/node "$ROOT/usr/local/bin/node"
# -L: the agent dir may hold symlinks into a host tree; the guest gets real files.
cp -RL --preserve=mode "$AGENT_DIR/." "$ROOT/opt/sandboxvm/agent/"
chown -R 0:0 "$ROOT/opt/sandboxvm" "$ROOT/sbin/sandboxvm-init" 2>/dev/null || true
chmod -R go-w "$ROOT/opt/sandboxvm"
# Root's login shell is bash (Debian's default; make sure).
sed -i 's#^root:\([^:]*:[^:]*:[^:]*:[^:]*:[^:]*\):.*$#root:\1:/bin/bash#' "$ROOT/etc/passwd"
mkdir -p "$ROOT/var/log"

# ---------------------------------------------------------------------------------------------
step 3 "making the ext4 filesystem ($SIZE)"
rm -f "$WORK/base.raw"
# lazy_*_init=0: mkfs zeroes the inode tables and journal now (zeros stay sparse in the qcow2)
# instead of the guest's ext4lazyinit thread doing it on every VM's overlay after boot.
mkfs.ext4 -q -F -d "$ROOT" -L sandboxroot -E lazy_itable_init=0,lazy_journal_init=0 \
  -m 0 "$WORK/base.raw" "$SIZE"
# The owners and modes a faithful root has (a build that lost them would still boot).
check_inode() {  # PATH MODE UID
  local st
  st=$(debugfs -R "stat $1" "$WORK/base.raw" 2>/dev/null | head -n 3 | tr -s ' \n' ' ')
  [[ "$st" =~ Mode:\ +0*([0-7]+)\ .*User:\ +([0-9]+)\  ]] && [ "${BASH_REMATCH[1]}" = "$2" ] && [ "${BASH_REMATCH[2]}" = "$3" ] || {
    echo "the image's $1 is not mode $2 owned by uid $3 (debugfs: $st): the build did not keep root's owners and modes"; exit 1; }
}
check_inode /usr/bin/su 4755 0
check_inode /root 700 0
check_inode /etc/shadow 640 0

# ---------------------------------------------------------------------------------------------
step 4 "converting to qcow2"
qemu-img convert -q -f raw -O qcow2 "$WORK/base.raw" "$OUT_DIR/base.qcow2"
cp "$STAGE1_DIR/vmlinuz" "$OUT_DIR/vmlinuz"
cp "$STAGE1_DIR/initrd.img" "$OUT_DIR/initrd.img"
NODE_VERSION=$("$NODE_BIN" --version 2>/dev/null || echo unknown)
STAGE1_INFO="{}"
[ -f "$STAGE1_DIR/stage1.json" ] && STAGE1_INFO=$(cat "$STAGE1_DIR/stage1.json")
cat > "$OUT_DIR/manifest.json" <<EOF
{
  "format": 1,
  "disk": "base.qcow2",
  "diskFormat": "qcow2",
  "kernel": "vmlinuz",
  "initrd": "initrd.img",
  "rootDevice": "/dev/vda",
  "filesystemLabel": "sandboxroot",
  "virtualSize": "$SIZE",
  "nodeVersion": "$NODE_VERSION",
  "agentPortName": "org.sandboxvm.agent",
  "builtAt": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "stage1": $STAGE1_INFO
}
EOF
ls -l "$OUT_DIR"
