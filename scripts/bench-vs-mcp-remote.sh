#!/usr/bin/env bash
# mcp-auth proxy and mcp-remote side by side (tests/src/bin/mcp-authd-vs-mcp-remote.rs):
# cold start, memory per bridge, and 10 bridges through a token expiry. Installs Node
# (scripts/node.sh) and mcp-remote at the version pinned in tests/mcp-remote/package-lock.json,
# builds in release mode and prints the table. A benchmark, not a test: run it on a quiet
# machine. Arguments go to the bench (e.g. --runs 20, --no-lifetime).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/node.sh

node_install
npm_ci_pinned tests/mcp-remote mcp-remote
cargo build --release --workspace --locked
target/release/mcp-authd-vs-mcp-remote \
  --node "$node" \
  --mcp-remote "$PWD/tests/mcp-remote/node_modules/mcp-remote/dist/proxy.js" \
  --npx "$(dirname "$npm_cli")/npx-cli.js" "$@"
