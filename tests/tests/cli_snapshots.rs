//! What people read, word for word: `mcp-auth --help` and the help of every subcommand,
//! `list`, `inspect`, `doctor` and the main errors, held in snapshots
//! (`tests/tests/snapshots/`). A change to any of them fails here until the snapshot is
//! updated with it (`cargo insta review`, or `INSTA_UPDATE=always`; see README), so the
//! change is reviewed as text. What differs from run to run — ports, temporary paths,
//! process ids, ids the servers make up, times — is replaced by a name in brackets, of
//! the same width where a table lines up on it.

use std::process::{Command, Output, Stdio};

use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

/// `mcp-auth ARGS` without a daemon (help texts), in a fixed environment.
fn cli(args: &[&str]) -> Output {
    Command::new(bin("mcp-auth"))
        .args(args)
        .env_remove("MCP_AUTHD_SOCKET")
        .env_remove("NO_COLOR")
        .env_remove("CLICOLOR_FORCE")
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-auth")
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("utf-8 stdout")
}

/// The subcommands a help text lists under `Commands:` (without `help`).
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// `mcp-auth --help` and `mcp-auth <command> … --help` for every command the help lists,
/// nested ones too: a new subcommand gets a snapshot of its own (which fails until it is
/// accepted).
#[test]
fn the_help_of_every_command() {
    let mut pending = vec![Vec::<String>::new()];
    let mut seen = 0;
    while let Some(path) = pending.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let out = cli(&args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        let help = text(&out);
        let name = if path.is_empty() {
            "help".to_owned()
        } else {
            format!("help_{}", path.join("_"))
        };
        insta::assert_snapshot!(name, help);
        seen += 1;
        for sub in subcommands(&help) {
            let mut deeper = path.clone();
            deeper.push(sub);
            pending.push(deeper);
        }
    }
    assert!(seen > 15, "the help lists the subcommands ({seen} helps)");
}

/// `value` replaced by `label`, padded with `_` (or cut) to the width of what it replaces,
/// so that a table's columns still line up in the snapshot.
struct Redact(Vec<(String, String)>);

impl Redact {
    fn new() -> Redact {
        Redact(Vec::new())
    }

    fn same_width(mut self, value: &str, label: &str) -> Redact {
        let width = value.chars().count();
        let mut fitted: String = label.chars().take(width).collect();
        while fitted.chars().count() < width {
            fitted.push('_');
        }
        self.0.push((value.to_owned(), fitted));
        self
    }

    fn any_width(mut self, value: &str, label: &str) -> Redact {
        self.0.push((value.to_owned(), label.to_owned()));
        self
    }

    fn apply(&self, text: &str) -> String {
        // Longest first: a value that contains another is replaced whole.
        let mut pairs: Vec<&(String, String)> = self.0.iter().collect();
        pairs.sort_by_key(|(value, _)| std::cmp::Reverse(value.len()));
        pairs
            .into_iter()
            .fold(text.to_owned(), |t, (value, label)| t.replace(value, label))
    }
}

/// A port of a loopback URL (`http://127.0.0.1:PORT/…`).
fn port_of(url: &str) -> String {
    url::Url::parse(url)
        .expect("a URL")
        .port()
        .expect("a port")
        .to_string()
}

fn run(d: &Daemon, home: &DaemonHome, args: &[&str]) -> (Option<i32>, String, String) {
    // The service check reads the home directory: this one has no service installed.
    let out = d
        .cli_command(args)
        .env("HOME", home.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("COLUMNS")
        .stdin(Stdio::null())
        .output()
        .expect("run mcp-auth");
    (
        out.status.code(),
        text(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One daemon, one grant: `list`, `inspect` and `doctor` as a person sees them (through a
/// pipe, so without colour), and the errors that name the next command: authorization
/// required, no such grant, the daemon not running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_inspect_doctor_and_the_main_errors() {
    // An access token of an hour and 55 s: `list` shows "in 1 h" for the first 55 s.
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: 3655,
        scopes_supported: vec!["mcp:read".into(), "offline_access".into()],
        ..AsOptions::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let other = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let (code, _, stderr) = run(&d, &home, &["token", &url]);
    let before_login = format!("exit {code:?}\n{stderr}");
    d.cli_ok(&["login", &url]);
    let client_id = auth.last_token_params().expect("a token request")["client_id"].clone();
    let (code, list, _) = run(&d, &home, &["list"]);
    assert_eq!(code, Some(0));
    let (code, inspect, _) = run(&d, &home, &["inspect", &url]);
    assert_eq!(code, Some(0));
    let (code, doctor, _) = run(&d, &home, &["doctor"]);
    assert_eq!(code, Some(0), "{doctor}");
    let (code, _, stderr) = run(&d, &home, &["inspect", other.url()]);
    let no_grant = format!("exit {code:?}\n{stderr}");
    let grants = d.grants();
    let grant = &grants.grants[0];

    let redact = Redact::new()
        .same_width(&port_of(&url), "mcp")
        .same_width(&port_of(other.url()), "other")
        .same_width(&port_of(auth.issuer()), "as")
        .same_width(&grant.id, "[grant]")
        .any_width(&home.path().display().to_string(), "[home]")
        .any_width(&d.pid().to_string(), "[pid]")
        .any_width(env!("CARGO_PKG_VERSION"), "[version]")
        .any_width(&client_id, "[client id]");
    insta::with_settings!({filters => vec![
        // Moments: "2026-11-30 08:10:03 UTC", "12:04:05".
        (r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d( UTC|Z)?", "[date]"),
        // Lengths of time that depend on when the test runs.
        (r"within \d+ s of", "within [seconds] of"),
    ]}, {
        insta::assert_snapshot!("token_before_login", redact.apply(&before_login));
        insta::assert_snapshot!("list", redact.apply(&list));
        insta::assert_snapshot!("inspect", redact.apply(&inspect));
        insta::assert_snapshot!("doctor", redact.apply(&doctor));
        insta::assert_snapshot!("inspect_without_grant", redact.apply(&no_grant));
    });

    let socket = home.socket();
    d.stop();
    // The daemon has stopped: every command says so, and how to start it.
    let (code, _, stderr) = run_without_daemon(&socket, &["list"]);
    let redact = Redact::new().any_width(&home.path().display().to_string(), "[home]");
    insta::assert_snapshot!(
        "daemon_not_running",
        redact.apply(&format!("exit {code:?}\n{stderr}"))
    );
}

fn run_without_daemon(socket: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let mut all = vec!["--socket", socket.to_str().expect("a UTF-8 path")];
    all.extend_from_slice(args);
    let out = cli(&all);
    (
        out.status.code(),
        text(&out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
