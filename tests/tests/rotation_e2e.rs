//! A rotated refresh token is never lost, and never outlives a revoke: a keychain that
//! stalls (a real Secret Service, stopped), SIGTERM while the authorization server's answer
//! to a refresh is still on its way, and `revoke` / `logout` during a refresh. The test
//! authorization server rotates refresh tokens and revokes the whole grant on a replay, so
//! any lost rotation shows up as a failed refresh.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::{StatusResult, TOKEN_GET, TokenGetParams, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::tools::{on_path, required};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer, TokenProblem};

const TTL: u64 = 2;

async fn setup(
    secret_store: &str,
    env: &[(&str, &str)],
) -> (AuthServer, McpServer, DaemonHome, Daemon) {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: TTL,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    // Refreshes only when asked, so each one comes exactly where the test wants it.
    let home = DaemonHome::new(secret_store, "background_refresh_days = 0\n");
    let d = home.start_with_env(None, env);
    d.cli_ok(&["login", mcp.url()]);
    (auth, mcp, home, d)
}

/// A `token.get` that needs a refresh (the login's token has expired by then).
fn refresh_in_flight(
    d: &Daemon,
    url: &str,
) -> tokio::task::JoinHandle<Result<TokenGetResult, ClientError>> {
    let socket = d.socket().to_path_buf();
    let params = TokenGetParams {
        server: url.to_string(),
        min_valid_secs: Some(1),
        ..Default::default()
    };
    tokio::spawn(async move {
        let mut client = Client::connect(&socket).await?;
        client.call(TOKEN_GET, &params).await
    })
}

async fn token(d: &Daemon, url: &str) -> Result<TokenGetResult, ClientError> {
    refresh_in_flight(d, url).await.unwrap()
}

/// The refresh tokens in the file secret store.
fn stored_refresh_tokens(home: &DaemonHome) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(home.path().join("secrets.json")).unwrap_or_default();
    let all: std::collections::BTreeMap<String, String> =
        serde_json::from_str(&text).unwrap_or_default();
    all.into_iter()
        .filter(|(k, _)| k.starts_with("refresh_token:"))
        .collect()
}

/// Waits (up to 10 s, the machine may be loaded) until the server has done `n` refreshes.
async fn until_refreshed(auth: &AuthServer, n: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while auth.counts().refreshes < n {
        assert!(
            Instant::now() < deadline,
            "the refresh never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `mcp-auth ARGS` against the daemon, on a blocking thread (the test's servers run on
/// this runtime meanwhile); succeeds or fails with the CLI's stderr.
async fn cli_off_thread(d: &Daemon, args: &[&str]) {
    let socket = d.socket().to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(mcp_authd_tests::daemon::bin("mcp-auth"))
            .arg("--socket")
            .arg(&socket)
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sigterm(d: &Daemon) {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
}

/// SIGTERM while the server's answer to a refresh is on its way for longer than the
/// daemon's request grace (5 s): the daemon waits for it and stores the rotated refresh
/// token before it exits, and the next start refreshes with it — no replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_slow_refresh_stores_the_rotated_token_before_exiting() {
    let (auth, mcp, home, mut d) = setup("file", &[]).await;
    let url = mcp.url().to_string();
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;

    // The server rotates at once and answers 7 s later.
    auth.set_refresh_reply_delay(Duration::from_secs(7));
    let in_flight = refresh_in_flight(&d, &url);
    until_refreshed(&auth, 1).await;
    let rotated = auth.newest_refresh_token().unwrap();
    sigterm(&d);
    let asked = Instant::now();
    let exit = tokio::task::spawn_blocking(move || {
        let exit = d.wait_exit(Duration::from_secs(60));
        (d, exit)
    })
    .await
    .unwrap()
    .1
    .expect("the daemon exited");
    assert!(exit.success(), "{exit:?}\n{}", home.log_text());
    assert!(
        asked.elapsed() >= Duration::from_secs(6),
        "the daemon waited for the refresh in flight ({:?})",
        asked.elapsed()
    );
    let reply = in_flight.await.unwrap();
    assert!(reply.is_ok(), "the caller got its token: {reply:?}");
    let stored = stored_refresh_tokens(&home);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].1, rotated, "the rotated refresh token is stored");

    auth.set_refresh_reply_delay(Duration::ZERO);
    let d = home.start(None);
    let t = d.cli_ok(&["token", &url, "--min-valid", "3000"]);
    assert!(auth.validate_access_token(t.trim(), &url).is_ok());
    assert_eq!(auth.counts().refreshes, 2);
    assert_eq!(auth.counts().refresh_failures, 0, "no replay");
    assert_eq!(auth.counts().authorizations, 1, "no new login");
}

/// `revoke` while a refresh is in flight (the server has rotated, its answer is on the
/// way): revoke waits for the refresh, revokes the newest refresh token at the server,
/// and nothing survives — not in the store, not in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoke_during_a_refresh_revokes_the_newest_token_and_leaves_nothing() {
    let (auth, mcp, home, d) = setup("file", &[]).await;
    let url = mcp.url().to_string();
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
    auth.set_refresh_reply_delay(Duration::from_secs(2));
    let in_flight = refresh_in_flight(&d, &url);
    until_refreshed(&auth, 1).await;

    cli_off_thread(&d, &["revoke", &url]).await;
    let _ = in_flight.await.unwrap();
    auth.set_refresh_reply_delay(Duration::ZERO);

    let newest = auth.newest_refresh_token().unwrap();
    assert!(
        auth.revoked_tokens().contains(&newest),
        "the server was asked to revoke the newest refresh token"
    );
    assert!(auth.current_refresh_tokens().is_empty());
    assert!(
        stored_refresh_tokens(&home).is_empty(),
        "no refresh token in the store"
    );
    let after = token(&d, &url).await.unwrap_err();
    let ClientError::Rpc(e) = after else {
        panic!("{after}")
    };
    assert_eq!(
        e.kind(),
        Some(ErrorKind::AuthorizationRequired),
        "{}",
        e.message
    );
    assert_eq!(auth.counts().refresh_failures, 0);
}

/// `logout` (forget here, no revocation) during a refresh: the refresh finishes first, then
/// the grant and its refresh token are gone; nothing the refresh rotated is written after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_during_a_refresh_leaves_no_refresh_token_behind() {
    let (auth, mcp, home, d) = setup("file", &[]).await;
    let url = mcp.url().to_string();
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
    auth.set_refresh_reply_delay(Duration::from_secs(2));
    let in_flight = refresh_in_flight(&d, &url);
    until_refreshed(&auth, 1).await;
    cli_off_thread(&d, &["logout", &url]).await;
    let _ = in_flight.await.unwrap();
    // Whatever the refresh did, it did before the logout: nothing lands afterwards.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        stored_refresh_tokens(&home).is_empty(),
        "no refresh token in the store"
    );
    let ClientError::Rpc(e) = token(&d, &url).await.unwrap_err() else {
        panic!("not an RPC error")
    };
    assert_eq!(
        e.kind(),
        Some(ErrorKind::AuthorizationRequired),
        "{}",
        e.message
    );
    assert!(
        auth.revoked_tokens().is_empty(),
        "logout revokes nothing remotely"
    );
}

/// A new login while a refresh of the same grant is in flight: the login's tokens replace
/// the grant's after the refresh is done, never the other way round — the store ends with
/// the login's refresh token (the newest the server issued), not the rotated old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_during_a_refresh_is_not_overwritten_by_it() {
    let (auth, mcp, home, d) = setup("file", &[]).await;
    let url = mcp.url().to_string();
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
    auth.set_refresh_reply_delay(Duration::from_secs(3));
    let in_flight = refresh_in_flight(&d, &url);
    until_refreshed(&auth, 1).await;
    cli_off_thread(&d, &["login", &url]).await;
    assert_eq!(auth.counts().authorizations, 2);
    let _ = in_flight.await.unwrap();
    auth.set_refresh_reply_delay(Duration::ZERO);

    let stored = stored_refresh_tokens(&home);
    assert_eq!(stored.len(), 1);
    assert_eq!(
        Some(&stored[0].1),
        auth.newest_refresh_token().as_ref(),
        "the login's refresh token is the one kept"
    );
    let t = d.cli_ok(&["token", &url, "--min-valid", "3000"]);
    assert!(auth.validate_access_token(t.trim(), &url).is_ok());
    assert_eq!(auth.counts().refresh_failures, 0);
}

/// A private D-Bus session with its own gnome-keyring (unlocked): a real Secret Service
/// this test may stop (SIGSTOP, as an unanswered unlock prompt stalls every call) without
/// stalling other tests.
struct PrivateKeyring {
    _dir: tempfile::TempDir,
    bus_pid: i32,
    keyring: Child,
    address: String,
}

impl PrivateKeyring {
    fn start() -> Option<PrivateKeyring> {
        let needed = "a Secret Service the test can stall";
        required("dbus-daemon", on_path("dbus-daemon"), needed)?;
        required(
            "gnome-keyring-daemon",
            on_path("gnome-keyring-daemon"),
            needed,
        )?;
        let dir = tempfile::Builder::new()
            .prefix("kr")
            .tempdir_in("/tmp")
            .unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        let mut bus = Command::new("dbus-daemon")
            .args([
                "--session",
                "--fork",
                "--nopidfile",
                "--print-address=1",
                "--print-pid=1",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(bus.stdout.take().unwrap()).lines();
        let address = lines.next().unwrap().unwrap();
        let bus_pid: i32 = lines.next().unwrap().unwrap().trim().parse().unwrap();
        bus.wait().unwrap();
        let mut keyring = Command::new("gnome-keyring-daemon")
            .args(["--foreground", "--unlock", "--components=secrets"])
            .env("DBUS_SESSION_BUS_ADDRESS", &address)
            .env("XDG_DATA_HOME", dir.path())
            .env("XDG_RUNTIME_DIR", &run)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        keyring
            .stdin
            .take()
            .unwrap()
            .write_all(b"throwaway-test-password")
            .unwrap();
        // Ready once the keyring file exists (it creates and unlocks it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while !Path::new(&dir.path().join("keyrings")).exists() {
            assert!(Instant::now() < deadline, "gnome-keyring did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Some(PrivateKeyring {
            _dir: dir,
            bus_pid,
            keyring,
            address,
        })
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the keyring daemon this test started.
        unsafe { libc::kill(self.keyring.id() as i32, signal) };
    }
}

impl Drop for PrivateKeyring {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.keyring.kill();
        let _ = self.keyring.wait();
        // SAFETY: kill(2) on the bus daemon this test started.
        unsafe { libc::kill(self.bus_pid, libc::SIGTERM) };
    }
}

fn status(d: &Daemon) -> StatusResult {
    serde_json::from_str(&d.cli_ok(&["status", "--json"])).unwrap()
}

/// The keychain stalls while a refresh stores its rotated refresh token (a stopped
/// gnome-keyring): the caller still gets its token after the keychain's timeout, the new
/// refresh token stays in memory (status says it is not yet stored) and serves the next
/// refresh; once the keychain answers again it is stored, and survives a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_keychain_keeps_the_rotated_token_in_memory_until_it_is_stored() {
    let Some(keyring) = PrivateKeyring::start() else {
        return;
    };
    let env = [("DBUS_SESSION_BUS_ADDRESS", keyring.address.as_str())];
    let (auth, mcp, home, d) = setup("keychain", &env).await;
    let url = mcp.url().to_string();
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;

    // The daemon has read the refresh token and sent it; the keychain stops before the
    // rotated one comes back.
    auth.set_refresh_reply_delay(Duration::from_millis(1500));
    let in_flight = refresh_in_flight(&d, &url);
    until_refreshed(&auth, 1).await;
    keyring.signal(libc::SIGSTOP);
    let first = tokio::time::timeout(Duration::from_secs(20), in_flight)
        .await
        .expect("an answer despite the stalled keychain")
        .unwrap()
        .expect("the refresh succeeded");
    // Issued by this refresh (it may have expired meanwhile: the keychain took 5 s).
    assert_ne!(
        auth.validate_access_token(&first.access_token, &url),
        Err(TokenProblem::Unknown)
    );
    assert_eq!(auth.counts().refreshes, 1);
    auth.set_refresh_reply_delay(Duration::ZERO);
    let s = status(&d);
    assert_eq!(
        s.secret_store.refresh_tokens_not_stored,
        vec![first.grant.clone()]
    );
    let human = d.cli_ok(&["status"]);
    assert!(human.contains("not yet stored"), "{human}");
    let doctor = d.cli(&["doctor"]);
    let said = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        !doctor.status.success() && said.contains("not yet stored"),
        "{said}"
    );

    // The next refresh uses the rotated token from memory: the server sees no replay.
    let second = d.cli_ok(&["token", &url, "--min-valid", "3000"]);
    assert_ne!(
        auth.validate_access_token(second.trim(), &url),
        Err(TokenProblem::Unknown)
    );
    assert_eq!(auth.counts().refreshes, 2);
    assert_eq!(auth.counts().refresh_failures, 0);

    keyring.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status(&d).secret_store.refresh_tokens_not_stored.is_empty() {
        assert!(
            Instant::now() < deadline,
            "never stored:\n{}",
            home.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    d.stop();

    // A new start reads the newest refresh token from the keychain.
    let d = home.start_with_env(None, &env);
    let third = d.cli_ok(&["token", &url, "--min-valid", "3000"]);
    assert!(auth.validate_access_token(third.trim(), &url).is_ok());
    assert_eq!(auth.counts().refreshes, 3);
    assert_eq!(auth.counts().refresh_failures, 0, "no replay");
    assert_eq!(auth.counts().authorizations, 1, "no new login");
    d.stop();
}
