//! The daemon as a user service: the unit files `mcp-auth service` writes (checked by
//! `systemd-analyze verify`), the LaunchAgent plist, socket activation through a real
//! activator, and a graceful stop on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mcp_authd_ipc::Client;
use mcp_authd_ipc::methods::{StatusResult, TOKEN_GET, TokenGetParams, TokenGetResult};
use mcp_authd_tests::daemon::{DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

fn repo_file(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn have(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn service_install_writes_units_systemd_accepts_and_uninstall_removes_them() {
    let home = tempfile::tempdir().unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(bin("mcp-auth"))
            .args(args)
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("MCP_AUTHD_SOCKET")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "mcp-auth {args:?} failed: {text}");
        text
    };
    let status = cli(&["service", "status"]);
    assert!(status.contains("not installed"), "{status}");

    let out = cli(&["service", "install", "--no-start"]);
    assert!(
        out.contains("systemctl --user enable --now mcp-authd.socket"),
        "{out}"
    );
    let units = home.path().join(".config/systemd/user");
    let service = std::fs::read_to_string(units.join("mcp-authd.service")).unwrap();
    let daemon = std::fs::canonicalize(bin("mcp-authd")).unwrap();
    assert!(
        service.contains(&format!("ExecStart={}\n", daemon.display())),
        "{service}"
    );
    let socket = std::fs::read_to_string(units.join("mcp-authd.socket")).unwrap();
    assert!(socket.contains("ListenStream=%t/mcp-authd/mcp-authd.sock"));
    let status = cli(&["service", "status"]);
    assert!(!status.contains("not installed"), "{status}");

    let verify = || {
        if !have("systemd-analyze") {
            eprintln!("NOTICE: systemd-analyze is not installed; the units were not verified");
            return;
        }
        let runtime = home.path().join("run");
        std::fs::create_dir_all(&runtime).unwrap();
        let out = Command::new("systemd-analyze")
            .args(["--user", "verify"])
            .arg(units.join("mcp-authd.socket"))
            .arg(units.join("mcp-authd.service"))
            .env("HOME", home.path())
            .env("XDG_RUNTIME_DIR", &runtime)
            .output()
            .unwrap();
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // Unknown keys are only warnings: any output at all counts as a failure (and a
        // missing executable is one: the path must mean exactly the file).
        assert!(
            out.status.success() && said.trim().is_empty(),
            "systemd-analyze verify: {said}"
        );
    };
    verify();

    // A daemon at a path with a space, a specifier and a `$`: still exactly that file.
    let odd = home.path().join("my tools 100%h $HOME");
    std::fs::create_dir(&odd).unwrap();
    std::fs::copy(&daemon, odd.join("mcp-authd")).unwrap();
    let daemon_arg = odd.join("mcp-authd").display().to_string();
    cli(&["service", "install", "--no-start", "--daemon", &daemon_arg]);
    let service = std::fs::read_to_string(units.join("mcp-authd.service")).unwrap();
    assert!(
        service.contains(&format!(
            "ExecStart=\"{}\"\n",
            daemon_arg.replace('%', "%%")
        )),
        "{service}"
    );
    verify();
    // One systemd cannot run (a quote in the path) is refused, not written half-escaped.
    let quoted = home.path().join("it's");
    std::fs::create_dir(&quoted).unwrap();
    std::fs::copy(&daemon, quoted.join("mcp-authd")).unwrap();
    let out = Command::new(bin("mcp-auth"))
        .args(["service", "install", "--no-start", "--daemon"])
        .arg(quoted.join("mcp-authd"))
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("systemd cannot run a program whose path holds '\\''"),
        "{out:?}"
    );

    let out = cli(&["service", "uninstall", "--no-stop"]);
    assert!(out.contains("removed"), "{out}");
    assert!(!units.join("mcp-authd.service").exists());
    assert!(!units.join("mcp-authd.socket").exists());
}

#[test]
fn the_launch_agent_is_a_valid_plist_with_a_launchd_socket() {
    let path = repo_file("launchd/dev.mcp-authd.plist");
    let value = plist::Value::from_file(&path).expect("the LaunchAgent parses as a plist");
    let agent = value.as_dictionary().expect("a dictionary at the top");
    assert_eq!(
        agent.get("Label").and_then(|v| v.as_string()),
        Some("dev.mcp-authd")
    );
    let program = agent
        .get("ProgramArguments")
        .and_then(|v| v.as_array())
        .expect("ProgramArguments");
    assert_eq!(program[0].as_string(), Some("@MCP_AUTHD@"));
    let listeners = agent
        .get("Sockets")
        .and_then(|v| v.as_dictionary())
        .and_then(|s| s.get("Listeners"))
        .and_then(|v| v.as_dictionary())
        .expect("Sockets.Listeners, the name the daemon checks in with");
    assert_eq!(
        listeners.get("SockPathName").and_then(|v| v.as_string()),
        Some("@SOCKET@")
    );
    assert_eq!(
        listeners
            .get("SockPathMode")
            .and_then(|v| v.as_signed_integer()),
        Some(0o600)
    );
    assert_eq!(
        agent.get("Umask").and_then(|v| v.as_signed_integer()),
        Some(0o077)
    );
    // Filled in with ~/Library/Logs/mcp-authd.log: never a shared directory such as /tmp,
    // where another user could plant a link to a file of theirs.
    assert_eq!(
        agent.get("StandardErrorPath").and_then(|v| v.as_string()),
        Some("@LOG@")
    );
    if have("plutil") {
        let lint = Command::new("plutil")
            .arg("-lint")
            .arg(&path)
            .output()
            .unwrap();
        assert!(lint.status.success(), "{lint:?}");
    }
}

#[test]
fn the_daemon_serves_a_socket_passed_by_the_service_manager() {
    if !have("systemd-socket-activate") {
        eprintln!("NOTICE: systemd-socket-activate is not installed; socket activation not tested");
        return;
    }
    let home = DaemonHome::new("file", "");
    let socket = home.path().join("act.sock");
    let log = std::fs::File::create(home.log()).unwrap();
    // The real activator: it listens, and on the first connection execs the daemon with
    // the socket as descriptor 3 and LISTEN_FDS=1, LISTEN_PID=its pid.
    let mut activator = Command::new("systemd-socket-activate")
        .arg("--listen")
        .arg(&socket)
        .arg(format!("--setenv=MCP_AUTHD_HOME={}", home.path().display()))
        .arg("--setenv=MCP_AUTHD_LOG=debug")
        .arg(bin("mcp-authd"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // The file appears at bind(2), connections are taken from listen(2) on, and the
    // activator says "Listening on …" after both.
    wait_until("the activator's socket", Duration::from_secs(10), || {
        socket.exists() && home.log_text().contains("Listening on")
    });
    let out = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(&socket)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{out:?}\ndaemon log:\n{}",
        home.log_text()
    );
    let status: StatusResult = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status.socket, socket.display().to_string());
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the inherited socket is closed to other users");
    }
    assert_eq!(
        status.pid,
        activator.id(),
        "the activator became the daemon"
    );
    assert!(
        home.log_text()
            .contains("listening socket passed by the service manager"),
        "{}",
        home.log_text()
    );
    // Process hygiene: the inherited descriptor is close-on-exec (a browser the daemon
    // starts does not get the listening socket), and no core file would be written.
    let pid = activator.id();
    let fdinfo = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/3")).unwrap();
    let flags = fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .map(|f| u32::from_str_radix(f.trim(), 8).unwrap())
        .unwrap();
    assert_ne!(flags & libc::O_CLOEXEC as u32, 0, "{fdinfo}");
    assert_core_dumps_off(pid);
    // One daemon per data directory, activated or not: a second one, even on another
    // socket, exits naming the first.
    let second = second_daemon(&home, &home.path().join("second.sock"));
    assert!(
        second.contains(&format!(
            "another mcp-authd (pid {pid}) already uses the data directory"
        )),
        "{second}"
    );

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(activator.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = activator.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the daemon ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}\n{}", home.log_text());
    assert!(
        socket.exists(),
        "the service manager's socket belongs to it: the daemon leaves it in place"
    );
    // A restart finds the lock free.
    home.start(None).cli_ok(&["status"]);
}

/// Runs a second `mcp-authd` on `home`'s data directory with its own socket; it must exit
/// at once with an error, returned (stderr).
fn second_daemon(home: &DaemonHome, socket: &Path) -> String {
    let out = Command::new(bin("mcp-authd"))
        .arg("--socket")
        .arg(socket)
        .env("MCP_AUTHD_HOME", home.path())
        .env_remove("MCP_AUTHD_CONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!socket.exists(), "the second daemon did not listen");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// `RLIMIT_CORE` 0, as the kernel reports it for `pid`.
fn assert_core_dumps_off(pid: u32) {
    let core = mcp_authd_tests::procfs::core_limits(pid);
    assert_eq!(core, ("0".into(), "0".into()));
}

/// Two daemons on one data directory would redeem the same refresh tokens (a replay the
/// authorization server punishes by revoking the grant): the second exits with the
/// first's pid, the first keeps serving, and a restart takes the lock over.
#[test]
fn a_second_daemon_on_the_same_data_directory_exits_naming_the_first() {
    let home = DaemonHome::new("file", "");
    let first = home.start(None);
    let stderr = second_daemon(&home, &home.path().join("other.sock"));
    assert!(
        stderr.contains(&format!(
            "another mcp-authd (pid {}) already uses the data directory {}",
            first.pid(),
            home.path().display()
        )),
        "{stderr}"
    );
    first.cli_ok(&["status"]);
    assert_core_dumps_off(first.pid());
    let lock = std::fs::read_to_string(home.path().join("mcp-authd.lock")).unwrap();
    assert_eq!(lock.trim(), first.pid().to_string());
    first.stop();
    let again = home.start(None);
    again.cli_ok(&["status"]);
}

/// SIGTERM while a refresh is in flight: the caller still gets its token, the rotated
/// refresh token is stored (a later refresh works against a server that revokes the
/// whole grant on a replayed refresh token), the socket file is removed, exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_request_in_flight_finish_and_removes_the_socket() {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: 2,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    // Refreshes only when asked: the test counts them.
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let mut d = home.start(None);
    d.cli_ok(&["login", &url]);
    tokio::time::sleep(Duration::from_millis(3100)).await;

    auth.set_token_delay(Duration::from_millis(1500));
    let socket = d.socket().to_path_buf();
    let params = TokenGetParams {
        server: url.clone(),
        min_valid_secs: Some(1),
        ..Default::default()
    };
    let mut client = Client::connect(&socket).await.unwrap();
    let in_flight = tokio::spawn(async move {
        let r: Result<TokenGetResult, _> = client.call(TOKEN_GET, &params).await;
        r
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(auth.counts().refreshes, 0, "the refresh is still in flight");
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };

    let gone = Instant::now() + Duration::from_secs(1);
    while socket.exists() && Instant::now() < gone {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !socket.exists(),
        "the socket is removed as soon as the daemon stops accepting"
    );
    assert!(!in_flight.is_finished());

    let token = tokio::time::timeout(Duration::from_secs(10), in_flight)
        .await
        .expect("the reply came")
        .unwrap()
        .expect("the request in flight finished with a token");
    assert_eq!(auth.counts().refreshes, 1);
    assert!(
        auth.validate_access_token(&token.access_token, &url)
            .is_ok()
    );
    let exit = tokio::task::spawn_blocking(move || d.wait_exit(Duration::from_secs(10)))
        .await
        .unwrap()
        .expect("the daemon exited");
    assert!(exit.success(), "{exit:?}\n{}", home.log_text());

    // Nothing half-written: the next start refreshes with the stored rotated token.
    auth.set_token_delay(Duration::ZERO);
    let d = home.start(None);
    let t = d.cli_ok(&["token", &url, "--min-valid", "3000"]);
    assert!(auth.validate_access_token(t.trim(), &url).is_ok());
    assert_eq!(auth.counts().refresh_failures, 0);
}
