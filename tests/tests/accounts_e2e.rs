//! Several accounts per server (`--account`), end to end: the real binaries, the test
//! authorization server (which makes every `login_hint` a user of its own) and the
//! protected MCP server on 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use mcp_authd_ipc::methods::{
    ChallengeParams, TOKEN_CHALLENGE, TOKEN_GET, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::{
    AsOptions, AuthServer, McpOptions, McpServer, TEST_ACCOUNT_EMAIL, TEST_ACCOUNT_SUBJECT,
    subject_of_hint,
};
use serde_json::{Value, json};

const WORK: &str = "jane@corp.example";
const PERSONAL: &str = "jane@home.example";

async fn servers() -> (AuthServer, McpServer) {
    let auth = AuthServer::start(AsOptions {
        scopes_supported: ["mcp:read", "openid", "offline_access"]
            .map(String::from)
            .to_vec(),
        ..AsOptions::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    (auth, mcp)
}

fn json_of(d: &Daemon, args: &[&str]) -> Value {
    serde_json::from_str(&d.cli_ok(args)).unwrap()
}

fn token(d: &Daemon, url: &str, account: Option<&str>, extra: &[&str]) -> String {
    let mut args = vec!["token", url];
    if let Some(a) = account {
        args.extend(["--account", a]);
    }
    args.extend(extra);
    d.cli_ok(&args).trim().to_string()
}

fn failed(out: &Output, code: i32) -> String {
    assert_eq!(out.status.code(), Some(code), "{out:?}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The grant of `account` (`None`: the default one) in `list --json`.
fn listed(list: &Value, account: Option<&str>) -> Option<Value> {
    list["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["account_name"].as_str() == account)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_accounts_of_one_server_are_kept_apart() {
    let (auth, mcp) = servers().await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start(None);
    let scope = ["--scope", "mcp:read openid"];

    // The default account, as before accounts had names: no login_hint is sent.
    d.cli_ok(&[&["login", url.as_str()][..], &scope].concat());
    assert_eq!(
        auth.last_authorize_params().unwrap().get("login_hint"),
        None
    );
    // A named account with an explicit hint, and one whose name is an email (the hint).
    let out = d.cli_ok(
        &[
            &[
                "login",
                url.as_str(),
                "--account",
                "work",
                "--login-hint",
                WORK,
            ][..],
            &scope,
        ]
        .concat(),
    );
    assert!(out.contains(&format!("as account work ({WORK})")), "{out}");
    assert_eq!(
        auth.last_authorize_params()
            .unwrap()
            .get("login_hint")
            .map(String::as_str),
        Some(WORK)
    );
    d.cli_ok(&[&["login", url.as_str(), "--account", PERSONAL][..], &scope].concat());
    assert_eq!(
        auth.last_authorize_params()
            .unwrap()
            .get("login_hint")
            .map(String::as_str),
        Some(PERSONAL),
        "an account named by an email is its own hint"
    );
    assert_eq!(auth.counts().code_exchanges, 3);

    // Three grants, three users, three tokens.
    let default = token(&d, &url, None, &[]);
    let work = token(&d, &url, Some("work"), &[]);
    let personal = token(&d, &url, Some(PERSONAL), &[]);
    assert_eq!(
        auth.subject_of(&default).as_deref(),
        Some(TEST_ACCOUNT_SUBJECT)
    );
    assert_eq!(auth.subject_of(&work), Some(subject_of_hint(WORK)));
    assert_eq!(auth.subject_of(&personal), Some(subject_of_hint(PERSONAL)));
    let headers: Value =
        serde_json::from_str(&d.cli_ok(&["headers", &url, "--account", "work"])).unwrap();
    assert_eq!(headers["Authorization"], format!("Bearer {work}"));

    // `list` shows the name with the identity beside it; the default account as before.
    let list = d.cli_ok(&["list"]);
    assert!(list.contains(&format!("work ({WORK})")), "{list}");
    assert!(list.contains(TEST_ACCOUNT_EMAIL), "{list}");
    assert!(
        list.lines()
            .any(|l| l.contains(PERSONAL) && !l.contains(&format!("({PERSONAL})"))),
        "a name equal to its identity is shown once: {list}"
    );
    let json = json_of(&d, &["list", "--json"]);
    assert_eq!(json["grants"].as_array().unwrap().len(), 3, "{json}");
    let g_default = listed(&json, None).expect("the default account's grant");
    let g_work = listed(&json, Some("work")).expect("work's grant");
    assert_eq!(g_default["account"], TEST_ACCOUNT_EMAIL);
    assert!(g_default.get("account_name").is_none(), "{g_default}");
    assert_eq!(g_work["account"], WORK);
    assert_eq!(g_work["server"], g_default["server"]);
    assert_ne!(g_work["id"], g_default["id"]);
    let inspect = d.cli_ok(&["inspect", &url, "--account", "work"]);
    assert!(
        inspect.contains(&format!("account: work ({WORK})")),
        "{inspect}"
    );
    assert!(
        inspect.contains(g_work["id"].as_str().unwrap()),
        "{inspect}"
    );
    let inspected = json_of(&d, &["inspect", &url, "--account", "work", "--json"]);
    assert_eq!(inspected["account_name"], "work");
    assert_eq!(inspected["id"], g_work["id"]);
    // A grant id of another account is refused rather than silently used.
    let out = d.cli(&[
        "inspect",
        g_default["id"].as_str().unwrap(),
        "--account",
        "work",
    ]);
    failed(&out, 6);

    // Each refreshes on its own: the server refusing work's token (token.challenge with
    // the account) refreshes work's grant and leaves the others' tokens alone.
    let mut client = Client::connect(d.socket()).await.unwrap();
    let params = ChallengeParams {
        server: url.clone(),
        status: 401,
        rejected_token: Some(work.clone()),
        account: Some("work".into()),
        ..Default::default()
    };
    let mut renewed: TokenGetResult = client.call(TOKEN_CHALLENGE, &params).await.unwrap();
    let refreshed = std::mem::take(&mut renewed.access_token);
    assert_ne!(refreshed, work);
    assert_eq!(token(&d, &url, Some("work"), &[]), refreshed);
    assert_eq!(auth.counts().refreshes, 1);
    assert_eq!(auth.subject_of(&refreshed), Some(subject_of_hint(WORK)));
    assert_eq!(token(&d, &url, None, &[]), default);
    assert_eq!(token(&d, &url, Some(PERSONAL), &[]), personal);
    assert_eq!(auth.counts().refreshes, 1);

    // A new login of one account replaces only its grant; its hint is remembered.
    d.cli_ok(&[&["login", url.as_str(), "--account", "work"][..], &scope].concat());
    assert_eq!(
        auth.last_authorize_params()
            .unwrap()
            .get("login_hint")
            .map(String::as_str),
        Some(WORK),
        "the account's last hint is sent again"
    );
    let after = json_of(&d, &["list", "--json"]);
    assert_eq!(after["grants"].as_array().unwrap().len(), 3);
    assert_eq!(listed(&after, Some("work")).unwrap()["id"], g_work["id"]);
    assert_eq!(token(&d, &url, None, &[]), default);
    assert_eq!(token(&d, &url, Some(PERSONAL), &[]), personal);

    // Revoking one account leaves the others working.
    d.cli_ok(&["revoke", &url, "--account", "work"]);
    let stderr = failed(&d.cli(&["token", &url, "--account", "work"]), 4);
    assert!(
        stderr.contains(&format!("mcp-auth login {url} --account work")),
        "the command names the account: {stderr}"
    );
    assert!(
        stderr.contains(PERSONAL),
        "the accounts there are listed: {stderr}"
    );
    assert_eq!(token(&d, &url, None, &[]), default);
    assert_eq!(token(&d, &url, Some(PERSONAL), &[]), personal);
    assert!(auth.validate_access_token(&personal, &url).is_ok());

    // Without --account it is the default account only, never a guess among the others.
    d.cli_ok(&["logout", &url]);
    let stderr = failed(&d.cli(&["token", &url]), 4);
    assert!(
        stderr.contains("without --account") && stderr.contains(PERSONAL),
        "{stderr}"
    );
    assert_eq!(token(&d, &url, Some(PERSONAL), &[]), personal);

    // Account names that would need quoting in a suggested command are refused early,
    // by the CLI and by the daemon; so is a login_hint with a control character.
    let stderr = failed(&d.cli(&["token", &url, "--account", "a b"]), 2);
    assert!(stderr.contains("not an account name"), "{stderr}");
    let params = TokenGetParams {
        server: url.clone(),
        account: Some("$(reboot)".into()),
        ..Default::default()
    };
    match client.call::<_, TokenGetResult>(TOKEN_GET, &params).await {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.kind(), Some(ErrorKind::InvalidParams), "{e:?}");
            assert!(e.message.contains("not an account name"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    let stderr = failed(
        &d.cli(&[
            "login",
            &url,
            "--account",
            "x",
            "--login-hint",
            "jane\nFake: line",
        ]),
        1,
    );
    assert!(stderr.contains("control character"), "{stderr}");

    d.stop();
    let db = home.database_bytes();
    let log = home.log_text();
    for secret in auth.issued_secrets() {
        assert!(
            !db.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "a secret in the database"
        );
        assert!(!log.contains(&secret), "a secret in the log");
    }
}

/// `mcp-auth proxy --account`: the requests carry that account's token, and a proxy of
/// an account not logged in yet logs it in (with its name as the hint) on the 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_uses_the_account_given() {
    let (auth, mcp) = servers().await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    d.cli_ok(&["login", &url, "--account", "work", "--login-hint", WORK]);

    let call_through_proxy = |account: &str| {
        let mut child = Command::new(bin("mcp-auth"))
            .arg("--socket")
            .arg(d.socket())
            .args(["proxy", &url, "--account", account])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the proxy");
        let mut stdin = child.stdin.take().unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let requests = [
            json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                   "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                              "clientInfo": {"name": "t", "version": "0"}}}),
            json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call",
                   "params": {"name": "whoami", "arguments": {}}}),
        ];
        for request in requests {
            writeln!(stdin, "{request}").unwrap();
            let reply: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
            assert!(reply.get("result").is_some(), "{reply}");
        }
        drop(stdin);
        let _ = child.wait();
        mcp.last_authorized_token().expect("an authorized request")
    };

    let used = call_through_proxy("work");
    assert_eq!(auth.subject_of(&used), Some(subject_of_hint(WORK)));
    assert_eq!(used, token(&d, &url, Some("work"), &[]));

    // Not logged in as this account yet: the 401 starts its login (the browser stand-in
    // consents), with the email-like name as login_hint, and only it gets a new grant.
    let fresh = "sam@corp.example";
    let used = call_through_proxy(fresh);
    assert_eq!(auth.subject_of(&used), Some(subject_of_hint(fresh)));
    assert_eq!(
        auth.last_authorize_params()
            .unwrap()
            .get("login_hint")
            .map(String::as_str),
        Some(fresh)
    );
    let list = json_of(&d, &["list", "--json"]);
    assert_eq!(list["grants"].as_array().unwrap().len(), 3, "{list}");
    assert_eq!(
        auth.subject_of(&token(&d, &url, None, &[])).as_deref(),
        Some(TEST_ACCOUNT_SUBJECT)
    );
    d.stop();
}

/// A database an older daemon left (schema 7: one grant per resource and issuer, no
/// account columns) is upgraded in place: its grant becomes the default account's and
/// keeps working through its stored refresh token; named accounts can join it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_from_before_accounts_still_works_after_the_upgrade() {
    let (auth, mcp) = servers().await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let before = json_of(&d, &["list", "--json"]);
    d.stop();

    downgrade_to_schema_7(&home.path().join("state.db")).await;

    let d = home.start(None);
    let status = json_of(&d, &["status", "--json"]);
    assert_eq!(status["database_schema"], latest_schema(), "{status}");
    let list = json_of(&d, &["list", "--json"]);
    assert_eq!(list["grants"][0]["id"], before["grants"][0]["id"]);
    // The migrations after the rebuild ran too (0009: how the grant is obtained).
    assert_eq!(
        list["grants"][0]["grant_type"], "authorization_code",
        "{list}"
    );
    assert!(list["grants"][0].get("account_name").is_none(), "{list}");
    // No token in memory after the restart: the stored refresh token makes one.
    let t = token(&d, &url, None, &[]);
    assert_eq!(auth.counts().refreshes, 1);
    assert!(auth.validate_access_token(&t, &url).is_ok());
    d.cli_ok(&["login", &url, "--account", "work"]);
    assert_ne!(token(&d, &url, Some("work"), &[]), t);
    assert_eq!(token(&d, &url, None, &[]), t);
    d.stop();
}

/// Rebuilds `grants` as migrations 1–7 made it and forgets migration 8, as if the
/// database had never met this version.
/// The newest migration's version: what an upgraded database ends at.
fn latest_schema() -> u64 {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../daemon/migrations");
    std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.split('_').next()?.parse().ok()
        })
        .max()
        .unwrap()
}

async fn downgrade_to_schema_7(path: &std::path::Path) {
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .connect()
        .await
        .unwrap();
    let script = "
        PRAGMA foreign_keys = OFF;
        BEGIN;
        CREATE TABLE grants_old (
            id TEXT PRIMARY KEY NOT NULL, server_url TEXT NOT NULL, resource TEXT NOT NULL,
            issuer TEXT NOT NULL, registration_id TEXT NOT NULL REFERENCES registrations (id),
            scopes TEXT NOT NULL,
            state TEXT NOT NULL CHECK (state IN ('active', 'needs_login')),
            needs_login_reason TEXT, has_refresh_token INTEGER NOT NULL,
            access_expires_at INTEGER, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL,
            last_used_at INTEGER, last_refresh_at INTEGER,
            UNIQUE (resource, issuer));
        INSERT INTO grants_old SELECT id, server_url, resource, issuer, registration_id, scopes,
            state, needs_login_reason, has_refresh_token, access_expires_at, created_at,
            updated_at, last_used_at, last_refresh_at FROM grants;
        DROP TABLE grants;
        ALTER TABLE grants_old RENAME TO grants;
        CREATE INDEX grants_by_server ON grants (server_url);
        ALTER TABLE grants ADD COLUMN refresh_started_at INTEGER;
        ALTER TABLE grants ADD COLUMN account TEXT;
        DELETE FROM _sqlx_migrations WHERE version >= 8;
        COMMIT;";
    sqlx::raw_sql(script).execute(&mut conn).await.unwrap();
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('grants')")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    assert!(
        !columns.iter().any(|c| c == "account_name"),
        "the downgrade must remove the column, or the test proves nothing"
    );
}
