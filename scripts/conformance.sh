#!/usr/bin/env bash
# Runs the official MCP conformance suite (client auth/* scenarios, required and
# extensions) against mcp-authd:
# every scenario drives `mcp-auth proxy` through an isolated daemon
# (tests/src/bin/mcp-authd-conformance-client.rs). Installs what it needs: Node 24
# (scripts/node.sh; the suite needs Node >= 22) and the suite at the version pinned in
# tests/conformance/package-lock.json.
#
# Prints one line per scenario run and a tally (`N passed, M failed`); keeps every
# scenario's checks.json under target/conformance/. Exits non-zero on any failed check,
# warning or scenario error. Expects `cargo build --workspace` to have run.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/node.sh
conf=tests/conformance
node_install
npm_ci_pinned "$conf" @modelcontextprotocol/conformance
suite="$conf/node_modules/@modelcontextprotocol/conformance/dist/index.js"
client="$PWD/target/debug/mcp-authd-conformance-client"
[ -x "$client" ] || { echo "conformance: $client is missing; run cargo build --workspace" >&2; exit 1; }

out="$PWD/target/conformance/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out"

# scenario and the protocol revision it runs at. The core scenarios run at both wires
# (2025-11-25 stateful, 2026-07-28 stateless); back-compat at 2025-03-26; the rest were
# introduced by 2026-07-28.
runs=()
for s in metadata-default metadata-var1 metadata-var2 metadata-var3 basic-cimd \
         scope-from-www-authenticate scope-from-scopes-supported scope-omitted-when-undefined \
         scope-step-up scope-retry-limit token-endpoint-auth-basic token-endpoint-auth-post \
         token-endpoint-auth-none pre-registration; do
  runs+=("$s 2025-11-25" "$s 2026-07-28")
done
for s in token-endpoint-auth-basic token-endpoint-auth-post token-endpoint-auth-none; do
  runs+=("$s 2025-06-18")
done
runs+=("2025-03-26-oauth-metadata-backcompat 2025-03-26" "2025-03-26-oauth-endpoint-fallback 2025-03-26")
for s in resource-mismatch offline-access-scope offline-access-not-supported \
         authorization-server-migration iss-supported iss-not-advertised iss-supported-missing \
         iss-wrong-issuer iss-unexpected iss-normalized metadata-issuer-mismatch; do
  runs+=("$s 2026-07-28")
done

# Extension scenarios are on no spec timeline: they run without --spec-version.
for s in client-credentials-basic client-credentials-jwt enterprise-managed-authorization \
         wif-jwt-bearer dpop dpop-nonce; do
  runs+=("$s extension")
done

run_one() {
  local scenario=$1 version=$2 dir="$out/$1@$2" at=()
  mkdir -p "$dir"
  [ "$version" = extension ] || at=(--spec-version "$version")
  if "$node" "$suite" client --command "$client" --scenario "auth/$scenario" \
       "${at[@]}" --timeout 60000 -o "$dir" >"$dir/suite.log" 2>&1; then
    echo "PASS auth/$scenario @ $version"
  else
    echo "FAIL auth/$scenario @ $version (see $dir/suite.log)"
  fi
}
export -f run_one
export node suite client out

started=$(date +%s)
printf '%s\n' "${runs[@]}" | xargs -P "${CONFORMANCE_JOBS:-4}" -L 1 bash -c 'run_one "$@"' _ \
  | tee "$out/runs.txt"

# The tally counts checks across every scenario's checks.json (FAILURE and WARNING fail).
"$node" -e '
  const fs = require("fs"), path = require("path");
  const out = process.argv[1];
  let passed = 0, failed = 0, warnings = 0, files = 0;
  const walk = (d) => fs.readdirSync(d, { withFileTypes: true }).forEach((e) => {
    const p = path.join(d, e.name);
    if (e.isDirectory()) return walk(p);
    if (e.name !== "checks.json") return;
    files++;
    for (const c of JSON.parse(fs.readFileSync(p, "utf8"))) {
      if (c.status === "SUCCESS") passed++;
      else if (c.status === "FAILURE") { failed++; console.log(`  FAILURE ${c.id} in ${p}: ${c.description}`); }
      else if (c.status === "WARNING") { warnings++; console.log(`  WARNING ${c.id} in ${p}: ${c.description}`); }
    }
  });
  walk(out);
  const summary = { scenario_runs: files, checks_passed: passed, checks_failed: failed, warnings };
  fs.writeFileSync(path.join(out, "summary.json"), JSON.stringify(summary, null, 2));
' "$out"

failed_runs=$(grep -c '^FAIL' "$out/runs.txt" || true)
passed_runs=$(grep -c '^PASS' "$out/runs.txt" || true)
checks=$("$node" -p 'const s=require(process.argv[1]); `${s.checks_passed} checks passed, ${s.checks_failed} failed, ${s.warnings} warnings`' "$out/summary.json")
echo "conformance: ${passed_runs} passed, ${failed_runs} failed (${checks}; $(( $(date +%s) - started )) s; results in ${out#$PWD/})"
# (`set -e` does not stop at the first test of an `&&` list: said explicitly.)
if [ "$failed_runs" -ne 0 ] || [ ${#runs[@]} -ne "$passed_runs" ]; then exit 1; fi

# Interop with the official TypeScript SDK's HTTP+SSE transport (2024-11-05): mcp-auth
# proxy tries Streamable HTTP, gets 404, falls back, and sends its --header on every
# request (the server answers 403 without it). No authorization here: the e2e tests cover
# the fall back through a login against the test servers.
sse_dir="$out/http-sse-interop"
mkdir -p "$sse_dir"
"$node" "$conf/http-sse-server.mjs" >"$sse_dir/server.out" 2>"$sse_dir/server.err" &
sse_pid=$!
trap 'kill "$sse_pid" 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s "$sse_dir/server.out" ] && break; sleep 0.1; done
sse_port=$(head -1 "$sse_dir/server.out")
printf '%s\n' \
  '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2024-11-05","capabilities":{},"clientInfo":{"name":"interop","version":"0"}}}' \
  '{"jsonrpc":"2.0","method":"notifications/initialized"}' \
  '{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"whoami","arguments":{}}}' \
  | MCP_AUTHD_SOCKET="$sse_dir/no-daemon.sock" timeout 30 target/debug/mcp-auth proxy \
      "http://127.0.0.1:$sse_port/mcp" --header 'X-Team: blue' \
      >"$sse_dir/proxy.out" 2>"$sse_dir/proxy.err" || true
kill "$sse_pid" 2>/dev/null || true
if grep -q '"id":2,.*ok from the SDK' "$sse_dir/proxy.out" \
   && grep -q 'trying the HTTP+SSE transport' "$sse_dir/proxy.err"; then
  echo "PASS http-sse interop: mcp-auth proxy ↔ @modelcontextprotocol/sdk SSEServerTransport"
else
  echo "FAIL http-sse interop (see ${sse_dir#$PWD/})" >&2
  exit 1
fi
