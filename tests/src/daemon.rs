//! Drives the real `mcp-authd` and `mcp-auth` binaries: an isolated daemon per test (its
//! own home, socket, config and secret store), the CLI pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A built binary of this workspace (`cargo build --workspace` puts them beside the test
/// executables' parent directory).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe
        .parent()
        .and_then(|d| {
            if d.ends_with("deps") {
                d.parent()
            } else {
                Some(d)
            }
        })
        .expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        path.display()
    );
    path
}

/// Where one daemon keeps everything; survives daemon restarts within a test.
pub struct DaemonHome {
    dir: tempfile::TempDir,
}

impl DaemonHome {
    /// A fresh home with a config file selecting `secret_store` (`file`, `keychain`, `auto`).
    pub fn new(secret_store: &str, extra_config: &str) -> DaemonHome {
        // Short path: Unix socket paths are limited to ~100 bytes.
        let dir = tempfile::Builder::new()
            .prefix("mad")
            .tempdir_in("/tmp")
            .expect("tempdir");
        // Private, as a data directory and a socket's directory must be (clients refuse a
        // socket in a directory open to others); tempfile leaves it to the umask.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .expect("chmod 700");
        std::fs::write(
            dir.path().join("config.toml"),
            format!("secret_store = \"{secret_store}\"\nlogin_timeout_secs = 30\n{extra_config}"),
        )
        .expect("config");
        DaemonHome { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("d.sock")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.path().join("daemon.log")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    /// Bytes of every SQLite file (main, WAL, shared memory).
    pub fn database_bytes(&self) -> Vec<u8> {
        let mut all = Vec::new();
        for name in ["state.db", "state.db-wal", "state.db-shm"] {
            if let Ok(b) = std::fs::read(self.dir.path().join(name)) {
                all.extend(b);
            }
        }
        all
    }

    /// Starts the daemon and waits until it answers `status`.
    pub fn start(&self, browser: Option<&str>) -> Daemon {
        self.start_with_env(browser, &[])
    }

    /// The daemon command with this home's socket, config, browser stand-in and TRACE log.
    pub fn command(&self, browser: Option<&str>, env: &[(&str, &str)]) -> Command {
        let browser = browser
            .map(str::to_string)
            .unwrap_or_else(|| bin("mcp-authd-test-browser").display().to_string());
        let mut cmd = Command::new(bin("mcp-authd"));
        cmd.arg("--socket")
            .arg(self.socket())
            .env("MCP_AUTHD_HOME", self.path())
            .env_remove("MCP_AUTHD_CONFIG")
            .env("MCP_AUTHD_BROWSER", browser)
            .env("MCP_AUTHD_LOG", "trace")
            .envs(env.iter().copied())
            .stdin(Stdio::null());
        cmd
    }

    /// Starts the daemon with extra environment variables and waits until it answers.
    pub fn start_with_env(&self, browser: Option<&str>, env: &[(&str, &str)]) -> Daemon {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .expect("log file");
        let child = self
            .command(browser, env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn mcp-authd");
        let mut daemon = Daemon {
            child: Some(child),
            socket: self.socket(),
            log: self.log(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if daemon.cli(&["status"]).status.success() {
                return daemon;
            }
            if let Some(status) = daemon
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "mcp-authd exited with {status} at start-up:\n{}",
                    self.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "mcp-authd did not start:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A running daemon; stopped (SIGTERM) when dropped.
pub struct Daemon {
    child: Option<Child>,
    socket: PathBuf,
    log: PathBuf,
}

impl Daemon {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Runs `mcp-auth --socket <ours> ARGS`, its output through pipes.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_env(args, &[])
    }

    /// [`Daemon::cli`] with extra environment variables. The colour switches of the
    /// developer's own environment are removed, so output is the same everywhere.
    pub fn cli_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.cli_command(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .expect("run mcp-auth")
    }

    /// `mcp-auth --socket <ours> ARGS` to spawn (e.g. a proxy with piped stdio), without
    /// the developer's colour switches.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(bin("mcp-auth"));
        cmd.arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("MCP_AUTHD_SOCKET")
            .env_remove("NO_COLOR")
            .env_remove("CLICOLOR_FORCE");
        cmd
    }

    /// Runs the CLI and insists on success; returns stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "mcp-auth {args:?} failed ({}):\nstdout: {}\nstderr: {}\ndaemon log tail:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 40)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// `mcp-auth list --json`, parsed.
    pub fn grants(&self) -> mcp_authd_ipc::methods::GrantsList {
        serde_json::from_str(&self.cli_ok(&["list", "--json"])).expect("list --json")
    }

    /// The daemon's process id (for sending it signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("daemon running")
    }

    /// Waits up to `timeout` for the daemon to exit by itself (after a signal the test
    /// sent); `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut()?.try_wait().ok().flatten() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Graceful stop: SIGTERM, then wait.
    pub fn stop(mut self) {
        self.terminate();
    }

    /// Whether the process has ended (on its own, e.g. at a crash point).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Crash: SIGKILL, no chance to clean up.
    pub fn kill(mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            panic!("mcp-authd did not stop within 10 s of SIGTERM");
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
