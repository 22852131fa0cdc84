//! TLS or loopback, nothing else: plain http to a host name that is not `localhost` — here
//! one that `/etc/hosts` maps to 127.0.0.1, so a connection would succeed — is refused by
//! `login`, `token.challenge`, `token` and `proxy` before any request reaches the server,
//! with an error naming the URL and the setting. `allow_insecure_http = true` lets a lab
//! server through with a warning on every use; a remote server still cannot steer the
//! daemon at loopback.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use mcp_authd_ipc::methods::{ChallengeParams, TOKEN_CHALLENGE, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer, host_alias};
use tokio::net::TcpListener;

/// A name that resolves to 127.0.0.1 but is not loopback by the URL.
const REMOTE_NAME: &str = "mcp-authd-remote.test";

/// A listener that only counts the connections made to it.
async fn counting_listener() -> (u16, Arc<AtomicU32>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let count = Arc::new(AtomicU32::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            drop(conn);
        }
    });
    (port, count)
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_to_a_remote_name_is_refused_before_any_request() {
    let name = host_alias(REMOTE_NAME);
    let (port, connections) = counting_listener().await;
    let url = format!("http://{name}:{port}/mcp");
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    // login
    let out = d.cli(&["login", &url, "--no-browser"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&url) && err.contains("allow_insecure_http") && err.contains("plain http"),
        "{err}"
    );

    // token (and headers): never a bearer token for such a URL
    let out = d.cli(&["token", &url]);
    assert!(!out.status.success() && out.stdout.is_empty());
    assert!(
        stderr(&out).contains("allow_insecure_http"),
        "{}",
        stderr(&out)
    );

    // token.challenge, as any client of the socket would send it
    let mut client = Client::connect(d.socket()).await.unwrap();
    let answer: Result<TokenGetResult, ClientError> = client
        .call(
            TOKEN_CHALLENGE,
            &ChallengeParams {
                server: url.clone(),
                status: 401,
                interactive: Some(true),
                open_browser: Some(false),
                ..Default::default()
            },
        )
        .await;
    match answer {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.kind(), Some(ErrorKind::InvalidParams), "{e:?}");
            assert!(
                e.message.contains(&url) && e.message.contains("allow_insecure_http"),
                "{e:?}"
            );
        }
        other => panic!("token.challenge over plain http was not refused: {other:?}"),
    }

    // proxy: refused before the first message is sent
    let mut proxy = Command::new(bin("mcp-auth"))
        .args(["--socket"])
        .arg(d.socket())
        .args(["proxy", &url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = proxy.stdin.take().unwrap();
    let _ = stdin.write_all(
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-11-25\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"1\"}}}\n",
    );
    drop(stdin);
    let out = proxy.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&url) && err.contains("allow_insecure_http"),
        "{err}"
    );

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no request may reach a plain-http server on a remote name"
    );
    // Loopback stays allowed by name and by address, as every other test relies on.
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            host: Some("localhost".into()),
            ..Default::default()
        },
    )
    .await;
    d.cli_ok(&["login", mcp.url()]);
}

/// `allow_insecure_http = true` under the server's URL: a lab server on a remote name (MCP
/// server and authorization server both plain http) works, and every use warns — on the
/// CLI's stderr and in the daemon's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_insecure_http_lets_a_lab_server_through_and_warns() {
    let name = host_alias(REMOTE_NAME);
    let auth = AuthServer::start(AsOptions {
        host: Some(name.clone()),
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            host: Some(name.clone()),
            ..Default::default()
        },
    )
    .await;
    let url = mcp.url().to_string();
    assert!(url.starts_with(&format!("http://{name}:")));

    // Without the setting: refused, nothing sent.
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    assert!(!d.cli(&["login", &url]).status.success());
    assert_eq!(auth.counts().authorizations, 0);
    d.stop();

    let home = DaemonHome::new(
        "file",
        &format!("[servers.\"{url}\"]\nallow_insecure_http = true\n"),
    );
    let d = home.start(None);
    let out = d.cli(&["login", &url]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        home.log_text()
    );
    let err = stderr(&out);
    assert!(
        err.contains("warning") && err.contains("allow_insecure_http"),
        "{err}"
    );
    let out = d.cli(&["token", &url]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    let token = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(auth.validate_access_token(&token, &url).is_ok());

    let out = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(d.socket())
        .args(["proxy", &url])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning"), "{}", stderr(&out));
    d.stop();
    let log = home.log_text();
    assert!(
        log.contains("allow_insecure_http") && log.contains("WARN"),
        "the daemon logs every insecure use:\n{log}"
    );
}

/// A remote MCP server (allowed plain http for the lab) that names an authorization
/// server on loopback is refused: a remote server may not steer the daemon at local
/// services, whatever `allow_insecure_http` says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_server_cannot_steer_the_daemon_at_loopback() {
    let name = host_alias(REMOTE_NAME);
    let local_as = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &local_as,
        McpOptions {
            host: Some(name),
            ..Default::default()
        },
    )
    .await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new(
        "file",
        &format!("[servers.\"{url}\"]\nallow_insecure_http = true\n"),
    );
    let d = home.start(None);
    let out = d.cli(&["login", &url]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(local_as.issuer()) && err.contains("steer"),
        "{err}"
    );
    assert_eq!(local_as.counts().registrations, 0);
    assert_eq!(local_as.counts().authorizations, 0);
}
