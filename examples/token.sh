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
# Only our own daemon (PROTOCOL.md, "Trusting the socket"): socat cannot read the peer's
# credentials, so the socket file's owner (the uid that bound it) stands in for them, which
# holds in a directory only we can write to.
refuse() { echo "refusing to talk to $sock: $1; nothing was sent to it" >&2; exit 1; }
me=$(id -u) dir=$(dirname -- "$sock")
[ -L "$dir" ] && refuse "the socket's directory $dir is a symbolic link"
set -f # the fields of ls below are split, never globbed
# shellcheck disable=SC2012 # ls -n is the portable way to read a numeric owner and mode
set -- "$1" $(ls -ldn -- "$dir")
[ "$4" = "$me" ] || refuse "the socket's directory $dir belongs to uid $4, not to you (uid $me)"
case $2 in d???------*) ;; *) refuse "the socket's directory $dir is open to other users ($2); only 700 is trusted";; esac
# shellcheck disable=SC2012
set -- "$1" $(ls -lLdn -- "$sock")
[ "$4" = "$me" ] || refuse "the socket $sock was made by uid $4, not by you (uid $me)"
set -- "$1"; set +f
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
