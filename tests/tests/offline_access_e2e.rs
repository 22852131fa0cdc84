//! Refresh tokens from OpenID providers: `offline_access` goes with `prompt=consent`
//! (OpenID Connect Core §11), against a test server that, like strict certified
//! providers, ignores `offline_access` without it.

use std::collections::BTreeMap;

use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

/// A login to an MCP server of a fresh authorization server; `config` may name the
/// issuer as `{issuer}`. Returns what the daemon sent to the authorization endpoint.
struct Login {
    auth: AuthServer,
    _mcp: McpServer,
    _home: DaemonHome,
    d: Daemon,
    url: String,
    authz: BTreeMap<String, String>,
}

async fn login(opts: AsOptions, config: &str) -> Login {
    let auth = AuthServer::start(opts).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", &config.replace("{issuer}", auth.issuer()));
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let authz = auth.last_authorize_params().unwrap();
    assert!(authz["scope"].split(' ').any(|s| s == "offline_access"));
    Login {
        auth,
        _mcp: mcp,
        _home: home,
        d,
        url,
        authz,
    }
}

fn strict_oidc() -> AsOptions {
    AsOptions {
        strict_oidc: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_strict_openid_provider_gives_a_refresh_token_by_default() {
    let l = login(strict_oidc(), "").await;
    assert_eq!(l.authz.get("prompt").map(String::as_str), Some("consent"));
    assert_eq!(l.auth.current_refresh_tokens().len(), 1, "a refresh token");
    assert!(l.d.grants().grants[0].has_refresh_token, "{}", l.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_prompt_consent_off_the_strict_provider_gives_none() {
    let l = login(
        strict_oidc(),
        "[servers.\"{issuer}\"]\nprompt_consent = false\n",
    )
    .await;
    assert!(!l.authz.contains_key("prompt"), "{:?}", l.authz);
    assert!(l.auth.current_refresh_tokens().is_empty());
    assert!(!l.d.grants().grants[0].has_refresh_token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_oauth_server_gets_no_prompt() {
    let l = login(AsOptions::default(), "").await;
    assert!(!l.authz.contains_key("prompt"), "{:?}", l.authz);
    assert_eq!(l.auth.current_refresh_tokens().len(), 1);
}
