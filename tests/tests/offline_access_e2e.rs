//! Refresh tokens from OpenID providers: `offline_access` goes with `prompt=consent`
//! (OpenID Connect Core §11), against a test server that, like strict certified
//! providers, ignores `offline_access` without it; and a grant without a refresh token is
//! never silent (`login`, `list`, `inspect`, `doctor`).

use std::collections::BTreeMap;

use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;

/// A login to an MCP server of a fresh authorization server; `config` may name the
/// issuer as `{issuer}`. Returns what the daemon sent to the authorization endpoint.
struct Login {
    auth: AuthServer,
    _mcp: McpServer,
    home: DaemonHome,
    d: Daemon,
    url: String,
    authz: BTreeMap<String, String>,
    /// What `mcp-auth login` printed.
    said: String,
}

async fn login(opts: AsOptions, config: &str) -> Login {
    let auth = AuthServer::start(opts).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", &config.replace("{issuer}", auth.issuer()));
    let d = home.start(None);
    let said = d.cli_ok(&["login", &url]);
    let authz = auth.last_authorize_params().unwrap();
    assert!(authz["scope"].split(' ').any(|s| s == "offline_access"));
    Login {
        auth,
        _mcp: mcp,
        home,
        d,
        url,
        authz,
        said,
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
    let g = &l.d.grants().grants[0];
    assert!(g.has_refresh_token && g.no_refresh_token.is_none(), "{g:?}");
    assert!(!l.said.contains("refresh token"), "{}", l.said);
    assert_eq!(
        doctor_refresh_checks(&l.d),
        vec![("ok".to_string(), String::new())]
    );
}

/// The `refresh tokens` checks of `mcp-auth doctor --json`: status and fix.
fn doctor_refresh_checks(d: &Daemon) -> Vec<(String, String)> {
    let out = d.cli(&["doctor", "--json"]);
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "refresh tokens")
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_string(),
                c["fix"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
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

    // Never silent: login says so, when the browser will be needed again, and what helps.
    assert!(l.said.contains("No refresh token:"), "{}", l.said);
    assert!(
        l.said
            .contains("A new browser login will be needed in 59 min")
            || l.said.contains("A new browser login will be needed in 1 h"),
        "{}",
        l.said
    );
    assert!(
        l.said
            .contains("May fix it: remove `prompt_consent = false`"),
        "{}",
        l.said
    );

    let list = l.d.cli_ok(&["list"]);
    assert!(list.contains("ok, no refresh"), "{list}");
    assert!(
        list.contains(&format!("{} has no refresh token", l.url)),
        "{list}"
    );
    assert!(
        list.contains("may fix it: remove `prompt_consent = false`"),
        "{list}"
    );

    let inspect = l.d.cli_ok(&["inspect", &l.url]);
    assert!(
        inspect.contains("refresh token: none: the login asked"),
        "{inspect}"
    );
    assert!(
        inspect.contains("log in again: A new browser login"),
        "{inspect}"
    );
    let json: Value = serde_json::from_str(&l.d.cli_ok(&["inspect", &l.url, "--json"])).unwrap();
    let n = &json["no_refresh_token"];
    assert_eq!(n["offline_access_requested"], true, "{json}");
    assert!(
        n["reason"]
            .as_str()
            .unwrap()
            .contains("prompt_consent = false")
    );
    assert!(n["login_again_at"].as_i64().unwrap() > 0, "{json}");

    let doctor = doctor_refresh_checks(&l.d);
    assert_eq!(doctor.len(), 1, "{doctor:?}");
    assert_eq!(doctor[0].0, "warn");
    assert!(doctor[0].1.contains("prompt_consent"), "{doctor:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_that_never_issues_refresh_tokens_is_explained() {
    let l = login(
        AsOptions {
            issue_refresh_tokens: false,
            ..Default::default()
        },
        "",
    )
    .await;
    assert!(l.said.contains("No refresh token:"), "{}", l.said);
    assert!(
        l.said
            .contains("issued none although the login asked for offline_access"),
        "{}",
        l.said
    );
    let g = &l.d.grants().grants[0];
    let n = g.no_refresh_token.as_ref().expect("explained");
    assert!(n.offline_access_requested);
    assert!(
        n.fix.as_deref().unwrap().contains("mcp-auth login"),
        "{n:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_plain_oauth_server_gets_no_prompt() {
    let l = login(AsOptions::default(), "").await;
    assert!(!l.authz.contains_key("prompt"), "{:?}", l.authz);
    assert_eq!(l.auth.current_refresh_tokens().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prompt_consent_is_switched_by_a_config_reload() {
    let l = login(strict_oidc(), "").await;
    assert_eq!(l.authz["prompt"], "consent");
    let config = |extra: &str| {
        std::fs::write(
            l.home.path().join("config.toml"),
            format!("secret_store = \"file\"\n{extra}"),
        )
        .unwrap();
        let said = l.d.cli_ok(&["reload"]);
        assert!(said.starts_with("reloaded "), "{said}");
    };

    config(&format!(
        "[servers.\"{}\"]\nprompt_consent = false\n",
        l.url
    ));
    l.d.cli_ok(&["login", &l.url]);
    let authz = l.auth.last_authorize_params().unwrap();
    assert!(!authz.contains_key("prompt"), "{authz:?}");
    assert!(!l.d.grants().grants[0].has_refresh_token);

    config("");
    l.d.cli_ok(&["login", &l.url]);
    assert_eq!(l.auth.last_authorize_params().unwrap()["prompt"], "consent");
    assert!(l.d.grants().grants[0].has_refresh_token);
}
