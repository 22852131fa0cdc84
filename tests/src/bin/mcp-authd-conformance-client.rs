//! The client command the official MCP conformance suite runs:
//! `mcp-authd-conformance-client <server-url>` (the suite appends the URL).
//!
//! It plays an MCP client that only speaks stdio, as users run one: it starts an isolated
//! mcp-authd (its own home, socket and file secret store, the browser stand-in as the
//! user's browser), starts `mcp-auth proxy <url>` and sends through it the calls the
//! scenario expects: initialize, tools/list and tools/call, or their stateless form when
//! `MCP_CONFORMANCE_PROTOCOL_VERSION` is 2026-07-28 or later. Pre-registered client
//! credentials come from `MCP_CONFORMANCE_CONTEXT`. Every authorization step is the
//! daemon's own doing.
//!
//! Exit status 0 when every call got a result, 1 otherwise (with the errors and the
//! daemon's log on stderr).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mcp_authd_tests::daemon::{DaemonHome, bin};
use serde_json::{Value, json};

/// The Client ID Metadata Document URL the suite's `auth/basic-cimd` expects.
const CLIENT_METADATA_URL: &str = "https://conformance-test.local/client-metadata.json";
const ANSWER_TIMEOUT: Duration = Duration::from_secs(40);

fn main() -> ExitCode {
    let Some(server) = std::env::args().skip(1).last() else {
        eprintln!("usage: mcp-authd-conformance-client <mcp-server-url>");
        return ExitCode::from(2);
    };
    let version =
        std::env::var("MCP_CONFORMANCE_PROTOCOL_VERSION").unwrap_or_else(|_| "2025-11-25".into());
    let context: Value = std::env::var("MCP_CONFORMANCE_CONTEXT")
        .ok()
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or(Value::Null);

    let home = DaemonHome::new("file", "");
    let extra = config(&server, &context, home.path());
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(home.path().join("config.toml"))
        .expect("config file");
    file.write_all(extra.as_bytes()).expect("write the config");
    let daemon = home.start(None);
    let mut proxy = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(daemon.socket())
        .args(["proxy", &server, "--login-timeout", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn mcp-auth proxy");
    let mut session = Session::new(&mut proxy);

    let stateless = !(version.starts_with("2024-") || version.starts_with("2025-"));
    let mut failures = Vec::new();
    let mut call = |session: &mut Session, method: &str, params: Value| {
        if let Err(e) = session.request(method, params) {
            failures.push(format!("{method}: {e}"));
        }
    };
    if stateless {
        let meta = json!({
            "io.modelcontextprotocol/protocolVersion": version,
            "io.modelcontextprotocol/clientCapabilities": {},
            "io.modelcontextprotocol/clientInfo": {"name": "mcp-authd-conformance-client", "version": env!("CARGO_PKG_VERSION")}
        });
        call(&mut session, "tools/list", json!({"_meta": meta}));
        call(
            &mut session,
            "tools/call",
            json!({"name": "test-tool", "arguments": {}, "_meta": meta}),
        );
    } else {
        call(
            &mut session,
            "initialize",
            json!({
                "protocolVersion": version,
                "capabilities": {},
                "clientInfo": {"name": "mcp-authd-conformance-client", "version": env!("CARGO_PKG_VERSION")}
            }),
        );
        session.notify("notifications/initialized");
        call(&mut session, "tools/list", json!({}));
        call(
            &mut session,
            "tools/call",
            json!({"name": "test-tool", "arguments": {}}),
        );
    }

    drop(session);
    let _ = proxy.wait();
    daemon.stop();
    if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        for f in &failures {
            eprintln!("conformance client: {f}");
        }
        let log = home.log_text();
        let lines: Vec<&str> = log.lines().collect();
        eprintln!(
            "--- mcp-authd log (last 60 lines) ---\n{}",
            lines[lines.len().saturating_sub(60)..].join("\n")
        );
        ExitCode::from(1)
    }
}

/// The daemon's config, as a user would write it for the scenario's server: our CIMD URL,
/// and the scenario's pre-registered client if any. Extension scenarios name the grant the
/// server expects (a user knows whether a server wants client credentials, a workload
/// token or the enterprise IdP); their keys and tokens go to files in the daemon's home,
/// which the config points at.
fn config(server: &str, context: &Value, home: &Path) -> String {
    let mut config = format!("client_metadata_url = \"{CLIENT_METADATA_URL}\"\n");
    let text = |key: &str| context.get(key).and_then(Value::as_str);
    let Some(id) = text("client_id") else {
        return config;
    };
    let secret_file = |name: &str, value: &str| {
        let path = home.join(name);
        std::fs::write(&path, value).expect("write a credential file");
        json!(path.display().to_string())
    };
    config.push_str(&format!(
        "[servers.\"{server}\"]\nclient_id = {}\n",
        json!(id)
    ));
    if let Some(secret) = text("client_secret") {
        config.push_str(&format!("client_secret = {}\n", json!(secret)));
        // A secret is sent only to the authorization server it is configured for; the
        // scenario names none, so read it from the server's metadata as a user would.
        if let Some(issuer) = issuer_of(server) {
            config.push_str(&format!("issuer = {}\n", json!(issuer)));
        }
    }
    match text("name").unwrap_or_default() {
        "auth/client-credentials-basic" => config.push_str("grant = \"client_credentials\"\n"),
        "auth/client-credentials-jwt" => {
            let key = secret_file(
                "client-key.pem",
                text("private_key_pem").unwrap_or_default(),
            );
            config.push_str(&format!(
                "grant = \"client_credentials\"\nprivate_key = {{ file = {key} }}\n"
            ));
            if let Some(alg) = text("signing_algorithm") {
                config.push_str(&format!("signing_algorithm = {}\n", json!(alg)));
            }
        }
        "auth/wif-jwt-bearer" => {
            let token = secret_file("workload-token.jwt", text("valid_jwt").unwrap_or_default());
            config.push_str(&format!(
                "grant = \"jwt_bearer\"\nassertion = {{ file = {token} }}\n"
            ));
        }
        "auth/enterprise-managed-authorization" => {
            let id_token =
                secret_file("idp-id-token.jwt", text("idp_id_token").unwrap_or_default());
            config.push_str(&format!(
                "grant = \"enterprise\"\n[servers.\"{server}\".enterprise]\nidp_token_endpoint = {}\nidp_client_id = {}\nid_token = {{ file = {id_token} }}\n",
                json!(text("idp_token_endpoint").unwrap_or_default()),
                json!(text("idp_client_id").unwrap_or_default()),
            ));
        }
        _ => {}
    }
    config
}

/// The first authorization server the server's protected resource metadata names (at the
/// path-based well-known URL, else the root one).
fn issuer_of(server: &str) -> Option<String> {
    let url = url::Url::parse(server).ok()?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    runtime.block_on(async {
        for prm in [
            format!("{origin}/.well-known/oauth-protected-resource{path}"),
            format!("{origin}/.well-known/oauth-protected-resource"),
        ] {
            let Ok(response) = reqwest::get(&prm).await.and_then(|r| r.error_for_status()) else {
                continue;
            };
            if let Ok(metadata) = response.json::<Value>().await
                && let Some(issuer) = metadata["authorization_servers"][0].as_str()
            {
                return Some(issuer.to_string());
            }
        }
        None
    })
}

/// The stdio side of the proxy: one JSON-RPC message per line each way.
struct Session {
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: i64,
}

impl Session {
    fn new(proxy: &mut Child) -> Session {
        let stdout = proxy.stdout.take().expect("proxy stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Session {
            stdin: proxy.stdin.take(),
            lines,
            next_id: 1,
        }
    }

    fn send(&mut self, message: &Value) -> Result<(), String> {
        let stdin = self.stdin.as_mut().ok_or("stdin closed")?;
        writeln!(stdin, "{message}").map_err(|e| format!("cannot write to the proxy: {e}"))
    }

    fn notify(&mut self, method: &str) {
        let _ = self.send(&json!({"jsonrpc": "2.0", "method": method}));
    }

    /// Sends a request and waits for its answer; other messages are skipped.
    fn request(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))?;
        loop {
            let line = self
                .lines
                .recv_timeout(ANSWER_TIMEOUT)
                .map_err(|_| format!("no answer within {ANSWER_TIMEOUT:?}"))?;
            let Ok(message) = serde_json::from_str::<Value>(&line) else {
                return Err(format!("the proxy wrote a line that is not JSON: {line}"));
            };
            if message.get("id") != Some(&json!(id)) || message.get("method").is_some() {
                continue;
            }
            if let Some(error) = message.get("error") {
                return Err(error.to_string());
            }
            return Ok(message.get("result").cloned().unwrap_or(Value::Null));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Closing stdin is how a stdio MCP client says goodbye.
        self.stdin.take();
    }
}
