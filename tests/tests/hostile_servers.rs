//! Hostile and broken servers during discovery, each started by the test as a raw HTTP
//! server on 127.0.0.1: every login against one fails with a clear error in bounded time,
//! and a healthy grant beside them keeps working.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::{
    GRANTS_LIST, GrantsList, LOGIN, LoginParams, TOKEN_GET, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// What the hostile server answers for a path.
enum Reply {
    /// Status, content type, body.
    Body(u16, &'static str, String),
    /// 200 with no length, then this many bytes of JSON-ish filler until close.
    Endless(usize),
    /// 200 headers, then one byte every half second, forever.
    Trickle,
    /// 302 to another host.
    Redirect(&'static str),
}

/// A raw HTTP/1.1 server answering each request through `route(base, path)`.
async fn hostile(route: fn(&str, &str) -> Reply) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = Arc::new(base.clone());
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                let _ = serve(conn, &b, route).await;
            });
        }
    });
    base
}

async fn serve(
    mut conn: TcpStream,
    base: &str,
    route: fn(&str, &str) -> Reply,
) -> std::io::Result<()> {
    // Read the head and any body, so closing never resets the client's request.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    match route(base, &path) {
        Reply::Body(status, content_type, body) => {
            // `unnamed…` servers name no metadata: the daemon probes the well-known URLs.
            let extra = if status == 401 && !path.starts_with("/unnamed") {
                let case = path.split('/').nth(1).unwrap_or("");
                format!("WWW-Authenticate: Bearer resource_metadata=\"{base}/{case}/prm\"\r\n")
            } else {
                String::new()
            };
            conn.write_all(
                format!(
                    "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            )
            .await?;
        }
        Reply::Endless(total) => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n{\"resource\":\"",
            )
            .await?;
            let filler = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            while sent < total {
                conn.write_all(&filler).await?;
                sent += filler.len();
            }
        }
        Reply::Trickle => {
            TRICKLING.notify_one();
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            )
            .await?;
            loop {
                conn.write_all(b" ").await?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Reply::Redirect(to) => {
            conn.write_all(
                format!("HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        }
    }
    conn.shutdown().await
}

/// Every case lives under `/<case>/`: `/<case>/mcp` challenges with `/<case>/prm`.
fn route(base: &str, path: &str) -> Reply {
    let json = |v: serde_json::Value| Reply::Body(200, "application/json", v.to_string());
    if path.starts_with("/.well-known/oauth-protected-resource/unnamed503/") {
        // Down for a moment: not the same as having no metadata.
        return Reply::Body(503, "text/plain", "try again".into());
    }
    let case = path.split('/').nth(1).unwrap_or("");
    if path.ends_with("/mcp") {
        return Reply::Body(401, "application/json", "{}".into());
    }
    let prm = serde_json::json!({
        "resource": format!("{base}/{case}/mcp"),
        "authorization_servers": [format!("{base}/{case}")],
    });
    let as_metadata = |token_endpoint: String, issuer: String| {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{base}/{case}/authorize"),
            "token_endpoint": token_endpoint,
            "registration_endpoint": format!("{base}/{case}/register"),
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
        })
    };
    match (case, path.ends_with("/prm")) {
        ("huge", true) => Reply::Endless(8 * 1024 * 1024),
        ("slow", true) => Reply::Trickle,
        ("html", true) => Reply::Body(200, "text/html", "<html><body>Sign in</body></html>".into()),
        ("badjson", true) => Reply::Body(200, "application/json", "{\"resource\": [1, 2".into()),
        ("redirect", true) => Reply::Redirect("http://evil.example/prm"),
        ("badscope", true) => json(serde_json::json!({
            "resource": format!("{base}/badscope/mcp"),
            "authorization_servers": [format!("{base}/badscope")],
            "scopes_supported": ["files:read", "x\"; rm -rf ~"],
        })),
        (_, true) => json(prm),
        ("issuer", false) if path.contains("/.well-known/") => json(as_metadata(
            format!("{base}/issuer/token"),
            "https://other.example".into(),
        )),
        ("plainhttp", false) if path.contains("/.well-known/") => json(as_metadata(
            "http://as.example.com/token".into(),
            format!("{base}/plainhttp"),
        )),
        ("badclient", false) if path.contains("/.well-known/") => json(as_metadata(
            format!("{base}/badclient/token"),
            format!("{base}/badclient"),
        )),
        // A client id that would retitle the user's terminal wherever it is shown.
        ("badclient", false) if path.ends_with("/register") => Reply::Body(
            201,
            "application/json",
            serde_json::json!({"client_id": "\u{1b}]0;pwned\u{7}id"}).to_string(),
        ),
        _ => Reply::Body(404, "text/plain", "not found".into()),
    }
}

/// A daemon with one healthy grant, and the hostile server.
async fn setup() -> (AuthServer, McpServer, DaemonHome, Daemon, String) {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", mcp.url()]);
    let base = hostile(route).await;
    (auth, mcp, home, d, base)
}

/// Logs in to `/<case>/mcp`; returns the error text, insisting on exit code 7 in time.
fn failed_login(d: &Daemon, base: &str, case: &str, within: Duration) -> String {
    let started = Instant::now();
    let out = d.cli(&[
        "login",
        &format!("{base}/{case}/mcp"),
        "--no-browser",
        "--timeout",
        "5",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(7), "{case}: {out:?}");
    assert!(
        started.elapsed() < within,
        "{case}: took {:?}",
        started.elapsed()
    );
    stderr
}

fn healthy_still_works(d: &Daemon, mcp: &McpServer, auth: &AuthServer) {
    let token = d.cli_ok(&["token", mcp.url()]);
    assert!(auth.validate_access_token(token.trim(), mcp.url()).is_ok());
    let list = d.cli_ok(&["list"]);
    assert_eq!(
        list.lines().count(),
        2,
        "only the healthy grant exists: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_and_untrustworthy_discovery_answers_are_refused_clearly() {
    let (auth, mcp, _home, d, base) = setup().await;
    let d = Arc::new(d);
    let cases: [(&str, &str); 9] = [
        ("huge", "larger than 1048576 bytes"),
        ("html", "not the expected JSON"),
        ("badjson", "not the expected JSON"),
        ("redirect", "HTTP 302"),
        ("issuer", "names issuer `https://other.example`"),
        (
            "plainhttp",
            "the token endpoint `http://as.example.com/token` is plain http",
        ),
        ("unnamed503", "HTTP 503 for the protected resource metadata"),
        ("badscope", "lists an invalid scope"),
        ("badclient", "holds control characters"),
    ];
    for (case, expected) in cases {
        let (d2, base2) = (d.clone(), base.clone());
        let stderr = tokio::task::spawn_blocking(move || {
            failed_login(&d2, &base2, case, Duration::from_secs(10))
        })
        .await
        .unwrap();
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert!(
            !stderr.contains('\u{1b}'),
            "{case}: no escape reaches the terminal: {stderr:?}"
        );
    }
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || healthy_still_works(&d2, &mcp, &auth))
        .await
        .unwrap();
}

/// A server that sends its headers and then one byte every half second: the daemon gives
/// up after its 30 s request limit, and serves everyone else meanwhile.
///
/// The daemon runs in this process. Once the endless answer has begun and another client
/// has been served, the clock is paused, so the rest of the 30 s (tokio's time, as
/// reqwest's timeout keeps it) passes at once. Until then it runs: a paused clock jumps to
/// the next timer whenever the runtime waits (on a socket, on SQLite's thread), and would
/// end the answer while the other client is being served.
#[tokio::test]
async fn an_endless_slow_response_is_cut_off_in_bounded_time() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start_in_process().await;
    d.login(mcp.url()).await;
    let base = hostile(route).await;
    let socket = d.socket().to_path_buf();
    let asked = tokio::time::Instant::now();
    let slow = tokio::spawn(async move {
        let mut client = Client::connect(&socket).await.unwrap();
        let params = LoginParams {
            server: format!("{base}/slow/mcp"),
            open_browser: Some(false),
            timeout_secs: Some(5),
            ..Default::default()
        };
        let result = client.call::<_, Value>(LOGIN, &params).await;
        (result, tokio::time::Instant::now())
    });
    TRICKLING.notified().await;

    let started = Instant::now();
    let mut client = Client::connect(d.socket()).await.unwrap();
    let params = TokenGetParams {
        server: mcp.url().to_owned(),
        ..Default::default()
    };
    let token: TokenGetResult = client.call(TOKEN_GET, &params).await.unwrap();
    assert!(
        auth.validate_access_token(&token.access_token, mcp.url())
            .is_ok()
    );
    let grants: GrantsList = client.call(GRANTS_LIST, &Value::Null).await.unwrap();
    assert_eq!(grants.grants.len(), 1, "only the healthy grant exists");
    assert!(!slow.is_finished(), "served while the slow answer goes on");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "others are not held up"
    );

    tokio::time::pause();
    let (result, ended) = slow.await.unwrap();
    let Err(ClientError::Rpc(error)) = result else {
        panic!("the login fails: {result:?}");
    };
    assert_eq!(error.kind(), Some(ErrorKind::ServerError), "{error:?}");
    assert!(error.message.contains("no answer in time"), "{error:?}");
    let took = ended - asked;
    assert!(
        took >= Duration::from_secs(30) && took < Duration::from_secs(120),
        "cut off at the 30 s limit: {took:?}"
    );
}

/// Told when the endless answer has begun.
static TRICKLING: Notify = Notify::const_new();
