#!/usr/bin/env node
// Prints an access token from mcp-authd for the MCP server URL given as the argument.
// No dependencies (Node 16 or newer). Exit codes as mcp-auth's: 0 token printed, 1 other
// error, 3 mcp-authd not running, 4 not logged in (the command to run goes to stderr).
const net = require("node:net"), path = require("node:path");
const env = process.env, server = process.argv[2];
if (process.argv.length !== 3) { console.error("usage: token.js MCP_SERVER_URL"); process.exit(1); }
// The daemon's order: ipc-proto/PROTOCOL.md, "Transport".
const socketPath = env.MCP_AUTHD_SOCKET
  || (env.XDG_RUNTIME_DIR && path.join(env.XDG_RUNTIME_DIR, "mcp-authd", "mcp-authd.sock"))
  || path.join(env.TMPDIR || "/tmp", `mcp-authd-${process.geteuid()}`, "mcp-authd.sock");
let done = false;
const finish = (code, stream, text) => { // the first outcome wins; later events are ignored
  if (!done) { done = true; process.exitCode = code; stream.write(text + "\n"); conn.destroy(); }
};
const conn = net.createConnection(socketPath, () =>
  conn.write(JSON.stringify({ jsonrpc: "2.0", id: 1, method: "token.get", params: { server } }) + "\n"));
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
