#!/usr/bin/env bash
# Sets up a fresh Debian or Ubuntu machine for Sandbox VMs and runs the main job:
#   1. host packages (QEMU, qemu-img, busybox-static, mmdebstrap, e2fsprogs, gcc for the guest relay,
#      fakeroot and fakechroot so a normal user can build the image) from apt
#   2. npm packages (npm ci) and the build (esbuild bundles: CLI, service, worker, guest agent)
#   3. the default base image, built locally from Debian packages into ~/.cache/sandboxvm/images
#   4. the main job: create a VM `demo`, start it, run `uname -a` in it, stop it
#   5. the VS Code extension: packaged (dist-vsix/sandbox-vms.vsix) and installed into desktop VS Code
#      where `code` exists; otherwise it prints the one command that opens it in a browser
#      (scripts/code-server.sh: code-server on 127.0.0.1, the extension installed, `demo` running)
# Pass --no-demo to stop after step 3 (CI does). Idempotent: a second run skips what is done.
set -euo pipefail
cd "$(dirname "$0")/.."

demo=1
[ "${1:-}" = "--no-demo" ] && demo=0

packages=(qemu-system-x86 qemu-utils busybox-static mmdebstrap e2fsprogs fakeroot fakechroot ca-certificates gcc libc6-dev passt rsync openssh-client git)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing host packages: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

echo "==> npm packages"
export npm_config_yes=true
npm ci --no-audit --no-fund

echo "==> build"
npm run build

echo "==> base image"
bin/sandboxvm image build
echo "==> template for instant create"
bin/sandboxvm image template || echo "    (no template: new VMs boot until the service builds one)"

if [ "$demo" = 1 ]; then
  echo "==> main job: a VM named demo"
  bin/sandboxvm info demo >/dev/null 2>&1 || bin/sandboxvm create demo
  bin/sandboxvm info demo --json | grep -q '"state": "running"' || bin/sandboxvm start demo
  bin/sandboxvm exec demo -- uname -a
  bin/sandboxvm list
  bin/sandboxvm stop demo

  echo "==> VS Code extension"
  npm run package
  if command -v code >/dev/null 2>&1; then
    code --install-extension dist-vsix/sandbox-vms.vsix --force
    echo "==> done: in VS Code, the Sandbox VMs view in the Activity Bar lists demo; or try 'bin/sandboxvm shell demo'"
  else
    echo "==> done: no desktop VS Code here ('code' is not on PATH). To use the extension in a browser, run:"
    echo "      bash scripts/code-server.sh"
    echo "    or try 'bin/sandboxvm start demo' and 'bin/sandboxvm shell demo'"
  fi
fi
