#!/usr/bin/env bash
# Runs only the end-to-end tests against real, independently written servers
# (tests/tests/real_oidc_e2e.rs): panva's oidc-provider as the authorization server and the
# official MCP TypeScript SDK as the protected MCP server, started by tests/oidc/servers.mjs.
# Installs what they need: Node 24 (scripts/node.sh) and the npm packages at the versions
# tests/oidc/package-lock.json pins. scripts/test.sh installs the same and runs these tests
# with all the others.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=scripts/node.sh
source scripts/node.sh
node_install
npm_ci_pinned tests/oidc oidc-provider
cargo build --workspace --locked
# CI=true: a missing server fails the tests instead of skipping them.
CI=true cargo test -p mcp-authd-tests --locked --test real_oidc_e2e
