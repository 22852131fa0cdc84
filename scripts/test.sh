#!/usr/bin/env bash
# Sets up and runs every test: unit tests, and the end-to-end tests against the real
# binaries, once with the file secret store and once against a real Secret Service
# (gnome-keyring, unlocked, in a private D-Bus session).
set -euo pipefail
cd "$(dirname "$0")/.."
# CLI text that differs from its snapshot fails; nothing is written (README: snapshots).
export INSTA_UPDATE=no

bash scripts/setup.sh --tests
cargo build --workspace --locked
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo fmt --all -- --check

# The shipped user units, as a user would copy them (%h/.local/bin/mcp-authd must exist).
# Unknown keys are only warnings there, so any output counts as a failure.
if command -v systemd-analyze >/dev/null; then
  units_home="$(mktemp -d)"
  mkdir -p "$units_home/.local/bin" "$units_home/run"
  chmod 700 "$units_home/run"
  cp target/debug/mcp-authd "$units_home/.local/bin/"
  said="$(HOME="$units_home" XDG_RUNTIME_DIR="$units_home/run" \
    systemd-analyze --user verify systemd/mcp-authd.socket systemd/mcp-authd.service 2>&1)" || {
    echo "systemd-analyze verify failed: $said" >&2; exit 1; }
  [ -z "$said" ] || { echo "systemd-analyze verify: $said" >&2; exit 1; }
  rm -rf "$units_home"
  echo "systemd units verified"
else
  echo "NOTICE: systemd-analyze cannot run here; the user units were not verified" >&2
fi

# Node 24 (the conformance suite's) before the tests: the Node example runs with it too,
# and so do the real servers of tests/tests/real_oidc_e2e.rs (oidc-provider, the MCP SDK).
# shellcheck source=scripts/node.sh
source scripts/node.sh
node_install
npm_ci_pinned tests/oidc oidc-provider

runner=(cargo test --workspace --locked)
if cargo nextest --version >/dev/null 2>&1; then
  runner=(cargo nextest run --workspace --locked --no-fail-fast)
fi

keyring_home="$(mktemp -d)"
trap 'rm -rf "$keyring_home"' EXIT
# The keyring file goes to $XDG_DATA_HOME/keyrings: a fresh one per run.
# The keychain-restart test restarts gnome-keyring with the same password.
export MCP_AUTHD_TEST_KEYRING_PASSWORD=ci-throwaway-password
XDG_DATA_HOME="$keyring_home" MCP_AUTHD_TEST_KEYCHAIN=required \
  dbus-run-session -- keyctl session - bash -euo pipefail -c '
    echo -n "$MCP_AUTHD_TEST_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
    exec "$@"' bash "${runner[@]}"

# The official MCP conformance suite, every client auth/* scenario, through mcp-auth proxy.
bash scripts/conformance.sh

# A smoke run of every fuzz target (installs cargo-fuzz on first use); scripts/fuzz.sh
# without arguments is the longer local run.
bash scripts/fuzz.sh 60
