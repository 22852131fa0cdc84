//! `mcp-auth revoke` reports what the authorization server did with each token: the refresh
//! token first (RFC 7009: that ends the whole grant at most servers), then the access token,
//! whose `unsupported_token_type` (self-contained JWT access tokens) is not a failure.

use mcp_authd_ipc::methods::{RevokeResult, TokenRevocation};
use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

fn outcome(token: &str, outcome: &str) -> (String, String) {
    (token.to_string(), outcome.to_string())
}

fn outcomes(tokens: &[TokenRevocation]) -> Vec<(String, String)> {
    tokens
        .iter()
        .map(|t| (t.token.to_string(), t.outcome.to_string()))
        .collect()
}

/// A daemon logged in to an MCP server of an authorization server with `opts`.
struct LoggedIn {
    auth: AuthServer,
    _mcp: McpServer,
    _home: DaemonHome,
    d: Daemon,
    url: String,
}

async fn logged_in(opts: AsOptions) -> LoggedIn {
    let auth = AuthServer::start(opts).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    LoggedIn {
        auth,
        _mcp: mcp,
        _home: home,
        d,
        url,
    }
}

fn revoke_json(d: &Daemon, url: &str) -> RevokeResult {
    serde_json::from_str(&d.cli_ok(&["revoke", url, "--json"])).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_access_token_the_server_cannot_revoke_is_no_failure() {
    let LoggedIn {
        auth,
        d,
        url,
        _mcp,
        _home: home,
    } = logged_in(AsOptions {
        access_token_revocation_unsupported: true,
        ..Default::default()
    })
    .await;
    let access = d.cli_ok(&["token", &url]).trim().to_string();
    let out = d.cli(&["revoke", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("at the authorization server: refresh token revoked; access token not revocable there (HTTP 400 unsupported_token_type"),
        "{text}"
    );
    assert!(
        text.contains("it stays valid until it expires (in "),
        "{text}"
    );
    assert!(!text.to_lowercase().contains("fail"), "{text}");
    assert_eq!(
        auth.revoked_kinds(),
        ["refresh_token", "access_token"],
        "refresh token first"
    );
    assert!(auth.current_refresh_tokens().is_empty(), "the grant ended");
    assert!(
        auth.validate_access_token(&access, &url).is_err(),
        "and its access tokens with it"
    );

    d.cli_ok(&["login", &url]);
    let r = revoke_json(&d, &url);
    assert_eq!(r.remote.to_string(), "revoked");
    assert_eq!(
        outcomes(&r.tokens),
        [
            outcome("refresh_token", "revoked"),
            outcome("access_token", "not_supported")
        ]
    );
    assert!(
        r.tokens[1]
            .detail
            .as_deref()
            .unwrap()
            .contains("unsupported_token_type")
    );
    assert!(d.grants().grants.is_empty());

    // What the server answered reaches the terminal and the log, never a token.
    let log = home.log_text();
    for secret in auth.issued_secrets() {
        assert!(!text.contains(&secret) && !log.contains(&secret));
        assert!(!format!("{r:?}").contains(&secret));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_refresh_token_only_the_access_token_is_sent() {
    let LoggedIn {
        auth,
        d,
        url,
        _mcp,
        _home,
    } = logged_in(AsOptions {
        issue_refresh_tokens: false,
        ..Default::default()
    })
    .await;
    let r = revoke_json(&d, &url);
    assert_eq!(r.remote.to_string(), "revoked");
    assert_eq!(
        outcomes(&r.tokens),
        [
            outcome("refresh_token", "not_held"),
            outcome("access_token", "revoked")
        ]
    );
    assert_eq!(auth.revoked_kinds(), ["access_token"]);
}
