//! `mcp-auth proxy`, `mcp-auth headers` and `token.challenge`, end to end: the real
//! binaries, the test authorization server and protected MCP server on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mcp_authd_ipc::methods::{ChallengeParams, TOKEN_CHALLENGE, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::{Value, json};

/// A running `mcp-auth proxy` with its stdio.
struct Proxy {
    child: Child,
    stdin: Option<std::process::ChildStdin>,
    lines: mpsc::Receiver<String>,
    next_id: i64,
}

impl Proxy {
    fn start(d: &Daemon, url: &str) -> Proxy {
        Proxy::start_with(d, url, &[], &[])
    }

    /// The proxy with extra arguments and environment variables.
    fn start_with(d: &Daemon, url: &str, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut child = Command::new(bin("mcp-auth"))
            .arg("--socket")
            .arg(d.socket())
            .args(["proxy", url])
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the proxy");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Proxy {
            stdin: child.stdin.take(),
            child,
            lines,
            next_id: 1,
        }
    }

    fn send(&mut self, message: Value) {
        writeln!(self.stdin.as_mut().unwrap(), "{message}").unwrap();
    }

    /// Sends a request; returns its response (every stdout line must be JSON-RPC).
    fn request(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.send(json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}));
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("an answer from the proxy");
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout carried a non-JSON line ({e}): {line}"));
            assert_eq!(message["jsonrpc"], "2.0", "{line}");
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    /// Closes stdin and waits; returns the exit status and what went to stderr.
    fn finish(mut self) -> (std::process::ExitStatus, String) {
        self.stdin.take();
        let out = self.child.wait_with_output().expect("proxy exits");
        let rest: Vec<String> = self.lines.try_iter().collect();
        assert!(
            rest.iter()
                .all(|l| serde_json::from_str::<Value>(l).is_ok()),
            "non-JSON on stdout: {rest:?}"
        );
        (
            out.status,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

fn initialize(p: &mut Proxy) -> Value {
    let r = p.request(
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
    );
    p.send(json!({"jsonrpc": "2.0", "method": "notifications/initialized"}));
    r
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_logs_in_once_and_bridges_stdio() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start(&d, mcp.url());
    let init = initialize(&mut p);
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    let list = p.request("tools/list", json!({}));
    assert_eq!(list["result"]["tools"][0]["name"], "whoami", "{list}");
    let call = p.request("tools/call", json!({"name": "whoami", "arguments": {}}));
    assert_eq!(call["result"]["content"][0]["text"], "ok", "{call}");
    // The proxy holds an access token for its whole life: it writes no core file.
    let core = mcp_authd_tests::procfs::core_limits(p.child.id());
    assert_eq!(core, ("0".into(), "0".into()));
    let (status, stderr) = p.finish();
    assert!(status.success(), "{stderr}");

    assert_eq!(auth.counts().authorizations, 1, "one browser login");
    assert!(
        mcp.authorized_requests() >= 4,
        "every request carried the token"
    );

    // A second proxy reuses the grant: no login.
    let mut p = Proxy::start(&d, mcp.url());
    initialize(&mut p);
    assert!(p.request("tools/list", json!({}))["result"].is_object());
    p.finish();
    assert_eq!(auth.counts().authorizations, 1);

    // `mcp-auth headers` prints what Claude Code's headersHelper wants, and it works.
    let headers: Value = serde_json::from_str(&d.cli_ok(&["headers", mcp.url()])).unwrap();
    let bearer = headers["Authorization"].as_str().unwrap();
    assert!(bearer.starts_with("Bearer "), "{headers}");
    let status = reqwest::Client::new()
        .post(mcp.url())
        .header("authorization", bearer)
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_sse_answers_the_server_stream_and_delete() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            streaming: true,
            ..Default::default()
        },
    )
    .await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start(&d, mcp.url());
    initialize(&mut p);
    // The server insists on the session id and the negotiated version, and answers in SSE.
    let list = p.request("tools/list", json!({}));
    assert_eq!(list["result"]["tools"][0]["name"], "whoami", "{list}");
    // The server stream's notification reaches stdout.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let line = p
            .lines
            .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
            .expect("the server stream's notification");
        let m: Value = serde_json::from_str(&line).unwrap();
        if m["method"] == "notifications/message" {
            break;
        }
    }
    let (status, stderr) = p.finish();
    assert!(status.success(), "{stderr}");
    assert!(mcp.streams_opened() >= 1);
    assert_eq!(mcp.sessions_deleted(), 1, "DELETE on exit");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_403_steps_up_with_the_union_of_scopes() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            required_scopes: vec!["mcp:read".into(), "mcp:write".into()],
            challenge_scope: Some("mcp:read".into()),
            ..Default::default()
        },
    )
    .await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start(&d, mcp.url());
    let init = initialize(&mut p);
    assert!(
        init["result"].is_object(),
        "401, login, 403, step-up, retry: {init}"
    );
    let (status, stderr) = p.finish();
    assert!(status.success(), "{stderr}");

    assert_eq!(
        auth.counts().authorizations,
        2,
        "the login, then one step-up"
    );
    let scope = auth.last_authorize_params().unwrap()["scope"].clone();
    let scopes: Vec<&str> = scope.split(' ').collect();
    assert!(
        scopes.contains(&"mcp:read") && scopes.contains(&"mcp:write"),
        "step-up asked for the union, got `{scope}`"
    );
    let grants: Value = serde_json::from_str(&d.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(grants["grants"].as_array().unwrap().len(), 1, "{grants}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_that_keeps_refusing_does_not_cause_a_login_loop() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            always_insufficient: true,
            ..Default::default()
        },
    )
    .await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start(&d, mcp.url());
    for _ in 0..4 {
        let r = p.request("tools/list", json!({}));
        assert!(r["error"].is_object(), "{r}");
    }
    let (status, stderr) = p.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("still refuses for lack of scope"),
        "the user is told why: {stderr}"
    );
    assert_eq!(
        auth.counts().authorizations,
        2,
        "the first login and one step-up, then no more"
    );
    d.cli_ok(&["status"]);
}

async fn challenge(d: &Daemon, params: ChallengeParams) -> Result<TokenGetResult, ClientError> {
    let mut client = Client::connect(d.socket()).await?;
    client.call(TOKEN_CHALLENGE, &params).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_refreshes_once_and_only_for_the_current_token() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    // Only the refreshes the challenges cause are counted.
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start(None);

    // Nobody logged in, not interactive: the caller is told the command.
    let e = challenge(
        &d,
        ChallengeParams {
            server: url.clone(),
            status: 401,
            www_authenticate: Some("Bearer scope=\"mcp:read\"".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    match e {
        ClientError::Rpc(e) => {
            assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired));
            assert!(e.message.contains("mcp-auth login"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }

    // Five callers hit the 401 at once, interactively: one login for all of them.
    let calls = (0..5).map(|_| {
        let socket = d.socket().to_path_buf();
        let url = url.clone();
        tokio::spawn(async move {
            let mut client = Client::connect(&socket).await.unwrap();
            let params = ChallengeParams {
                server: url,
                status: 401,
                interactive: Some(true),
                ..Default::default()
            };
            client
                .call::<_, TokenGetResult>(TOKEN_CHALLENGE, &params)
                .await
        })
    });
    let mut tokens = Vec::new();
    for c in calls {
        tokens.push(std::mem::take(
            &mut c.await.unwrap().expect("a token").access_token,
        ));
    }
    assert_eq!(
        auth.counts().authorizations,
        1,
        "one login for five callers"
    );
    let first = tokens[0].clone();
    assert!(tokens.iter().all(|t| *t == first));

    // The server rejects the current token: one refresh, a new token, no login.
    let renewed = challenge(
        &d,
        ChallengeParams {
            server: url.clone(),
            status: 401,
            www_authenticate: Some("Bearer error=\"invalid_token\"".into()),
            rejected_token: Some(first.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_ne!(renewed.access_token, first);
    assert_eq!(auth.counts().refreshes, 1);

    // A caller that still holds the old token gets the new one without another refresh.
    let again = challenge(
        &d,
        ChallengeParams {
            server: url.clone(),
            status: 401,
            rejected_token: Some(first),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(again.access_token, renewed.access_token);
    assert_eq!(auth.counts().refreshes, 1);
    assert_eq!(auth.counts().authorizations, 1);
}

/// Runs `mcp-auth proxy URL ARGS` with one initialize; its exit status and stderr.
fn proxy_refuses(d: &Daemon, url: &str, args: &[&str]) -> (std::process::ExitStatus, String) {
    let out = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(d.socket())
        .args(["proxy", url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the proxy");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn headers_from_the_flag_and_the_config_reach_the_server() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let config = format!(
        "[servers.\"{}\"]\nheaders = {{ \"X-Team\" = \"blue\", \"X-Both\" = \"from-config\" }}\n",
        mcp.url()
    );
    let home = DaemonHome::new("file", &config);
    let d = home.start(None);

    let mut p = Proxy::start_with(
        &d,
        mcp.url(),
        &[
            "--header",
            "X-Trace: run-${TRACE_ID}",
            "--header",
            "x-both:from-flag",
        ],
        &[("TRACE_ID", "42")],
    );
    initialize(&mut p);
    let call = p.request("tools/call", json!({"name": "whoami", "arguments": {}}));
    assert_eq!(call["result"]["content"][0]["text"], "ok", "{call}");
    let (status, stderr) = p.finish();
    assert!(status.success(), "{stderr}");

    // Every request carried them, the ones before the login too.
    let requests = mcp.header_values("x-trace").len();
    assert!(requests >= 3, "{requests}");
    assert_eq!(mcp.header_values("x-trace"), vec!["run-42"; requests]);
    assert_eq!(mcp.header_values("x-team"), vec!["blue"; requests]);
    // The flag replaces the config's header of the same name.
    assert_eq!(mcp.header_values("x-both"), vec!["from-flag"; requests]);
    // Header values may be credentials: the daemon's log (TRACE) and the proxy's stderr
    // carry none of them.
    for value in ["blue", "from-config", "run-42"] {
        assert!(
            !home.log_text().contains(value),
            "{value} in the daemon log"
        );
        assert!(!stderr.contains(value), "{value} on stderr");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_or_reserved_headers_are_refused_before_anything_is_sent() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    for (arg, says) in [
        ("Authorization: Bearer abc", "sends the access token itself"),
        ("authorization:x", "sends the access token itself"),
        ("Mcp-Session-Id: 1", "the transport sets it"),
        ("Bad Name: x", "not a valid HTTP header name"),
        ("Bearer abc", "is not `Name: value`"),
        (
            "X-Key: ${MCP_AUTH_TEST_UNSET_VAR}",
            "`MCP_AUTH_TEST_UNSET_VAR` is not set",
        ),
    ] {
        let (status, stderr) = proxy_refuses(&d, mcp.url(), &["--header", arg]);
        assert_eq!(status.code(), Some(1), "{arg}: {stderr}");
        assert!(stderr.contains(says), "{arg}: {stderr}");
        assert!(!stderr.contains("abc"), "the value is not echoed: {stderr}");
    }
    assert_eq!(mcp.header_values("x-key").len(), 0);
    assert!(
        mcp.header_values("accept").is_empty(),
        "nothing reached the server"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_falls_back_to_http_sse_through_a_login() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            legacy_sse: true,
            ..McpOptions::default()
        },
    )
    .await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start_with(&d, mcp.url(), &["--header", "X-Team: blue"], &[]);
    let init = initialize(&mut p);
    assert_eq!(init["result"]["serverInfo"]["name"], "test-mcp", "{init}");
    let list = p.request("tools/list", json!({}));
    assert_eq!(list["result"]["tools"][0]["name"], "whoami", "{list}");
    // A token the server stops accepting mid-session: the POST to the endpoint gets 401,
    // the daemon refreshes, the message goes again and its answer comes on the stream.
    auth.invalidate_access_tokens();
    let call = p.request("tools/call", json!({"name": "whoami", "arguments": {}}));
    assert_eq!(call["result"]["content"][0]["text"], "ok", "{call}");
    assert_eq!(auth.counts().refreshes, 1);
    let (status, stderr) = p.finish();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("refused Streamable HTTP (HTTP 404)"),
        "{stderr}"
    );

    // The GET was challenged (401), the daemon logged in once, the stream was opened
    // with the token, and every message POSTed to the endpoint carried it.
    assert_eq!(auth.counts().authorizations, 1);
    assert_eq!(mcp.streams_opened(), 1);
    assert!(
        mcp.authorized_requests() >= 5,
        "{}",
        mcp.authorized_requests()
    );
    assert!(mcp.header_values("x-team").len() >= 5);

    // http-only does not fall back: the request gets the server's refusal.
    let mut p = Proxy::start_with(&d, mcp.url(), &["--transport", "http-only"], &[]);
    let init = initialize(&mut p);
    let message = init["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 404"), "{init}");
    p.finish();
    assert_eq!(mcp.streams_opened(), 1);

    // sse-only goes straight to the stream. A request sent just before stdin closes still
    // gets its answer, which comes on the stream after the POST.
    let mut p = Proxy::start_with(&d, mcp.url(), &["--transport", "sse-only"], &[]);
    assert!(initialize(&mut p)["result"].is_object());
    p.send(json!({"jsonrpc": "2.0", "id": 99, "method": "tools/call",
                  "params": {"name": "whoami", "arguments": {}}}));
    p.stdin.take();
    let last: Value =
        serde_json::from_str(&p.lines.recv_timeout(Duration::from_secs(30)).unwrap()).unwrap();
    assert_eq!(last["id"], 99, "{last}");
    assert_eq!(last["result"]["content"][0]["text"], "ok", "{last}");
    p.finish();
    assert_eq!(mcp.streams_opened(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_first_falls_back_to_streamable_http_and_sse_only_does_not() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    // The GET is challenged first (a login), then refused with 405: Streamable HTTP.
    let mut p = Proxy::start_with(&d, mcp.url(), &["--transport", "sse-first"], &[]);
    assert!(initialize(&mut p)["result"].is_object());
    let call = p.request("tools/call", json!({"name": "whoami", "arguments": {}}));
    assert_eq!(call["result"]["content"][0]["text"], "ok", "{call}");
    let (_, stderr) = p.finish();
    assert!(
        stderr.contains("refused the HTTP+SSE transport (HTTP 405)"),
        "{stderr}"
    );
    assert_eq!(auth.counts().authorizations, 1);

    let mut p = Proxy::start_with(&d, mcp.url(), &["--transport", "sse-only"], &[]);
    let init = initialize(&mut p);
    let message = init["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("HTTP 405"), "{init}");
    assert!(message.contains("--transport http-only"), "{init}");
    p.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_endpoint_on_another_origin_gets_neither_messages_nor_the_token() {
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let port = elsewhere.local_addr().unwrap().port();
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            legacy_sse: true,
            legacy_endpoint: Some(format!("http://127.0.0.1:{port}/messages")),
            ..McpOptions::default()
        },
    )
    .await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start(&d, mcp.url());
    let init = initialize(&mut p);
    let message = init["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("another origin"), "{init}");
    p.finish();
    assert!(
        elsewhere.accept().is_err(),
        "the other origin was contacted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_passes_a_fixed_callback_port_to_the_login_it_causes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
        .to_string();
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut p = Proxy::start_with(&d, mcp.url(), &["--callback-port", &port], &[]);
    assert!(initialize(&mut p)["result"].is_object());
    p.finish();
    // The port is the user's; without --callback-path the dynamic registration keeps its
    // authorization server's own path (`/callback/<16 hex digits>`, against mix-ups).
    let registered = auth.registrations()[0]["redirect_uris"][0]
        .as_str()
        .unwrap()
        .to_string();
    let prefix = format!("http://127.0.0.1:{port}/callback/");
    let own = registered
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{registered}"));
    assert!(
        own.len() == 16 && own.chars().all(|c| c.is_ascii_hexdigit()),
        "{registered}"
    );
}
