#!/usr/bin/env bash
# Installs what building and testing mcp-authd needs on a fresh Debian machine:
# a C compiler (libdbus is built vendored), and for the tests a real Secret Service
# (D-Bus + gnome-keyring) that runs headless, and the tools the examples and the install
# tests use.
set -euo pipefail

need=()
command -v cc >/dev/null || need+=(build-essential)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v dbus-run-session >/dev/null || need+=(dbus)
[ "${1:-}" = "--tests" ] && {
  command -v gnome-keyring-daemon >/dev/null || need+=(gnome-keyring)
  command -v keyctl >/dev/null || need+=(keyutils)
  # systemd-analyze verifies the user units; systemd-socket-activate tests activation.
  command -v systemd-analyze >/dev/null || need+=(systemd)
  # The clients in examples/ run against a live daemon (tests/tests/examples.rs).
  command -v python3 >/dev/null || need+=(python3)
  command -v node >/dev/null || need+=(nodejs)
  command -v socat >/dev/null || need+=(socat)
  # The generated shell completions are syntax-checked by each shell, the man pages
  # rendered by groff (tests/tests/install.rs).
  command -v zsh >/dev/null || need+=(zsh)
  command -v fish >/dev/null || need+=(fish)
  command -v groff >/dev/null || need+=(groff-base)
  # Corporate networks (tests/tests/corporate_network.rs): a real HTTP proxy, and a test CA
  # whose certificate a socat TLS front serves.
  command -v tinyproxy >/dev/null || need+=(tinyproxy)
  command -v openssl >/dev/null || need+=(openssl)
  # The broker over a forwarded socket (tests/tests/forwarded_socket.rs): a real ssh -R.
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh >/dev/null || need+=(openssh-client)
}
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v cargo >/dev/null || {
  echo "setup: Rust is missing; install it from https://rustup.rs and run this again" >&2
  exit 1
}
