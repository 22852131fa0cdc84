//! Drives the real `mcp-authd` and `mcp-auth` binaries: an isolated daemon per test (its
//! own home, socket, config and secret store), the CLI pointed at it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// A built binary of this workspace (`cargo build --workspace` puts them beside the test
/// executables' parent directory), refused when it is older than a source it was built
/// from: an end-to-end test must never pass or fail on yesterday's code.
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
    // Once per binary and test process: `bin` runs for every CLI call.
    static FRESH: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
    let mut fresh = FRESH.lock().unwrap_or_else(PoisonError::into_inner);
    if !fresh.contains(&path) {
        if let Err(stale) = check_fresh(&path) {
            panic!("{stale}");
        }
        fresh.push(path.clone());
    }
    path
}

/// A binary built before one of its sources last changed.
#[derive(Debug)]
pub struct Stale {
    pub binary: PathBuf,
    pub source: PathBuf,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stale binary {} (built before {} changed): run `cargo build --workspace`",
            self.binary.display(),
            self.source.display()
        )
    }
}

/// Whether `binary` is at least as new as every file rustc read to build it. Cargo writes
/// that list beside the binary (`<binary>.d`, one Makefile rule) and decides by the same
/// mtimes whether to rebuild, so a binary this refuses is one `cargo build` replaces; a
/// source that is no part of the binary (a `#[cfg(test)]` module) never makes it stale.
/// Paths in the list are absolute: when the target directory was copied from another
/// checkout, they are moved to this one. Without the list there is nothing to compare.
pub fn check_fresh(binary: &Path) -> Result<(), Stale> {
    let Ok(rule) = std::fs::read_to_string(binary.with_extension("d")) else {
        return Ok(());
    };
    let built = modified(binary).expect("the binary's mtime");
    let mut paths = dep_info_paths(&rule).into_iter();
    let Some(target) = paths.next() else {
        return Ok(());
    };
    let (from, to) = moved_root(&target, binary);
    for source in paths {
        let source = match source.strip_prefix(&from) {
            Ok(rest) => to.join(rest),
            Err(_) => source,
        };
        // A source removed since is in the next build's list no more.
        if modified(&source).is_some_and(|changed| changed > built) {
            return Err(Stale {
                binary: binary.to_path_buf(),
                source,
            });
        }
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The paths of a Makefile rule (`target: dep dep…`) as rustc and cargo write it: spaces
/// in paths escaped with a backslash; the target first.
fn dep_info_paths(rule: &str) -> Vec<PathBuf> {
    let line = rule.lines().next().unwrap_or_default();
    let mut paths = Vec::new();
    let mut current = String::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => current.extend(chars.next()),
            ' ' => {
                if !current.is_empty() {
                    paths.push(PathBuf::from(std::mem::take(&mut current)));
                }
            }
            _ => current.push(c),
        }
    }
    if !current.is_empty() {
        paths.push(PathBuf::from(current));
    }
    if let Some(target) = paths.first_mut()
        && let Some(name) = target.to_str().and_then(|t| t.strip_suffix(':'))
    {
        *target = PathBuf::from(name);
    }
    paths
}

/// The checkout a binary was built in and the one it is in now: the parts of the two
/// paths before their common end (`…/target/debug/mcp-authd`).
fn moved_root(built_as: &Path, now: &Path) -> (PathBuf, PathBuf) {
    let (mut from, mut to) = (built_as.to_path_buf(), now.to_path_buf());
    while from.file_name().is_some() && from.file_name() == to.file_name() {
        from.pop();
        to.pop();
    }
    (from, to)
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

impl DaemonHome {
    /// Runs the daemon as a task of the calling test's runtime (the library's
    /// [`mcp_authd::run`], the code the binary runs) and waits until it answers `status`.
    /// For tests of the daemon's own timing, on a current-thread runtime: call it with the
    /// clock running (start-up waits on SQLite's own thread, and a paused clock would jump
    /// over sqlx's limits meanwhile), then pause the clock (`tokio::time::pause`, or
    /// [`fast_clock`] while the daemon still talks to SQLite or servers) and the daemon's
    /// time limits pass without real waiting. There is no log file: the daemon's tracing
    /// goes to the test's subscriber (none). Whatever needs the process itself — signals,
    /// the environment it passes to a browser, crash points — needs [`DaemonHome::start`].
    pub async fn start_in_process(&self) -> InProcessDaemon {
        let options = mcp_authd::Options {
            socket: Some(self.socket()),
            home: Some(self.path().to_path_buf()),
            config: Some(self.path().join("config.toml")),
            inherited: None,
            handle_signals: false,
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mcp_authd::run(options, async {
            let _ = stopped.await;
        }));
        // Real time, whatever the test's clock does.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if task.is_finished() {
                panic!("mcp-authd stopped at start-up: {:?}", task.await);
            }
            if let Ok(mut client) = mcp_authd_ipc::Client::connect(&self.socket()).await
                && client
                    .call::<_, serde_json::Value>("status", &serde_json::json!({}))
                    .await
                    .is_ok()
            {
                break;
            }
            assert!(Instant::now() < deadline, "mcp-authd did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The probe's connection ends before the test begins: it holds no slot.
        tokio::time::sleep(Duration::from_millis(50)).await;
        InProcessDaemon {
            stop: Some(stop),
            task,
            socket: self.socket(),
        }
    }
}

/// A daemon running inside the test process ([`DaemonHome::start_in_process`]); dropping
/// it without [`InProcessDaemon::stop`] ends it with the test's runtime.
pub struct InProcessDaemon {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    socket: PathBuf,
}

impl InProcessDaemon {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Logs in to `server` as a user's browser would, with no browser: the daemon is told
    /// to open none, and the authorization URL it sends (`login.pending`) is fetched here,
    /// following redirects on loopback to the daemon's redirect listener. The test
    /// authorization server consents to a plain GET. Takes real time: call it while the
    /// clock runs.
    pub async fn login(&self, server: &str) {
        let params = mcp_authd_ipc::methods::LoginParams {
            server: server.to_owned(),
            open_browser: Some(false),
            ..Default::default()
        };
        self.login_with(params, |url| async move {
            let loopback_only = reqwest::redirect::Policy::custom(|attempt| {
                let host = attempt.url().host_str().unwrap_or_default().to_owned();
                if attempt.previous().len() < 10 && (host == "127.0.0.1" || host == "localhost") {
                    attempt.follow()
                } else {
                    attempt.error(format!("not following a redirect to {host}"))
                }
            });
            let http = reqwest::Client::builder()
                .redirect(loopback_only)
                .no_proxy()
                .build()
                .expect("an HTTP client");
            http.get(url)
                .send()
                .await
                .and_then(reqwest::Response::error_for_status)
                .expect("the redirect listener accepts the login");
        })
        .await
        .expect("the login succeeds");
    }

    /// Runs the `login` method with `params`; `user` gets the URL of `login.pending` (the
    /// authorization URL, or a device login's verification URL) and plays the user there.
    pub async fn login_with<F>(
        &self,
        params: mcp_authd_ipc::methods::LoginParams,
        user: impl FnOnce(String) -> F + Send + 'static,
    ) -> Result<serde_json::Value, mcp_authd_ipc::ClientError>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        use mcp_authd_ipc::methods::{LOGIN, LOGIN_PENDING, LoginPending};
        let mut client = mcp_authd_ipc::Client::connect(&self.socket).await?;
        let (url_tx, url_rx) = tokio::sync::oneshot::channel::<String>();
        let user = tokio::spawn(async move {
            if let Ok(url) = url_rx.await {
                user(url).await;
            }
        });
        let mut url_tx = Some(url_tx);
        let result = client
            .call_with_notifications(LOGIN, &params, |n| {
                if n.method == LOGIN_PENDING
                    && let Ok(pending) = serde_json::from_value::<LoginPending>(n.params)
                    && let Some(tx) = url_tx.take()
                {
                    let _ = tx.send(pending.authorization_url);
                }
            })
            .await;
        drop(url_tx);
        user.await.expect("the user's part of the login");
        result
    }

    /// The graceful stop a SIGTERM starts; returns how the daemon ended.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.expect("the daemon task")
    }
}

/// Pauses tokio's clock, then lets it run at most `times` as fast as real time, until the
/// returned guard is dropped: for a test whose daemon talks over real sockets and to
/// SQLite's own thread. A paused clock jumps to the next timer whenever the runtime would
/// wait, even for I/O a moment away; a daemon waiting on SQLite (or a server) could see its
/// own limits pass in one jump. Here a timer is always due within one step of 1 ms × times,
/// and between two steps the clock stands still for 1 ms of real time (tokio does not
/// advance a paused clock while a blocking task runs), so 30 s limits take 30/times s of
/// real waiting to pass.
pub fn fast_clock(times: u32) -> FastClock {
    tokio::time::pause();
    let step = Duration::from_millis(1) * times;
    FastClock(tokio::spawn(async move {
        loop {
            let _ =
                tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1))).await;
            tokio::time::sleep(step).await;
        }
    }))
}

/// The steps of [`fast_clock`]; dropping it stops them (the clock stays paused).
pub struct FastClock(tokio::task::JoinHandle<()>);

impl Drop for FastClock {
    fn drop(&mut self) {
        self.0.abort();
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    /// A binary with its dep-info, and one source, each with a given mtime.
    fn built(dir: &Path, built_at: SystemTime, changed_at: SystemTime) -> (PathBuf, PathBuf) {
        let src = dir.join("my crate/src");
        std::fs::create_dir_all(&src).unwrap();
        let source = src.join("main.rs");
        std::fs::write(&source, "fn main() {}").unwrap();
        let binary = dir.join("target/debug/tool");
        std::fs::create_dir_all(binary.parent().unwrap()).unwrap();
        std::fs::write(&binary, "binary").unwrap();
        let escaped = source.display().to_string().replace(' ', "\\ ");
        std::fs::write(
            binary.with_extension("d"),
            format!("{}: {escaped}\n\n{escaped}:\n", binary.display()),
        )
        .unwrap();
        let set = |path: &Path, at| {
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(at)
                .unwrap();
        };
        set(&binary, built_at);
        set(&source, changed_at);
        (binary, source)
    }

    #[test]
    fn a_binary_older_than_a_source_is_refused_with_what_to_run() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (binary, source) = built(dir.path(), now - Duration::from_secs(60), now);
        let stale = check_fresh(&binary).expect_err("a source changed after the build");
        assert_eq!(stale.source, source);
        assert_eq!(
            stale.to_string(),
            format!(
                "stale binary {} (built before {} changed): run `cargo build --workspace`",
                binary.display(),
                source.display()
            )
        );
    }

    #[test]
    fn a_binary_newer_than_its_sources_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        let (binary, _) = built(dir.path(), now, now - Duration::from_secs(60));
        check_fresh(&binary).expect("built after every change");
    }

    /// A target directory copied from another checkout names that checkout's sources; the
    /// ones compared are this checkout's.
    #[test]
    fn a_copied_target_directory_is_judged_by_this_checkouts_sources() {
        let elsewhere = tempfile::tempdir().unwrap();
        let here = tempfile::tempdir().unwrap();
        let now = SystemTime::now();
        // Fresh where it was built; here, its source changed after the copy.
        built(elsewhere.path(), now, now - Duration::from_secs(60));
        let (binary, source) = built(here.path(), now - Duration::from_secs(60), now);
        let rule = std::fs::read_to_string(
            elsewhere
                .path()
                .join("target/debug/tool")
                .with_extension("d"),
        )
        .unwrap();
        std::fs::write(binary.with_extension("d"), rule).unwrap();
        let stale = check_fresh(&binary).expect_err("judged by this checkout's source");
        assert_eq!(stale.source, source);
    }
}
