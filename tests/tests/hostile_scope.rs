//! Nothing a server says becomes a shell command. A 403 whose `scope` holds shell syntax
//! that RFC 6749 allows in a scope token (quotes `'`, `;`, `$(…)`, backticks) yields a
//! suggested `mcp-auth login …` command in which each argument is one quoted word: run
//! through `sh -c` it runs `mcp-auth` with exactly those arguments and nothing else (canary
//! files that must not appear). A scope RFC 6749 does not allow (`"`, a newline, an ANSI
//! escape) is refused with a clear error naming the server, and no command at all.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use mcp_authd_ipc::methods::{ChallengeParams, TOKEN_CHALLENGE, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError, ErrorKind, RpcError};
use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use reqwest::header;

/// A directory with a stand-in `mcp-auth` that writes its arguments, one per line, to
/// `args`; `sh -c` finds it first on PATH.
fn fake_mcp_auth(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let script = bin.join("mcp-auth");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > '{}'\n",
            dir.join("args").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

/// Runs a suggested command as a person or an agent with a shell tool would.
fn run_in_shell(command: &str, path_first: &std::path::Path) -> std::process::Output {
    Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PATH", format!("{}:/usr/bin:/bin", path_first.display()))
        .output()
        .unwrap()
}

/// An MCP server that requires `mcp:read` and `extra_scope`, and a daemon logged in to
/// it with `mcp:read` only: its requests get a 403 naming `extra_scope`.
struct HostileServer {
    _auth: AuthServer,
    _mcp: McpServer,
    _home: DaemonHome,
    daemon: Daemon,
    url: String,
}

impl HostileServer {
    async fn start(extra_scope: &str) -> HostileServer {
        let auth = AuthServer::start(AsOptions::default()).await;
        let mcp = McpServer::start(
            &auth,
            McpOptions {
                required_scopes: vec!["mcp:read".into(), extra_scope.into()],
                ..Default::default()
            },
        )
        .await;
        let url = mcp.url().to_string();
        let home = DaemonHome::new("file", "");
        let daemon = home.start(None);
        daemon.cli_ok(&["login", &url, "--scope", "mcp:read"]);
        HostileServer {
            _auth: auth,
            _mcp: mcp,
            _home: home,
            daemon,
            url,
        }
    }

    /// The server's real 403 `WWW-Authenticate` for our token.
    async fn forbidden(&self) -> String {
        let token = self.daemon.cli_ok(&["token", &self.url]).trim().to_string();
        let response = reqwest::Client::new()
            .post(&self.url)
            .bearer_auth(&token)
            .header(header::ACCEPT, "application/json, text/event-stream")
            .json(&serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_string()
    }
}

async fn challenge(
    client: &mut Client,
    server: &str,
    status: u16,
    www_authenticate: &str,
) -> RpcError {
    let answer: Result<TokenGetResult, ClientError> = client
        .call(
            TOKEN_CHALLENGE,
            &ChallengeParams {
                server: server.to_string(),
                status,
                www_authenticate: Some(www_authenticate.to_string()),
                interactive: Some(false),
                ..Default::default()
            },
        )
        .await;
    match answer {
        Err(ClientError::Rpc(e)) => e,
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_403_scope_is_quoted_so_the_suggested_command_runs_only_mcp_auth() {
    let dir = tempfile::tempdir().unwrap();
    let canary = |n: u8| dir.path().join(format!("canary{n}"));
    // Every character here is allowed in an RFC 6749 scope token (no space: ${IFS}).
    let hostile = format!(
        "x';touch${{IFS}}{};'$(touch${{IFS}}{})`touch${{IFS}}{}`|touch${{IFS}}{}",
        canary(1).display(),
        canary(2).display(),
        canary(3).display(),
        canary(4).display()
    );
    let hostile_server = HostileServer::start(&hostile).await;
    let (url, d) = (&hostile_server.url, &hostile_server.daemon);
    let www_authenticate = hostile_server.forbidden().await;
    assert!(www_authenticate.contains(&hostile));

    let mut client = Client::connect(d.socket()).await.unwrap();
    let e = challenge(&mut client, url, 403, &www_authenticate).await;
    assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired), "{e:?}");
    let command = e.data.as_ref().and_then(|d| d.command.clone()).unwrap();
    assert!(e.message.ends_with(&command), "{}", e.message);

    // The CLI's own hint for the same scope (token.get with --scope) is built alike.
    let out = d.cli(&["token", url, "--scope", &hostile]);
    assert_eq!(out.status.code(), Some(4));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let cli_command = stderr.trim().rsplit("run: ").next().unwrap().to_string();

    let bin = fake_mcp_auth(dir.path());
    for suggested in [command, cli_command] {
        let _ = std::fs::remove_file(dir.path().join("args"));
        let ran = run_in_shell(&suggested, &bin);
        assert!(ran.status.success(), "{suggested}: {ran:?}");
        for n in 1..=4 {
            assert!(
                !canary(n).exists(),
                "the suggested command ran the server's shell code: {suggested}"
            );
        }
        let args = std::fs::read_to_string(dir.path().join("args")).unwrap();
        let args: Vec<&str> = args.lines().collect();
        assert_eq!(args[..3], ["login", url.as_str(), "--scope"], "{suggested}");
        assert_eq!(args.len(), 4, "{suggested}");
        let scopes: Vec<&str> = args[3].split(' ').collect();
        assert!(
            scopes.contains(&"mcp:read") && scopes.contains(&hostile.as_str()),
            "{suggested}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_that_is_not_a_scope_token_is_refused_naming_the_server() {
    // A real server whose 403 scope holds a quote (escaped in the quoted-string).
    let hostile_server = HostileServer::start("x\\\";id;\\\"").await;
    let (url, d, auth) = (
        &hostile_server.url,
        &hostile_server.daemon,
        &hostile_server._auth,
    );
    let from_server = hostile_server.forbidden().await;

    let mut client = Client::connect(d.socket()).await.unwrap();
    // What no HTTP header can carry, a client may still pass on: newlines, ANSI escapes.
    for www_authenticate in [
        from_server,
        "Bearer error=\"insufficient_scope\", scope=\"mcp:read evil\nrm -rf ~\"".to_string(),
        "Bearer error=\"insufficient_scope\", scope=\"mcp:read \u{1b}[2J\u{1b}]0;pwned\u{7}\""
            .to_string(),
    ] {
        for status in [401, 403] {
            let e = challenge(&mut client, url, status, &www_authenticate).await;
            assert_eq!(e.kind(), Some(ErrorKind::ServerError), "{e:?}");
            assert!(
                e.message.contains(url.as_str()) && e.message.contains("invalid scope"),
                "{}",
                e.message
            );
            assert!(
                !e.message.chars().any(|c| c.is_control()),
                "no control character reaches the message: {:?}",
                e.message
            );
            assert!(e.data.as_ref().unwrap().command.is_none(), "{e:?}");
        }
    }
    assert_eq!(auth.counts().authorizations, 1, "no login for a bad scope");

    // The CLI refuses such a scope itself, before asking the daemon.
    for bad in ["a\"b", "a\\b", "\u{1b}[31m"] {
        let out = d.cli(&["login", url, "--scope", bad]);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("RFC 6749"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
