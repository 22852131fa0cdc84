#!/usr/bin/env bash
# Sets up and runs every test: unit tests, and the end-to-end tests against the real
# binaries, once with the file secret store and once against a real Secret Service
# (gnome-keyring, unlocked, in a private D-Bus session); the MCP conformance suite; a smoke
# run of every fuzz target. Ends with the time each stage took.
#
# Two jobs start in the background, at the lowest CPU priority, so that they use what the
# foreground leaves idle (the end-to-end tests mostly wait on sockets and timers) instead
# of adding to the wall-clock time: the fuzz targets' build, and the Node downloads. Each
# runs in a process group of its own: once the foreground waits for it, it gets its
# normal priority back (where we may raise it: as root), and a failure stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
# CLI text that differs from its snapshot fails; nothing is written (README: snapshots).
export INSTA_UPDATE=no

stages=()
started=$SECONDS
stage_start=$SECONDS
# `stage NAME`: the time since the previous mark goes to NAME.
stage() {
  stages+=("$(printf '%-40s %4d s' "$1" $((SECONDS - stage_start)))")
  stage_start=$SECONDS
}
background=()
# `finish PID`: waits for a background job, at normal priority from now on.
finish() {
  renice -n 0 -g "$1" >/dev/null 2>&1 || true
  wait "$1"
}
summary() {
  local status=$?
  for pid in "${background[@]}"; do kill -- "-$pid" 2>/dev/null || true; done
  [ -n "${keyring_home:-}" ] && rm -rf "$keyring_home"
  [ -n "${logs:-}" ] && rm -rf "$logs"
  echo "test.sh: time per stage (2 background jobs overlap the foreground)"
  printf '  %s\n' "${stages[@]}"
  printf '  %-40s %4d s (%d min %02d s)%s\n' total $((SECONDS - started)) \
    $(((SECONDS - started) / 60)) $(((SECONDS - started) % 60)) \
    "$([ "$status" -eq 0 ] || echo ", FAILED with $status")"
}
trap summary EXIT

bash scripts/setup.sh --tests
stage "setup (apt)"

logs="$(mktemp -d)"
# The fuzz targets are built in a workspace of their own (their own flags and target/):
# nothing it does waits for the main build.
setsid -w nice -n 19 bash scripts/fuzz.sh --build >"$logs/fuzz-build.log" 2>&1 &
fuzz_build=$!
background+=("$fuzz_build")
# Node 24 (the conformance suite's) and the pinned npm packages: the Node example runs with
# it too, and so do the real servers of tests/tests/real_oidc_e2e.rs (oidc-provider, the
# MCP SDK).
setsid -w nice -n 19 bash -euo pipefail -c '
  source scripts/node.sh
  node_install
  npm_ci_pinned tests/oidc oidc-provider
  npm_ci_pinned tests/conformance @modelcontextprotocol/conformance' >"$logs/node.log" 2>&1 &
node_setup=$!
background+=("$node_setup")

cargo build --workspace --locked
stage "cargo build"
cargo clippy --workspace --all-targets --locked -- -D warnings
stage "cargo clippy"
cargo fmt --all -- --check
stage "cargo fmt"

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
stage "systemd units"

finish "$node_setup" || { cat "$logs/node.log" >&2; echo "test.sh: installing Node failed" >&2; exit 1; }
stage "Node (rest of the background job)"

runner=(cargo test --workspace --locked)
if cargo nextest --version >/dev/null 2>&1; then
  # Two tests per core: the end-to-end tests mostly wait (on sockets, timers, the
  # processes they start), and the 282 took 200 s with one per core, 94–102 s with two,
  # on a shared 2-core machine. (The Secret Service tests still run one at a time:
  # .config/nextest.toml.)
  runner=(cargo nextest run --workspace --locked --no-fail-fast
          --test-threads "$((2 * $(nproc 2>/dev/null || echo 1)))")
fi
# The test binaries are what nextest would build first (the same `cargo test --no-run`):
# built here, their time shows apart from the tests'.
cargo test --workspace --locked --no-run
stage "build the tests"

keyring_home="$(mktemp -d)"
# The keyring file goes to $XDG_DATA_HOME/keyrings: a fresh one per run.
# The keychain-restart test restarts gnome-keyring with the same password.
export MCP_AUTHD_TEST_KEYRING_PASSWORD=ci-throwaway-password
XDG_DATA_HOME="$keyring_home" MCP_AUTHD_TEST_KEYCHAIN=required \
  dbus-run-session -- keyctl session - bash -euo pipefail -c '
    echo -n "$MCP_AUTHD_TEST_KEYRING_PASSWORD" | gnome-keyring-daemon --unlock --components=secrets >/dev/null
    exec "$@"' bash "${runner[@]}"
stage "tests (${runner[0]} ${runner[1]})"

# The official MCP conformance suite, every client auth/* scenario, through mcp-auth proxy.
bash scripts/conformance.sh
stage "conformance suite"

# A smoke run of every fuzz target (scripts/fuzz.sh without arguments is the longer local
# run); its build ran in the background.
finish "$fuzz_build" || { cat "$logs/fuzz-build.log" >&2; echo "test.sh: building the fuzz targets failed" >&2; exit 1; }
stage "fuzz build (rest of the background job)"
bash scripts/fuzz.sh 60
stage "fuzz smoke run"
