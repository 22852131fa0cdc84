#!/usr/bin/env bash
# Installs what building and testing mcp-authd needs on a fresh Debian machine:
# a C compiler (libdbus is built vendored), and for the tests a real Secret Service
# (D-Bus + gnome-keyring) that runs headless.
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
