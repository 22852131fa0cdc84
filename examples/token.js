#!/usr/bin/env node
// Prints an access token from mcp-authd for the MCP server URL given as the argument.
// No dependencies (Node 16 or newer). Exit codes as mcp-auth's: 0 token printed, 1 other
// error, 3 mcp-authd not running, 4 not logged in (the command to run goes to stderr).
const net = require("node:net"), path = require("node:path"), fs = require("node:fs");
const env = process.env, server = process.argv[2];
if (process.argv.length !== 3) { console.error("usage: token.js MCP_SERVER_URL"); process.exit(1); }
// The daemon's order: ipc-proto/PROTOCOL.md, "Transport".
const socketPath = env.MCP_AUTHD_SOCKET
  || (env.XDG_RUNTIME_DIR && path.join(env.XDG_RUNTIME_DIR, "mcp-authd", "mcp-authd.sock"))
  || path.join(env.TMPDIR || "/tmp", `mcp-authd-${process.geteuid()}`, "mcp-authd.sock");
// Why what listens at the socket may not be our own daemon (PROTOCOL.md, "Trusting the
// socket"), or null. Node has no call for the peer's credentials: in a directory only we
// can write to, the owner of the socket file (the uid that bound it) stands in for them.
function untrusted() {
  const dir = path.dirname(socketPath), me = process.geteuid(), st = fs.lstatSync(dir);
  if (st.isSymbolicLink()) return `the socket's directory ${dir} is a symbolic link`;
  if (st.uid !== me) return `the socket's directory ${dir} belongs to uid ${st.uid}, not to you (uid ${me})`;
  if (st.mode & 0o077) return `the socket's directory ${dir} is open to other users (mode ${(st.mode & 0o777).toString(8)}); only 700 is trusted`;
  const owner = fs.statSync(socketPath).uid;
  if (owner !== me) return `the socket ${socketPath} was made by uid ${owner}, not by you (uid ${me})`;
  return null;
}
let done = false;
const finish = (code, stream, text) => { // the first outcome wins; later events are ignored
  if (!done) { done = true; process.exitCode = code; stream.write(text + "\n"); conn.destroy(); }
};
const conn = net.createConnection(socketPath, () => {
  const why = untrusted();
  if (why) return finish(1, process.stderr, `refusing to talk to ${socketPath}: ${why}; nothing was sent to it`);
  conn.write(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "token.get", params: { server } }) + "\n");
});
conn.on("error", (e) => finish(3, process.stderr,
  `mcp-authd is not running (no answer at ${socketPath}: ${e.code}); start it with \`mcp-authd\``));
conn.on("close", () => finish(1, process.stderr, "mcp-authd closed the connection without an answer; see its log"));
let buffered = "";
conn.setEncoding("utf8").on("data", (chunk) => {
  const lines = (buffered += chunk).split("\n");
  buffered = lines.pop(); // an unfinished line waits for the next chunk
  for (const line of lines.filter((l) => l.trim())) {
    const reply = JSON.parse(line), error = reply.error;
    if (reply.id !== 1) continue; // a notification
    if (error?.data?.kind === "authorization_required")
      finish(4, process.stderr, `not logged in to ${server}; run: ${error.data.command}`);
    else if (error) finish(1, process.stderr, `mcp-authd: ${error.message}`);
    else finish(0, process.stdout, reply.result.access_token);
  }
});
