//! Clients talk only to their own daemon: a listener another local user planted where the
//! CLI and the Rust client look for mcp-authd (the `/tmp` fallback without
//! `XDG_RUNTIME_DIR`), a symbolic link as the socket's directory, a directory open to
//! others: each is refused before a single byte is sent, which the planted listener's
//! record proves. The daemon, for its part, never follows a link there and never listens
//! in a directory that is not its user's.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use mcp_authd_ipc::{Client, ClientError, socket::Untrusted};
use mcp_authd_tests::daemon::{DaemonHome, bin};
use mcp_authd_tests::planted::{Planted, other_user, own};

const URL: &str = "https://mcp.example.test/mcp";

/// `mcp-auth token URL` with `socket` (`--socket`), or, when `None`, with the default path
/// under `tmpdir` (no `XDG_RUNTIME_DIR`, as under cron or sudo).
fn cli_token(socket: Option<&Path>, tmpdir: &Path) -> Output {
    let mut cmd = Command::new(bin("mcp-auth"));
    if let Some(socket) = socket {
        cmd.arg("--socket").arg(socket);
    }
    cmd.args(["token", URL])
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("MCP_AUTHD_SOCKET")
        .env("TMPDIR", tmpdir)
        .output()
        .expect("run mcp-auth")
}

/// The CLI and the Rust client both refuse what listens at `socket`, with `expected` in
/// the reason, and the listener got not one byte.
async fn both_refuse(socket: &Path, planted: &Planted, tmpdir: &Path, expected: &str) {
    let out = cli_token(Some(socket), tmpdir);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains("refusing to talk to") && stderr.contains(expected),
        "{stderr}"
    );
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("planted-token"),
        "{out:?}"
    );
    match Client::connect(socket).await {
        Err(ClientError::Untrusted { source, .. }) => {
            assert!(source.to_string().contains(expected), "{source}")
        }
        Err(other) => panic!("expected Untrusted, got {other}"),
        Ok(_) => panic!("the Rust client connected to the planted listener"),
    }
    // Two connections (their lines may interleave), both closed without a byte.
    let record = planted.record(2);
    let mut lines: Vec<&str> = record.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        [
            "accepted",
            "accepted",
            "received 0 bytes",
            "received 0 bytes"
        ],
        "both reached the listener and sent nothing"
    );
}

/// A scratch directory other users may traverse (as `/tmp` is).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("madst")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_planted_at_the_tmp_fallback_gets_nothing() {
    let Some(attacker) = other_user() else { return };
    let tmp = scratch();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let dir = tmp.path().join(format!("mcp-authd-{me}"));
    std::fs::create_dir(&dir).unwrap();
    own(&dir, attacker, 0o700);
    let socket = dir.join("mcp-authd.sock");
    let planted = Planted::start(&socket, Some(attacker));

    // The default path, exactly as the CLI finds it without XDG_RUNTIME_DIR.
    let out = cli_token(None, tmp.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!("belongs to uid {attacker}, not to you (uid {me})")),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert_eq!(planted.record(1), "accepted\nreceived 0 bytes\n");
    assert!(matches!(
        Client::connect(&socket).await,
        Err(ClientError::Untrusted {
            source: Untrusted::ForeignDirectory { .. },
            ..
        })
    ));

    // The daemon will not listen there either.
    let daemon_home = DaemonHome::new("file", "");
    let out = Command::new(bin("mcp-authd"))
        .arg("--socket")
        .arg(dir.join("other.sock"))
        .env("MCP_AUTHD_HOME", daemon_home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "belongs to uid {attacker}, not to mcp-authd's user"
        )),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_of_another_user_in_our_own_directory_is_refused_by_its_uid() {
    let Some(attacker) = other_user() else { return };
    let tmp = scratch();
    let dir = tmp.path().join("ours");
    std::fs::create_dir(&dir).unwrap();
    // Open while the other user binds, then closed: the directory passes every check and
    // only the peer's credentials tell.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.join("mcp-authd.sock");
    let planted = Planted::start(&socket, Some(attacker));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    both_refuse(
        &socket,
        &planted,
        tmp.path(),
        &format!("runs as uid {attacker}, not as you"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlinked_or_open_directory_is_refused_even_with_our_own_listener() {
    let tmp = scratch();
    let real = tmp.path().join("real");
    std::fs::create_dir(&real).unwrap();
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).unwrap();
    let planted = Planted::start(&real.join("mcp-authd.sock"), None);
    let linked = tmp.path().join("linked");
    std::os::unix::fs::symlink(&real, &linked).unwrap();
    both_refuse(
        &linked.join("mcp-authd.sock"),
        &planted,
        tmp.path(),
        "is a symbolic link",
    )
    .await;
    // doctor says so too (and connects no further than the clients do).
    let doctor = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(linked.join("mcp-authd.sock"))
        .arg("doctor")
        .env("HOME", tmp.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("[FAIL] socket:") && l.contains("is a symbolic link")),
        "{text}"
    );
    drop(planted);

    let open = tmp.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o733)).unwrap();
    let socket = open.join("mcp-authd.sock");
    let planted = Planted::start(&socket, None);
    both_refuse(
        &socket,
        &planted,
        tmp.path(),
        "is open to other users (mode 733)",
    )
    .await;

    // The daemon follows no link to its socket's directory and listens in no open one.
    let home = DaemonHome::new("file", "");
    for (socket, expected) in [
        (
            linked.join("d.sock"),
            "is a symbolic link; mcp-authd does not follow it",
        ),
        (open.join("d.sock"), "is open to other users (mode 733)"),
    ] {
        let out = Command::new(bin("mcp-authd"))
            .arg("--socket")
            .arg(&socket)
            .env("MCP_AUTHD_HOME", home.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(expected),
            "{out:?}"
        );
        assert!(!real.join("d.sock").exists() && !socket.exists());
    }
}

/// The directory mcp-authd makes itself, and the one the test harness gives it, pass: the
/// checks do not get in the way of the real daemon.
#[test]
fn the_daemons_own_socket_passes_the_checks() {
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let tmp = scratch();
    let runtime = tmp.path().join("run");
    // Without the directory: the daemon creates it 0700.
    let d2_home = DaemonHome::new("file", "");
    let socket = runtime.join("mcp-authd").join("mcp-authd.sock");
    let mut d2 = Command::new(bin("mcp-authd"))
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("MCP_AUTHD_SOCKET")
        .env("MCP_AUTHD_HOME", d2_home.path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !socket.exists() {
        assert!(std::time::Instant::now() < deadline, "no socket");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mode = std::fs::metadata(socket.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    let status = Command::new(bin("mcp-auth"))
        .arg("status")
        .env("XDG_RUNTIME_DIR", &runtime)
        .env_remove("MCP_AUTHD_SOCKET")
        .output()
        .unwrap();
    let _ = d2.kill();
    let _ = d2.wait();
    assert!(status.status.success(), "{status:?}");
    d.cli_ok(&["status"]);
}

/// `bind` deletes only a stale socket: a regular file or a link at the socket path is left
/// as it is, and the daemon says what is there and what to do.
#[test]
fn the_daemon_never_deletes_a_file_at_its_socket_path_that_is_not_a_socket() {
    let home = DaemonHome::new("file", "");
    let precious = home.path().join("notes.txt");
    std::fs::write(&precious, "keep me").unwrap();
    let link = home.path().join("link.sock");
    std::os::unix::fs::symlink(&precious, &link).unwrap();
    for (socket, what) in [(&precious, "a regular file"), (&link, "a symbolic link")] {
        let out = Command::new(bin("mcp-authd"))
            .arg("--socket")
            .arg(socket)
            .env("MCP_AUTHD_HOME", home.path())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!(
                "{} exists and is not a socket ({what}); mcp-authd does not delete it",
                socket.display()
            )),
            "{stderr}"
        );
        assert_eq!(std::fs::read_to_string(socket).unwrap(), "keep me");
    }
    // A stale socket (nobody answers) is replaced.
    let stale = home.path().join("d.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    home.start(None).cli_ok(&["status"]);
}
