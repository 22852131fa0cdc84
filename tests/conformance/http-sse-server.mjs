// An MCP server on the official TypeScript SDK's HTTP+SSE transport (2024-11-05), for
// scripts/conformance.sh: `mcp-auth proxy` must fall back to it from Streamable HTTP and
// pass its custom headers. GET /mcp opens the stream, POST /messages?sessionId=… carries
// messages, POST /mcp is 404 (as on every server without Streamable HTTP). Every request
// must carry `X-Team: blue` (else 403). Prints the port on stdout, then serves until killed.
import http from "node:http";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { SSEServerTransport } from "@modelcontextprotocol/sdk/server/sse.js";

const sessions = new Map();

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, "http://127.0.0.1");
  if (req.headers["x-team"] !== "blue") {
    res.writeHead(403).end("missing X-Team header");
    return;
  }
  if (req.method === "GET" && url.pathname === "/mcp") {
    const transport = new SSEServerTransport("/messages", res);
    sessions.set(transport.sessionId, transport);
    res.on("close", () => sessions.delete(transport.sessionId));
    const mcp = new McpServer({ name: "sdk-http-sse", version: "1.0.0" });
    mcp.tool("whoami", async () => ({ content: [{ type: "text", text: "ok from the SDK" }] }));
    await mcp.connect(transport);
    return;
  }
  if (req.method === "POST" && url.pathname === "/messages") {
    const transport = sessions.get(url.searchParams.get("sessionId"));
    if (!transport) {
      res.writeHead(404).end("unknown session");
      return;
    }
    await transport.handlePostMessage(req, res);
    return;
  }
  res.writeHead(404).end("not found");
});

server.listen(0, "127.0.0.1", () => {
  console.log(server.address().port);
});
