#!/usr/bin/env bash
# Opens Sandbox VMs in a browser where desktop VS Code is not installed: code-server 4.100.3 on
# 127.0.0.1 (installed on first use, ~1.5 min) with the packaged extension installed and the VM
# `demo` created and running. Prints the address and a fresh password; Ctrl-C stops code-server,
# not the VMs. PORT=8080 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${PORT:-8080}"

[ -f dist-vsix/sandbox-vms.vsix ] || npm run package >/dev/null
BIN="$(SANDBOXVM_CODE_SERVER_NO_BROWSER=1 bash test/vscode/install-code-server.sh)"
STATE="${XDG_DATA_HOME:-$HOME/.local/share}/sandboxvm/code-server"
mkdir -p "$STATE"
"$BIN" --user-data-dir "$STATE/user-data" --extensions-dir "$STATE/extensions" --install-extension dist-vsix/sandbox-vms.vsix --force >/dev/null

bin/sandboxvm info demo >/dev/null 2>&1 || bin/sandboxvm create demo
bin/sandboxvm info demo --json | grep -q '"state": "running"' || bin/sandboxvm start demo

PASSWORD="$(head -c 18 /dev/urandom | base64 | tr -d '/+=')"
export PASSWORD
echo "==> Sandbox VMs in VS Code: open http://127.0.0.1:$PORT/ and log in with the password $PASSWORD"
echo "    (the Sandbox VMs view is in the Activity Bar; Ctrl-C here stops code-server, not the VMs)"
exec "$BIN" --bind-addr "127.0.0.1:$PORT" --auth password --disable-telemetry --disable-update-check \
  --user-data-dir "$STATE/user-data" --extensions-dir "$STATE/extensions"
