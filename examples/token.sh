#!/bin/sh
# Prints an access token from mcp-authd for the MCP server URL given as the argument.
# Needs socat. Exit codes as mcp-auth's: 0 token printed, 1 other error, 3 mcp-authd not
# running, 4 not logged in (the command to run goes to stderr).
[ $# -eq 1 ] || { echo "usage: token.sh MCP_SERVER_URL" >&2; exit 1; }
case $1 in *[\"\\]*) echo "token.sh: a URL holds no \" or \\ (percent-encode them)" >&2; exit 1;; esac
# The daemon's order: ipc-proto/PROTOCOL.md, "Transport".
if [ -n "${MCP_AUTHD_SOCKET:-}" ]; then sock=$MCP_AUTHD_SOCKET
elif [ -n "${XDG_RUNTIME_DIR:-}" ]; then sock=$XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock
else sock=${TMPDIR:-/tmp}/mcp-authd-$(id -u)/mcp-authd.sock; fi
not_running() { echo "mcp-authd is not running (no answer at $sock); start it with \`mcp-authd\`" >&2; exit 3; }
[ -S "$sock" ] || not_running
# -t: once the request is sent, wait for the answer; the daemon closes the connection after it.
reply=$(printf '{"jsonrpc":"2.0","id":1,"method":"token.get","params":{"server":"%s"}}\n' "$1" |
  socat -t 300 - "UNIX-CONNECT:$sock") || not_running
[ -n "$reply" ] || { echo "mcp-authd closed the connection without an answer; see its log" >&2; exit 1; }
# The daemon writes compact JSON, and neither a token nor a command holds a quote.
field() { printf '%s\n' "$reply" | sed -n "s/.*\"$1\":\"\([^\"]*\)\".*/\1/p"; }
token=$(field access_token)
if [ -n "$token" ]; then printf '%s\n' "$token"; exit 0; fi
case $reply in *'"kind":"authorization_required"'*)
  echo "not logged in to $1; run: $(field command)" >&2; exit 4;; esac
echo "mcp-authd: $(field message)" >&2; exit 1
