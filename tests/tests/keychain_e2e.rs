//! Grants survive a restart of the keychain itself (gnome-keyring killed and started
//! again, as after a reboot): with the daemon still running, and after restarting it too.
//! Runs only inside the Secret Service session scripts/test.sh sets up.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

const KEYCHAIN_ENV: &str = "MCP_AUTHD_TEST_KEYCHAIN";
const PASSWORD_ENV: &str = "MCP_AUTHD_TEST_KEYRING_PASSWORD";
const TTL: u64 = 2;

/// `gnome-keyring-daemon --replace`: the running keyring daemon exits and a new one
/// unlocks the same keyring file.
fn restart_gnome_keyring(password: &str) {
    let mut child = Command::new("gnome-keyring-daemon")
        .args(["--replace", "--unlock", "--components=secrets"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("gnome-keyring-daemon");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(password.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}

/// A daemon on the keychain, logged in to a server whose tokens live `TTL` seconds.
async fn logged_in_with_keychain(
    dpop: bool,
) -> (AuthServer, McpServer, String, DaemonHome, Daemon) {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: TTL,
        dpop,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("keychain", "background_refresh_days = 0\n");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    (auth, mcp, url, home, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn grants_survive_a_keychain_restart() {
    let (Ok("required"), Ok(password)) = (
        std::env::var(KEYCHAIN_ENV).as_deref(),
        std::env::var(PASSWORD_ENV),
    ) else {
        eprintln!(
            "SKIPPED: needs {KEYCHAIN_ENV}=required and {PASSWORD_ENV} inside a Secret Service session (scripts/test.sh sets both)"
        );
        return;
    };
    let (auth, _mcp, url, home, d) = logged_in_with_keychain(false).await;

    // The keychain restarts under the running daemon; the next refresh reads and rotates
    // the refresh token in the new keychain process.
    restart_gnome_keyring(&password);
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
    let token = d.cli_ok(&["token", &url]).trim().to_string();
    assert!(auth.validate_access_token(&token, &url).is_ok());
    assert_eq!(auth.counts().refreshes, 1);

    // Keychain and daemon both restart: the grant is served again, without a login.
    d.stop();
    restart_gnome_keyring(&password);
    let d = home.start(None);
    let token = d.cli_ok(&["token", &url]).trim().to_string();
    assert!(auth.validate_access_token(&token, &url).is_ok());
    assert_eq!(
        auth.counts().refreshes,
        2,
        "the restarted daemon refreshed once"
    );
    assert_eq!(auth.counts().authorizations, 1, "no second browser login");
}

/// A DPoP-bound grant's private key goes to the real keychain, not to a file: a restarted
/// daemon refreshes with a proof by the same key, read back from the Secret Service.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dpop_key_lives_in_the_keychain() {
    if std::env::var(KEYCHAIN_ENV).as_deref() != Ok("required") {
        eprintln!("SKIPPED: needs {KEYCHAIN_ENV}=required inside a Secret Service session");
        return;
    }
    let (auth, _mcp, url, home, d) = logged_in_with_keychain(true).await;
    let first = d.cli_ok(&["token", &url]).trim().to_string();
    let jkt = auth.dpop_binding(&first).expect("a DPoP-bound token");

    d.stop();
    let d = home.start(None);
    let renewed = d.cli_ok(&["token", &url]).trim().to_string();
    assert_eq!(auth.counts().refreshes, 1);
    assert_eq!(auth.dpop_binding(&renewed), Some(jkt));
    assert!(!home.path().join("secrets.json").exists());
}
