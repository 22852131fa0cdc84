#!/usr/bin/env bash
# Sets up a fresh Debian machine, builds mcp-authd and mcp-auth (release), and runs the
# daemon in the foreground. Extra arguments go to mcp-authd (e.g. --socket PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
cargo build --release --locked --bin mcp-authd --bin mcp-auth
echo "mcp-authd: use the CLI from another terminal: $(pwd)/target/release/mcp-auth status" >&2
exec target/release/mcp-authd "$@"
