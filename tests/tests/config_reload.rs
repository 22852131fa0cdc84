//! Config reload: `mcp-auth reload` and SIGHUP put a new config file in force; an invalid
//! file is refused with its line and reason, and the daemon keeps its last good config.
//!
//! The config's effect is observed through a pre-registered client: the authorization
//! server offers no dynamic registration, so a login works only while the config names
//! a client for it.

use std::time::{Duration, Instant};

use mcp_authd_tests::daemon::{Daemon, DaemonHome};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer, PreRegisteredClient};

const NO_DCR: &str = "offers no dynamic client registration";

fn write_config(home: &DaemonHome, extra: &str) {
    std::fs::write(
        home.path().join("config.toml"),
        format!("secret_store = \"file\"\nlogin_timeout_secs = 30\n{extra}"),
    )
    .unwrap();
}

fn login(d: &Daemon, url: &str) -> (Option<i32>, String) {
    let out = d.cli(&["login", url, "--timeout", "10"]);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// Waits until the daemon log holds `needle` `count` times (SIGHUP is asynchronous).
fn wait_for_log(home: &DaemonHome, needle: &str, count: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = home.log_text();
        if log.matches(needle).count() >= count {
            return log;
        }
        assert!(
            Instant::now() < deadline,
            "no {count}× `{needle}` in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn hangup(d: &Daemon) {
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_and_sighup_apply_a_valid_config_and_keep_the_last_good_one() {
    let auth = AuthServer::start(AsOptions {
        registration_endpoint: false,
        ..AsOptions::default()
    })
    .await;
    auth.register_client(PreRegisteredClient {
        client_id: "pre-registered-1".into(),
        client_secret: None,
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec![],
    });
    let mut servers = Vec::new();
    for _ in 0..4 {
        servers.push(McpServer::start(&auth, McpOptions::default()).await);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url().to_string()).collect();
    let issuer = auth.issuer().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    tokio::task::spawn_blocking(move || {
        let with_client = format!("[servers.\"{issuer}\"]\nclient_id = \"pre-registered-1\"\n");

        // No client configured: the login cannot work.
        let (code, stderr) = login(&d, &urls[0]);
        assert_eq!(code, Some(7), "{stderr}");
        assert!(stderr.contains(NO_DCR), "{stderr}");

        // `mcp-auth reload` puts the client in force.
        write_config(&home, &with_client);
        let said = d.cli_ok(&["reload"]);
        assert!(said.starts_with("reloaded "), "{said}");
        assert!(said.contains("(1 server entry)"), "{said}");
        let (code, stderr) = login(&d, &urls[0]);
        assert_eq!(code, Some(0), "{stderr}");

        // An invalid file: refused with its line and reason; the client stays configured.
        std::fs::write(
            home.path().join("config.toml"),
            format!("secret_store = \"file\"\nlogin_timeout_secs = \"soon\"\n{with_client}"),
        )
        .unwrap();
        let out = d.cli(&["reload"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(stderr.contains("config.toml"), "{stderr}");
        assert!(stderr.contains("line 2"), "{stderr}");
        assert!(stderr.contains("invalid type"), "{stderr}");
        assert!(
            stderr.contains("the previous config stays in force"),
            "{stderr}"
        );
        let (code, stderr) = login(&d, &urls[1]);
        assert_eq!(code, Some(0), "the last good config is kept: {stderr}");

        // The same through SIGHUP: refused in the log, the daemon alive and unchanged.
        hangup(&d);
        let log = wait_for_log(&home, "config reload refused", 2);
        assert!(log.contains("line 2"), "{log}");
        let (code, stderr) = login(&d, &urls[2]);
        assert_eq!(
            code,
            Some(0),
            "SIGHUP with a bad file changes nothing: {stderr}"
        );

        // A valid file without the client, through SIGHUP: in force at once.
        write_config(&home, "");
        hangup(&d);
        wait_for_log(&home, "config reloaded", 2);
        let (code, stderr) = login(&d, &urls[3]);
        assert_eq!(code, Some(7), "{stderr}");
        assert!(stderr.contains(NO_DCR), "{stderr}");

        // Grants made under the old config keep working.
        let token = d.cli_ok(&["token", &urls[0]]);
        assert!(!token.trim().is_empty());
        d.stop();
    })
    .await
    .unwrap();
    drop(servers);
}
