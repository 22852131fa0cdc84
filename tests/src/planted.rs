//! A hostile local user for the tests: a second Unix account, and a listener it plants
//! where a client looks for mcp-authd (`mcp-authd-test-planted-listener`).

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::daemon::bin;

/// The second account's name.
pub const OTHER_USER: &str = "mcpauthd-peer";

/// The uid of a second local user, created if missing (idempotent). `None`, with a
/// notice, when the tests do not run as root and cannot create one.
pub fn other_user() -> Option<u32> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("NOTICE: not root; tests with a second local user are skipped");
        return None;
    }
    let id = || Command::new("id").args(["-u", OTHER_USER]).output();
    if !id().is_ok_and(|o| o.status.success()) {
        let out = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                OTHER_USER,
            ])
            .output()
            .expect("useradd");
        assert!(
            out.status.success() || String::from_utf8_lossy(&out.stderr).contains("exists"),
            "{out:?}"
        );
    }
    let out = id().expect("id");
    Some(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a numeric uid"),
    )
}

/// `dir` owned by `uid` with `mode`.
pub fn own(dir: &Path, uid: u32, mode: u32) {
    std::os::unix::fs::chown(dir, Some(uid), None).expect("chown");
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// A copy of this workspace's binary `name` that every user can execute, whatever the
/// permissions of the build directory, in a temporary directory (returned to keep it).
pub fn shared_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tools = tempfile::Builder::new()
        .prefix("madpl")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = tools.path().join(name);
    std::fs::copy(bin(name), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    (tools, exe)
}

/// A planted listener, stopped when dropped.
pub struct Planted {
    child: Child,
    record: PathBuf,
    _tools: tempfile::TempDir,
}

impl Planted {
    /// Starts the listener at `socket` as `uid` (the test's own user when `None`) and waits
    /// until it listens.
    pub fn start(socket: &Path, uid: Option<u32>) -> Planted {
        let (tools, exe) = shared_copy("mcp-authd-test-planted-listener");
        // A record the other user can write.
        std::fs::set_permissions(tools.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let record = tools.path().join("record");
        let mut cmd = Command::new(&exe);
        cmd.arg(socket)
            .arg(&record)
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        let mut child = cmd.spawn().expect("start the planted listener");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the planted listener did not start");
        Planted {
            child,
            record,
            _tools: tools,
        }
    }

    /// What the listener recorded once `connections` connections were accepted and all of
    /// them closed (waits a few seconds for that).
    pub fn record(&self, connections: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.record).unwrap_or_default();
            let accepted = text.matches("accepted").count();
            let done = accepted >= connections && accepted == text.matches("received").count();
            if done || Instant::now() > deadline {
                return text;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Planted {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
