#!/usr/bin/env python3
"""Prints an access token from mcp-authd for the MCP server URL given as the argument.
Standard library only. Exit codes as mcp-auth's: 0 token printed, 1 other error,
3 mcp-authd not running, 4 not logged in (the command to run goes to stderr)."""
import json, os, socket, stat, struct, sys

def socket_path():  # the daemon's order: ipc-proto/PROTOCOL.md, "Transport"
    if os.environ.get("MCP_AUTHD_SOCKET"):
        return os.environ["MCP_AUTHD_SOCKET"]
    if os.environ.get("XDG_RUNTIME_DIR"):
        return os.path.join(os.environ["XDG_RUNTIME_DIR"], "mcp-authd", "mcp-authd.sock")
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"mcp-authd-{os.geteuid()}", "mcp-authd.sock")

def untrusted(path, conn):
    """Why what listens at `path` may not be our own daemon (PROTOCOL.md, "Trusting the
    socket"), or None. Checked before a byte is sent."""
    directory = os.path.dirname(path) or "."
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        return f"the socket's directory {directory} is a symbolic link"
    if st.st_uid != os.geteuid():
        return f"the socket's directory {directory} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})"
    if st.st_mode & 0o077:
        return f"the socket's directory {directory} is open to other users (mode {st.st_mode & 0o777:o}); only 700 is trusted"
    if sys.platform == "darwin":  # LOCAL_PEERCRED: struct xucred { u_int version; uid_t uid; ... }
        peer = struct.unpack_from("2I", conn.getsockopt(0, 0x001, 76))[1]
    else:  # SO_PEERCRED: struct ucred { pid_t pid; uid_t uid; gid_t gid; }
        peer = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[1]
    if peer != os.geteuid():
        return f"the process listening at {path} runs as uid {peer}, not as you (uid {os.geteuid()})"
    return None

if len(sys.argv) != 2:
    sys.exit("usage: token.py MCP_SERVER_URL")
path, conn = socket_path(), socket.socket(socket.AF_UNIX)
try:
    conn.connect(path)
except OSError as e:
    print(f"mcp-authd is not running (no answer at {path}: {e.strerror}); start it with `mcp-authd`", file=sys.stderr)
    sys.exit(3)
why = untrusted(path, conn)
if why:
    sys.exit(f"refusing to talk to {path}: {why}; nothing was sent to it")
with conn, conn.makefile("rw", encoding="utf-8") as f:
    f.write(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "token.get", "params": {"server": sys.argv[1]}}) + "\n")
    f.flush()
    reply = next((m for m in map(json.loads, f) if m.get("id") == 1), None)  # skip notifications
if reply is None:
    sys.exit("mcp-authd closed the connection without an answer; see its log")
error = reply.get("error")
if error and error.get("data", {}).get("kind") == "authorization_required":
    print(f"not logged in to {sys.argv[1]}; run: {error['data']['command']}", file=sys.stderr)
    sys.exit(4)
if error:
    sys.exit(f"mcp-authd: {error['message']}")
print(reply["result"]["access_token"])
