#!/usr/bin/env bash
# Installs code-server 4.100.3 (VS Code 1.100.3, the last release that installs on Node 20) into a
# cache directory outside the repository, following RECIPES.md ("Real VS Code in CI: code-server").
# Idempotent: an install that already answers --version is kept. Prints the code-server binary's path.
set -euo pipefail
VERSION=4.100.3
DIR="${SANDBOXVM_CODE_SERVER_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/sandboxvm-test/code-server}"
BIN="$DIR/node_modules/.bin/code-server"
# code-server writes ~/.config/code-server on any run, --version too: keep it in a scratch folder.
export XDG_CONFIG_HOME="$(mktemp -d)"; trap 'rm -rf "$XDG_CONFIG_HOME"' EXIT
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "^$VERSION"; then echo "$BIN"; exit 0; fi

need=()
# SANDBOXVM_CODE_SERVER_NO_BROWSER=1 (scripts/code-server.sh): no chromium, the user brings a browser.
[ -n "${SANDBOXVM_CODE_SERVER_NO_BROWSER:-}" ] || command -v chromium >/dev/null || need+=(chromium)
command -v rg >/dev/null || need+=(ripgrep)
dpkg -s libkrb5-dev >/dev/null 2>&1 || need+=(libkrb5-dev)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${need[@]}" >&2
fi

# @vscode/ripgrep checks this cache before it goes online: put Debian's rg there.
TMP="${TMPDIR:-/tmp}"
CACHE="$TMP/vscode-ripgrep-cache-1.15.11"
TARBALL="$CACHE/ripgrep-v13.0.0-10-x86_64-unknown-linux-musl.tar.gz"
if [ ! -f "$TARBALL" ]; then
  mkdir -p "$CACHE"
  STAGE="$(mktemp -d)"
  cp "$(command -v rg)" "$STAGE/rg"
  tar -C "$STAGE" -czf "$TARBALL" rg
  rm -rf "$STAGE"
fi

mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name":"sandboxvm-code-server","private":true}' > package.json
export npm_config_yes=true
npm install --no-audit --no-fund --unsafe-perm "code-server@$VERSION" >&2
"$BIN" --version >&2
echo "$BIN"
