//! `mcp-auth doctor` against a real daemon: every check on one line with its fix, `--json`,
//! exit code 0 unless a check fails; a loose socket directory and a stopped daemon fail.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use mcp_authd_tests::daemon::{DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;

/// `mcp-auth doctor` with a home of its own (no user service installed there).
fn doctor(socket: &Path, home: &Path, json: bool) -> Output {
    let mut cmd = Command::new(bin("mcp-auth"));
    cmd.arg("--socket").arg(socket).arg("doctor");
    if json {
        cmd.arg("--json");
    }
    cmd.env("HOME", home)
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("MCP_AUTHD_SOCKET")
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-auth doctor")
}

fn checks(out: &Output) -> Vec<(String, String, String)> {
    let report: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["check"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
                c["detail"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of<'a>(checks: &'a [(String, String, String)], name: &str) -> (&'a str, &'a str) {
    let c = checks
        .iter()
        .find(|c| c.0 == name)
        .unwrap_or_else(|| panic!("no {name} check in {checks:?}"));
    (c.1.as_str(), c.2.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_daemon_passes_and_each_problem_names_its_fix() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let user_home = tempfile::tempdir().unwrap();
    let d = home.start(None);
    let socket = d.socket().to_path_buf();
    let (url, issuer) = (mcp.url().to_string(), auth.issuer().to_string());
    let user = user_home.path().to_path_buf();
    let (out, text, no_grant) = tokio::task::spawn_blocking(move || {
        let no_grant = doctor(&socket, &user, true);
        d.cli_ok(&["login", &url]);
        let out = doctor(&socket, &user, true);
        let text = doctor(&socket, &user, false);
        (out, text, no_grant, d)
    })
    .await
    .map(|(o, t, n, d)| {
        drop(d);
        (o, t, n)
    })
    .unwrap();

    let before = checks(&no_grant);
    assert_eq!(status_of(&before, "clock").0, "skip", "{before:?}");

    assert!(out.status.success(), "{out:?}");
    let c = checks(&out);
    assert_eq!(status_of(&c, "daemon").0, "ok", "{c:?}");
    let (s, detail) = status_of(&c, "socket");
    assert_eq!(s, "ok", "{detail}");
    // The tests run the daemon with the file fallback: a warning, not a failure.
    let (s, detail) = status_of(&c, "secret store");
    assert_eq!(s, "warn", "{detail}");
    assert!(detail.contains("secrets are in file"), "{detail}");
    let (s, detail) = status_of(&c, "database");
    assert_eq!(s, "ok", "{detail}");
    // The newest migration shipped with the daemon.
    let newest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../daemon/migrations"))
        .unwrap()
        .filter_map(|e| {
            e.ok()?
                .file_name()
                .to_str()?
                .split('_')
                .next()?
                .parse::<u32>()
                .ok()
        })
        .max()
        .unwrap();
    assert!(
        detail.contains(&format!("quick_check, schema {newest}")),
        "{detail}"
    );
    // The test authorization server's Date header is this machine's clock.
    let (s, detail) = status_of(&c, "clock");
    assert_eq!(s, "ok", "{detail}");
    assert!(detail.contains(&issuer), "{detail}");
    let (s, detail) = status_of(&c, "service");
    assert_eq!(s, "warn", "{detail}");
    assert!(detail.contains("not installed"), "{detail}");

    // Text: one line per check, warnings with their fix.
    assert!(text.status.success());
    let text = String::from_utf8(text.stdout).unwrap();
    assert_eq!(text.lines().count(), c.len(), "{text}");
    let service = text.lines().find(|l| l.contains("service:")).unwrap();
    assert!(service.starts_with("[warn]"), "{service}");
    assert!(
        service.ends_with("fix: `mcp-auth service install`"),
        "{service}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("[ ok ] database:")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_socket_directory_and_a_stopped_daemon_fail() {
    let home = DaemonHome::new("file", "");
    let user_home = tempfile::tempdir().unwrap();
    let d = home.start(None);
    let socket = d.socket().to_path_buf();
    let dir = socket.parent().unwrap().to_path_buf();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = doctor(&socket, user_home.path(), false);
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().find(|l| l.contains("socket:")).unwrap();
    assert!(line.starts_with("[FAIL]"), "{line}");
    assert!(line.contains("is 755, not 700"), "{line}");
    assert!(
        line.ends_with(&format!("fix: chmod 700 {}", dir.display())),
        "{line}"
    );

    d.stop();
    let out = doctor(&socket, user_home.path(), true);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let c = checks(&out);
    let (s, detail) = status_of(&c, "daemon");
    assert_eq!(s, "fail");
    assert!(detail.contains("not running"), "{detail}");
    for name in ["secret store", "database", "clock"] {
        assert_eq!(status_of(&c, name).0, "skip", "{name}");
    }
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
}
