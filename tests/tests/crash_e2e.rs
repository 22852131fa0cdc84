//! kill -9 at every step of a refresh with a rotating refresh token: after a restart the
//! grant works, or — where the authorization server had already rotated the token and the
//! daemon died before storing the new one — it is marked as needing login with a reason
//! that says so. Never lost silently, never a damaged row.

use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::GrantsList;
use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

const TTL: u64 = 2;

async fn crash_during_refresh(point: &str) -> (AuthServer, McpServer, DaemonHome) {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: TTL,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    // Refreshes only when asked, so the crash comes exactly where this test looks.
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    d.stop();

    let d = home.start_with_env(None, &[("MCP_AUTHD_CRASH_AT", point)]);
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
    let out = d.cli(&["token", &url]);
    assert!(!out.status.success(), "the daemon died at {point}");
    wait_for_death(d);
    assert!(
        home.log_text().contains(&format!("crash point {point}")),
        "the crash happened where asked"
    );
    (auth, mcp, home)
}

fn wait_for_death(mut d: Daemon) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.has_exited() {
        assert!(Instant::now() < deadline, "the daemon did not die");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn grant_works_after_restart(point: &str) {
    let (auth, mcp, home) = crash_during_refresh(point).await;
    let url = mcp.url().to_string();
    let d = home.start(None);
    let token = d.cli_ok(&["token", &url]).trim().to_string();
    assert!(
        auth.validate_access_token(&token, &url).is_ok(),
        "after a crash at {point} the grant still works"
    );
    assert_eq!(auth.counts().authorizations, 1, "no new browser login");
    let list: GrantsList = serde_json::from_str(&d.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(list.grants.len(), 1);
    assert_eq!(list.grants[0].state.as_str(), "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_before_the_refresh_request() {
    grant_works_after_restart("refresh:before_request").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_storing_the_rotated_token() {
    grant_works_after_restart("refresh:after_secret_store").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_committing_everything() {
    grant_works_after_restart("refresh:after_database").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killed_after_the_server_rotated_but_before_storing() {
    let (auth, mcp, home) = crash_during_refresh("refresh:after_response").await;
    let url = mcp.url().to_string();
    let d = home.start(None);
    // The stored refresh token is the one the server already rotated away: it refuses it
    // (and, by the book, revokes the family). The grant says why; it is not deleted.
    let out = d.cli(&["token", &url]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let list: GrantsList = serde_json::from_str(&d.cli_ok(&["list", "--json"])).unwrap();
    assert_eq!(list.grants.len(), 1, "the grant is kept");
    let g = &list.grants[0];
    assert_eq!(g.state.as_str(), "needs_login");
    let reason = g.needs_login_reason.as_deref().unwrap_or_default();
    assert!(reason.contains("was interrupted"), "{reason}");
    // One login heals it.
    d.cli_ok(&["login", &url]);
    let token = d.cli_ok(&["token", &url]).trim().to_string();
    assert!(auth.validate_access_token(&token, &url).is_ok());
}
