//! What people read: `mcp-auth list` as a table (with the account an OpenID Connect
//! id_token names), colour only where asked for, login progress without control
//! characters off a terminal, and an error for every failure that names the next command.

use std::process::{Command, Stdio};

use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer, TEST_ACCOUNT_EMAIL};
use serde_json::Value;

const ESC: char = '\u{1b}';

async fn servers(scopes: &[&str]) -> (AuthServer, McpServer) {
    let auth = AuthServer::start(AsOptions {
        scopes_supported: scopes.iter().map(|s| s.to_string()).collect(),
        ..AsOptions::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    (auth, mcp)
}

fn stdout(d: &Daemon, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = d.cli_with_env(args, env);
    assert!(out.status.success(), "{args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_through_a_pipe_is_a_plain_table_naming_the_account() {
    let (auth, mcp) = servers(&["mcp:read", "openid", "offline_access"]).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url, "--scope", "mcp:read openid"]);

    let list = stdout(&d, &["list"], &[]);
    assert!(!list.contains(ESC), "no colour into a pipe: {list:?}");
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 2, "a header and one row: {list}");
    let header: Vec<&str> = lines[0].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(
        header,
        [
            "SERVER",
            "ACCOUNT",
            "SCOPES",
            "EXPIRES",
            "LAST USED",
            "STATE",
            "KIND",
            "GRANT"
        ]
    );
    let row = lines[1];
    for want in [
        url.as_str(),
        TEST_ACCOUNT_EMAIL,
        "mcp:read openid offline_access",
        "never",
        " ok ",
        "authorization_code",
    ] {
        assert!(row.contains(want), "{want:?} missing from {row:?}");
    }
    assert!(
        row.contains("in 59 min") || row.contains("in 1 h"),
        "the access token's hour, humanised: {row}"
    );
    // Aligned: each header title starts where its value does.
    for title in ["ACCOUNT", "EXPIRES", "STATE"] {
        let at = lines[0].find(title).unwrap();
        assert_eq!(&row[at - 2..at], "  ", "{title} column:\n{list}");
        assert_ne!(&row[at..at + 1], " ", "{title} column:\n{list}");
    }

    // The JSON keeps its shape and gains `account`; the id_token itself is kept nowhere.
    let json: Value = serde_json::from_str(&stdout(&d, &["list", "--json"], &[])).unwrap();
    let g = &json["grants"][0];
    assert_eq!(g["account"], TEST_ACCOUNT_EMAIL);
    for key in ["id", "server", "scopes", "state", "has_refresh_token"] {
        assert!(g.get(key).is_some(), "{key} in {g}");
    }
    let inspect = stdout(&d, &["inspect", &url], &[]);
    assert!(
        inspect.contains(&format!("account: {TEST_ACCOUNT_EMAIL}")),
        "{inspect}"
    );

    // Colour: forced by the flag or CLICOLOR_FORCE, refused by NO_COLOR and `never`.
    let forced = stdout(&d, &["list", "--color", "always"], &[]);
    assert!(forced.contains("\u{1b}[32mok\u{1b}[0m"), "{forced:?}");
    assert!(stdout(&d, &["list"], &[("CLICOLOR_FORCE", "1")]).contains(ESC));
    let refused = stdout(&d, &["list"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")]);
    assert!(!refused.contains(ESC), "{refused:?}");
    // The same table, but for the clock: "in 1 h" may have become "in 59 min" meanwhile.
    let words = |table: &str| {
        table
            .replace("in 1 h", "in 59 min")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(words(&refused), words(&list));
    assert!(
        !stdout(
            &d,
            &["inspect", &url, "--color", "never"],
            &[("CLICOLOR_FORCE", "1")]
        )
        .contains(ESC)
    );
    d.stop();
    // The id_token (one of the AS's issued secrets) reached neither output nor disk.
    let db = home.database_bytes();
    let shown = format!("{list}{json}{inspect}");
    for secret in auth.issued_secrets() {
        assert!(!shown.contains(&secret), "a secret in the output");
        assert!(
            !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret in the database"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_openid_the_account_is_unknown() {
    let (_auth, mcp) = servers(&["mcp:read", "offline_access"]).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let json: Value = serde_json::from_str(&stdout(&d, &["list", "--json"], &[])).unwrap();
    assert!(json["grants"][0].get("account").is_none(), "{json}");
    let list = stdout(&d, &["list"], &[]);
    let row = list.lines().nth(1).unwrap();
    assert!(row.contains(&format!("{url}  —  ")), "{row}");
    d.stop();
}

/// Off a terminal the wait shows the URL and, every 10 s, a plain line; the timeout error
/// says how to run the login again with more time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_progress_off_a_terminal_has_no_control_characters() {
    let (_auth, mcp) = servers(&["mcp:read"]).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let out = d.cli(&["login", &url, "--no-browser", "--timeout", "12"]);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !stderr.chars().any(|c| c.is_control() && c != '\n'),
        "{stderr:?}"
    );
    assert!(stderr.contains("/authorize?"), "the URL: {stderr}");
    assert!(
        stderr.contains("still waiting for the browser login: 10 s of 12 s"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("mcp-auth login {url} --timeout 600")),
        "{stderr}"
    );
    d.stop();
}

/// Each way `mcp-auth` fails names the command to run next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_exit_names_the_next_command() {
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let unknown = "http://127.0.0.1:9/mcp";
    let mut cases: Vec<(&str, Vec<&str>, i32, String)> = vec![
        (
            "no such grant",
            vec!["inspect", "g_nope"],
            6,
            "mcp-auth list".into(),
        ),
        (
            "no such grant to revoke",
            vec!["revoke", "g_nope"],
            6,
            "mcp-auth list".into(),
        ),
        (
            "authorization required",
            vec!["token", unknown],
            4,
            format!("mcp-auth login {unknown}"),
        ),
        (
            "nothing answers at the server",
            vec!["login", "http://127.0.0.1:9/mcp", "--no-browser"],
            7,
            "mcp-auth login http://127.0.0.1:9/mcp".into(),
        ),
        (
            "not a URL",
            vec!["login", "not a url"],
            1,
            "mcp-auth ".into(),
        ),
        (
            "an unknown subcommand (clap)",
            vec!["frobnicate"],
            2,
            "mcp-auth ".into(),
        ),
        (
            "a missing argument (clap)",
            vec!["token"],
            2,
            "mcp-auth token".into(),
        ),
    ];
    std::fs::write(home.path().join("config.toml"), "secret_store = \n").unwrap();
    cases.push((
        "an invalid config file",
        vec!["reload"],
        1,
        "mcp-auth reload".into(),
    ));
    for (case, args, code, command) in cases {
        let out = d.cli(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{case}: {stderr}");
        assert!(
            stderr.contains(&command),
            "{case}: {command:?} missing from {stderr}"
        );
    }
    d.stop();

    // The daemon is gone now.
    let out = Command::new(bin("mcp-auth"))
        .args(["--socket", &home.socket().display().to_string(), "list"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("start it: mcp-authd") && stderr.contains("mcp-auth service install"),
        "{stderr}"
    );
}
