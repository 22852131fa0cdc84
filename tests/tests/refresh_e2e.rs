//! The background `RefreshScheduler`, end to end: tokens renewed before they expire so no
//! client waits, no refresh storm with tokens shorter-lived than callers ask for, a dead
//! refresh token noticed without any client asking, and a restart that serves every grant
//! again without a browser login.

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_authd_ipc::methods::{GRANTS_LIST, GrantsList, TOKEN_GET, TokenGetParams, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError};
use mcp_authd_tests::daemon::{DaemonHome, fast_clock};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

const TTL: u64 = 4;

fn short_lived() -> AsOptions {
    AsOptions {
        access_token_ttl_secs: TTL,
        ..Default::default()
    }
}

async fn token(socket: &std::path::Path, server: &str) -> Result<TokenGetResult, ClientError> {
    let mut client = Client::connect(socket).await?;
    let params = TokenGetParams {
        server: server.into(),
        min_valid_secs: Some(1),
        ..Default::default()
    };
    client.call(TOKEN_GET, &params).await
}

/// The daemon runs in this process with tokio's clock 10 times as fast: the scheduler
/// times renewals on that clock (the token's age), so the ten seconds take about one. A
/// token's expiry is unix time, which runs at its own pace: what this proves is the
/// schedule — renewed at half-life, again and again, the caller served from memory — and
/// `twenty_second_tokens_under_constant_load_cause_no_refresh_storm` proves on the real
/// clocks that no caller ever gets an expired token.
#[tokio::test]
async fn tokens_are_renewed_before_they_expire_and_callers_never_wait() {
    let auth = AuthServer::start(short_lived()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start_in_process().await;
    d.login(&url).await;
    let first = token(d.socket(), &url).await.unwrap();
    let _clock = fast_clock(10);

    // Two and a half lifetimes later: the scheduler renewed it (at half its life, as it
    // is shorter than 10 minutes) again and again, rotating the refresh token each time.
    tokio::time::sleep(Duration::from_millis(TTL * 2500)).await;
    let renewed = auth.counts().refreshes;
    assert!(renewed >= 3, "only {renewed} background refreshes");
    assert_eq!(auth.counts().refresh_failures, 0);

    // A caller gets a live token from memory: its request causes no refresh.
    let before = auth.counts().refreshes;
    let t = token(d.socket(), &url).await.unwrap();
    assert_eq!(
        auth.counts().refreshes,
        before,
        "the caller did not wait for a refresh"
    );
    assert_ne!(t.access_token, first.access_token);
    assert!(t.expires_in >= 1, "{t:?}");
    assert!(auth.validate_access_token(&t.access_token, &url).is_ok());
}

/// 20-second tokens, callers asking for the default 60 s of validity, without pause: a
/// token is fresh for half its life and renewed in the background at half-life, so the
/// authorization server sees one refresh per 10 s — not one per 5 s as when only the
/// "just issued" rule held such a token — and no caller gets an expired token or an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_second_tokens_under_constant_load_cause_no_refresh_storm() {
    const LIFETIME: u64 = 20;
    const RUN: Duration = Duration::from_secs(40);
    let auth = std::sync::Arc::new(
        AuthServer::start(AsOptions {
            access_token_ttl_secs: LIFETIME,
            ..Default::default()
        })
        .await,
    );
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);

    let end = std::time::Instant::now() + RUN;
    let mut callers = Vec::new();
    for _ in 0..4 {
        let mut client = Client::connect(d.socket()).await.unwrap();
        let (auth, url) = (auth.clone(), url.clone());
        callers.push(tokio::spawn(async move {
            let (mut calls, mut failed, mut expired) = (0u32, Vec::new(), 0u32);
            while std::time::Instant::now() < end {
                let params = TokenGetParams {
                    server: url.clone(),
                    ..Default::default()
                };
                calls += 1;
                match client.call::<_, TokenGetResult>(TOKEN_GET, &params).await {
                    Ok(t) => {
                        let unix_now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .unwrap()
                            .as_secs() as i64;
                        if t.expires_at <= unix_now
                            || auth.validate_access_token(&t.access_token, &url).is_err()
                        {
                            expired += 1;
                        }
                    }
                    Err(e) => failed.push(e.to_string()),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (calls, failed, expired)
        }));
    }
    let mut calls = 0;
    for caller in callers {
        let (c, failed, expired) = caller.await.unwrap();
        calls += c;
        assert!(failed.is_empty(), "failed calls: {failed:?}");
        assert_eq!(expired, 0, "expired tokens handed out");
    }
    assert!(calls > 400, "only {calls} calls");

    let times = auth.refresh_times();
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    println!("{calls} calls, {} refreshes, gaps {gaps:?}", times.len());
    assert!(
        (3..=4).contains(&times.len()),
        "{} refreshes in {RUN:?} (gaps {gaps:?})",
        times.len()
    );
    assert!(
        gaps.iter().all(|g| *g >= Duration::from_millis(9_900)),
        "at most one refresh per 10 s: gaps {gaps:?}"
    );
    assert_eq!(auth.counts().refresh_failures, 0);
}

/// In this process with the clock 10 times as fast: the scheduler's try at half-life and
/// the lifetime of waiting for a retry that must not come are the daemon's own timers.
#[tokio::test]
async fn a_dead_refresh_token_is_noticed_without_a_caller_and_not_retried() {
    let auth = AuthServer::start(short_lived()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start_in_process().await;
    d.login(&url).await;

    // Someone else redeems our refresh token: the AS rotates it away from us.
    let stolen = auth
        .current_refresh_tokens()
        .pop()
        .expect("a refresh token");
    let authz = auth.last_authorize_params().unwrap();
    let form: BTreeMap<&str, &str> = [
        ("grant_type", "refresh_token"),
        ("refresh_token", stolen.as_str()),
        ("client_id", authz["client_id"].as_str()),
        ("resource", url.as_str()),
    ]
    .into();
    let r = reqwest::Client::new()
        .post(format!("{}/token", auth.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    // Within a lifetime the scheduler tries, gets invalid_grant, and marks the grant.
    let _clock = fast_clock(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(TTL * 3);
    loop {
        let mut client = Client::connect(d.socket()).await.unwrap();
        let list: GrantsList = client
            .call(GRANTS_LIST, &serde_json::Value::Null)
            .await
            .unwrap();
        if list.grants[0].state.as_str() == "needs_login" {
            let reason = list.grants[0]
                .needs_login_reason
                .clone()
                .unwrap_or_default();
            assert!(reason.contains("invalid_grant"), "{reason}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never marked: {list:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let failures = auth.counts().refresh_failures;
    assert_eq!(failures, 1);
    tokio::time::sleep(Duration::from_secs(TTL)).await;
    assert_eq!(
        auth.counts().refresh_failures,
        failures,
        "no retry of a dead grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_restart_grants_are_renewed_at_once_without_a_login() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    assert_eq!(
        auth.counts().refreshes,
        0,
        "a fresh hour-long token is not due"
    );
    d.stop();

    // The restarted daemon holds no access token: it refreshes the grant in use at once,
    // before anyone asks, and the caller gets that token.
    let d = home.start(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while auth.counts().refreshes == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "no refresh after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let t = token(d.socket(), &url).await.unwrap();
    assert!(auth.validate_access_token(&t.access_token, &url).is_ok());
    assert_eq!(auth.counts().refreshes, 1, "one refresh, shared");
    assert_eq!(auth.counts().authorizations, 1, "no second browser login");
}
