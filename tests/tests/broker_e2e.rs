//! The whole broker, end to end, with real parts: the `mcp-authd` and `mcp-auth` binaries,
//! a test authorization server and a protected MCP server on 127.0.0.1, a real SQLite file,
//! and the file secret store or a real Secret Service.

use std::collections::BTreeMap;

use mcp_authd_ipc::methods::{GrantsList, StatusResult, TOKEN_GET, TokenGetParams, TokenGetResult};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, fast_clock};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer, PreRegisteredClient};

/// CI sets this to `required` inside a gnome-keyring session; then the keychain test must
/// run against the real Secret Service and may not fall back.
const KEYCHAIN_ENV: &str = "MCP_AUTHD_TEST_KEYCHAIN";

/// Config for tests of the refresh a caller triggers: the background refresh would add
/// refreshes of its own to the counts.
const ON_DEMAND_ONLY: &str = "background_refresh_days = 0\n";

/// Access-token lifetime of the test AS: short, so tests see real expiry.
const TTL: u64 = 2;

fn short_lived() -> AsOptions {
    AsOptions {
        access_token_ttl_secs: TTL,
        ..Default::default()
    }
}

/// Waits until every access token issued so far has expired.
async fn let_tokens_expire() {
    tokio::time::sleep(std::time::Duration::from_millis(TTL * 1000 + 1100)).await;
}

fn json<T: serde::de::DeserializeOwned>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not the expected JSON ({e}): {s}"))
}

async fn token_via_socket(
    d: &Daemon,
    server: &str,
    min_valid: u64,
) -> Result<TokenGetResult, ClientError> {
    token_via(d.socket().to_path_buf(), server.to_string(), min_valid).await
}

async fn token_via(
    socket: std::path::PathBuf,
    server: String,
    min_valid: u64,
) -> Result<TokenGetResult, ClientError> {
    let mut client = Client::connect(&socket).await?;
    let params = TokenGetParams {
        server,
        min_valid_secs: Some(min_valid),
        ..Default::default()
    };
    client.call(TOKEN_GET, &params).await
}

/// login → token → cached → forced refresh with rotation → N concurrent callers share one
/// refresh → restart → token again without login → revoke; no secret in logs or SQLite.
async fn full_cycle(secret_store: &str) {
    let auth = AuthServer::start(short_lived()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new(secret_store, ON_DEMAND_ONLY);
    let d = home.start(None);

    let status: StatusResult = json(&d.cli_ok(&["status", "--json"]));
    let expected_backend = if secret_store == "file" {
        "file"
    } else {
        "keychain"
    };
    assert_eq!(
        status.secret_store.backend.as_str(),
        expected_backend,
        "{status:?}"
    );

    // Login: DCR as a native public client, PKCE S256, resource, scopes from the challenge
    // plus offline_access because the AS advertises it.
    let out = d.cli_ok(&["login", &url]);
    assert!(out.contains("Logged in to"), "{out}");
    let reg = &auth.registrations()[0];
    assert_eq!(reg["application_type"], "native");
    assert_eq!(reg["token_endpoint_auth_method"], "none");
    assert_eq!(
        reg["grant_types"],
        serde_json::json!(["authorization_code", "refresh_token"])
    );
    let authz = auth.last_authorize_params().expect("authorize was called");
    assert_eq!(
        authz.get("resource").map(String::as_str),
        Some(url.as_str())
    );
    assert_eq!(
        authz.get("code_challenge_method").map(String::as_str),
        Some("S256")
    );
    assert_eq!(
        authz.get("scope").map(String::as_str),
        Some("mcp:read offline_access")
    );

    // The token works at the MCP server and is served from memory the second time.
    let t1 = d.cli_ok(&["token", &url]).trim().to_string();
    assert_eq!(mcp.status_with_token(&t1).await, 200);
    assert_eq!(d.cli_ok(&["token", &url]).trim(), t1);
    assert_eq!(auth.counts().refreshes, 0);

    // Expiry: the next ask refreshes; the AS rotates the refresh token, and `resource`
    // goes on the refresh request too.
    let_tokens_expire().await;
    assert_ne!(
        mcp.status_with_token(&t1).await,
        200,
        "the first token really expired"
    );
    let t2 = d.cli_ok(&["token", &url]).trim().to_string();
    assert_ne!(t1, t2);
    assert_eq!(auth.counts().refreshes, 1);
    assert_eq!(
        auth.last_token_params()
            .unwrap()
            .get("resource")
            .map(String::as_str),
        Some(url.as_str())
    );
    assert_eq!(mcp.status_with_token(&t2).await, 200);

    // 50 concurrent callers needing a refresh: exactly one refresh request.
    let_tokens_expire().await;
    let calls = (0..50).map(|_| token_via(d.socket().to_path_buf(), url.clone(), 60));
    let results = futures_join_all(calls).await;
    let tokens: std::collections::BTreeSet<String> = results
        .into_iter()
        .map(|r| std::mem::take(&mut r.expect("token.get").access_token))
        .collect();
    assert_eq!(tokens.len(), 1, "every caller got the one refreshed token");
    assert_eq!(auth.counts().refreshes, 2);
    assert_eq!(auth.counts().refresh_failures, 0);

    // Restart: the rotated refresh token was persisted, so a refresh works without login.
    // (Had the daemon kept the old one, the AS would see a replay and kill the family.)
    d.stop();
    let d = home.start(None);
    let t3 = d.cli_ok(&["token", &url]).trim().to_string();
    assert_eq!(mcp.status_with_token(&t3).await, 200);
    assert_eq!(auth.counts().refreshes, 3);
    assert_eq!(auth.counts().refresh_failures, 0);
    assert_eq!(auth.counts().authorizations, 1, "no second browser login");

    let list: GrantsList = json(&d.cli_ok(&["list", "--json"]));
    assert_eq!(list.grants.len(), 1);
    let g = &list.grants[0];
    assert_eq!(
        (g.state.as_str(), g.has_refresh_token, g.server.as_str()),
        ("active", true, url.as_str())
    );
    let human_list = d.cli_ok(&["list"]);
    assert!(
        human_list.contains(&g.id) && human_list.contains("mcp:read offline_access"),
        "{human_list}"
    );
    let inspect = d.cli_ok(&["inspect", &g.id]);
    assert!(inspect.contains("held in the secret store"), "{inspect}");
    let inspect_json = d.cli_ok(&["inspect", &url, "--json"]);

    // Revoke: RFC 7009 at the AS, then nothing left here.
    let out = d.cli_ok(&["revoke", &url]);
    assert!(
        out.contains("at the authorization server: refresh token revoked; access token revoked"),
        "{out}"
    );
    assert!(auth.counts().revocations >= 1);
    assert!(
        auth.current_refresh_tokens().is_empty(),
        "the refresh token is dead at the AS"
    );
    let after = d.cli(&["token", &url]);
    assert_eq!(after.status.code(), Some(4), "authorization required");
    let stderr = String::from_utf8_lossy(&after.stderr).to_string();
    assert!(
        stderr.contains(&format!("mcp-auth login {url}")),
        "{stderr}"
    );
    // The error the daemon sends over the socket itself, as a program sees it.
    let socket_error = match token_via_socket(&d, &url, 60).await {
        Err(ClientError::Rpc(e)) => format!("{e:?}"),
        other => panic!("expected an error over the socket, got {other:?}"),
    };
    let list: GrantsList = json(&d.cli_ok(&["list", "--json"]));
    assert!(list.grants.is_empty());
    let status_text = d.cli_ok(&["status"]);
    d.stop();

    // No secret the AS issued or received (refresh and access tokens, codes, verifiers)
    // reached the TRACE log, the SQLite files, or any listing.
    let log = home.log_text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "the log ran at a verbose level"
    );
    let db = home.database_bytes();
    assert!(!db.is_empty());
    let secrets = auth.issued_secrets();
    assert!(secrets.len() >= 8, "{} secrets recorded", secrets.len());
    for secret in &secrets {
        assert!(
            !log.contains(secret.as_str()),
            "a secret leaked into the daemon log"
        );
        assert!(
            !contains(&db, secret.as_bytes()),
            "a secret leaked into SQLite"
        );
        for text in [
            &human_list,
            &inspect,
            &inspect_json,
            &status_text,
            &stderr,
            &socket_error,
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "a secret leaked into CLI output or a socket error"
            );
        }
    }
    if secret_store != "file" {
        assert!(
            !home.path().join("secrets.json").exists(),
            "keychain mode must not write the fallback file"
        );
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_cycle_with_the_file_store() {
    full_cycle("file").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn full_cycle_with_a_real_secret_service() {
    match std::env::var(KEYCHAIN_ENV).as_deref() {
        Ok("required") => full_cycle("keychain").await,
        _ => eprintln!(
            "SKIPPED: set {KEYCHAIN_ENV}=required inside a Secret Service session (scripts/test.sh does) to run this test"
        ),
    }
}

/// A sibling that redeemed our refresh token (rotation race) makes the AS kill the family:
/// the grant turns `needs_login` with the reason, and callers get `authorization_required`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn invalid_grant_marks_the_grant_as_needing_login() {
    let auth = AuthServer::start(short_lived()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", ON_DEMAND_ONLY);
    let d = home.start(None);
    d.cli_ok(&["login", &url]);

    // Someone else uses the refresh token first (the AS rotates it away from us).
    let stolen = auth
        .current_refresh_tokens()
        .pop()
        .expect("a refresh token");
    let client_id = auth.registrations()[0]["client_id"]
        .as_str()
        .map(str::to_string);
    let client_id = client_id.unwrap_or_else(|| {
        let authz = auth.last_authorize_params().unwrap();
        authz["client_id"].clone()
    });
    let form: BTreeMap<&str, &str> = [
        ("grant_type", "refresh_token"),
        ("refresh_token", stolen.as_str()),
        ("client_id", client_id.as_str()),
        ("resource", url.as_str()),
    ]
    .into();
    let r = reqwest::Client::new()
        .post(format!("{}/token", auth.issuer()))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let_tokens_expire().await;
    let err = token_via_socket(&d, &url, 60)
        .await
        .expect_err("the grant is dead");
    match err {
        ClientError::Rpc(e) => {
            assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired));
            assert_eq!(
                e.data.as_ref().and_then(|d| d.command.clone()),
                Some(format!("mcp-auth login {url}"))
            );
        }
        other => panic!("unexpected {other}"),
    }
    let list: GrantsList = json(&d.cli_ok(&["list", "--json"]));
    assert_eq!(list.grants[0].state.as_str(), "needs_login");
    assert!(
        list.grants[0]
            .needs_login_reason
            .as_deref()
            .unwrap_or("")
            .contains("invalid_grant")
    );
    // A second ask does not hit the AS again.
    let failures = auth.counts().refresh_failures;
    assert_eq!(d.cli(&["token", &url]).status.code(), Some(4));
    assert_eq!(auth.counts().refresh_failures, failures);
    // Logging in again heals the grant, reusing the registration.
    d.cli_ok(&["login", &url]);
    assert_eq!(auth.counts().registrations, 1);
    let list: GrantsList = json(&d.cli_ok(&["list", "--json"]));
    assert_eq!(list.grants[0].state.as_str(), "active");
    let_tokens_expire().await;
    d.cli_ok(&["token", &url]);
    assert_eq!(
        auth.counts().refreshes,
        2,
        "the stolen one and ours after the new login"
    );
}

/// A pre-registered confidential client from the config file, authenticating with
/// client_secret_post; no dynamic registration happens and the secret stays out of logs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pre_registered_client_from_the_config_file() {
    let auth = AuthServer::start(short_lived()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let secret = "pre-registered-client-secret-0123456789";
    auth.register_client(PreRegisteredClient {
        client_id: "desktop-app".into(),
        client_secret: Some(secret.into()),
        token_endpoint_auth_method: "client_secret_post".into(),
        redirect_uris: vec![],
    });
    let home = DaemonHome::new(
        "file",
        &format!(
            "{ON_DEMAND_ONLY}[servers.\"{url}\"]\nclient_id = \"desktop-app\"\nclient_secret = \"{secret}\"\nissuer = \"{}\"\ntoken_endpoint_auth_method = \"client_secret_post\"\nscopes = [\"mcp:read\", \"mcp:write\"]\n",
            auth.issuer()
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    assert_eq!(auth.counts().registrations, 0);
    assert_eq!(
        auth.last_authorize_params().unwrap()["scope"],
        "mcp:read mcp:write offline_access"
    );
    let_tokens_expire().await;
    d.cli_ok(&["token", &url]);
    assert_eq!(auth.counts().refreshes, 1);
    assert_eq!(
        auth.last_token_params().unwrap()["client_secret"],
        secret,
        "client_secret_post"
    );
    let inspect = d.cli_ok(&["inspect", &url]);
    assert!(
        inspect.contains("desktop-app (pre-registered)"),
        "{inspect}"
    );
    d.stop();
    assert!(!home.log_text().contains(secret));
    assert!(!contains(&home.database_bytes(), secret.as_bytes()));
}

/// A pre-registered client whose redirect URI the user wrote with `localhost`: the
/// authorization server compares redirect URIs as strings, so the login sends exactly
/// that (not 127.0.0.1) and the browser reaches the daemon there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_localhost_redirect_uri_stays_localhost() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let redirect = format!("http://localhost:{port}/oauth/done");
    auth.register_client(PreRegisteredClient {
        client_id: "localhost-app".into(),
        client_secret: None,
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec![redirect.clone()],
    });
    let home = DaemonHome::new(
        "file",
        &format!(
            "{ON_DEMAND_ONLY}[servers.\"{url}\"]\nclient_id = \"localhost-app\"\nredirect_uri = \"{redirect}\"\n"
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    assert_eq!(
        auth.last_authorize_params().unwrap()["redirect_uri"],
        redirect.as_str()
    );
    assert_eq!(
        auth.last_token_params().unwrap()["redirect_uri"],
        redirect.as_str()
    );
}

/// PRM naming another resource: no authorization happens, and the error says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_resource_mismatch_is_refused_before_any_authorization() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let opts = McpOptions {
        resource_override: Some("http://127.0.0.1:9/elsewhere".into()),
        ..Default::default()
    };
    let mcp = McpServer::start(&auth, opts).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let out = d.cli(&["login", mcp.url()]);
    assert_eq!(out.status.code(), Some(7));
    assert!(String::from_utf8_lossy(&out.stderr).contains("another resource"));
    assert_eq!(
        auth.counts().registrations + auth.counts().authorizations,
        0
    );
}

/// Nobody completes the browser login: a clear timeout, exit code 5, and the daemon goes
/// on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_login_nobody_completes_times_out() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(Some("/bin/true"));
    let out = d.cli(&["login", mcp.url(), "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(5));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not completed within 1 s"), "{stderr}");
    assert!(
        stderr.contains("http://127.0.0.1"),
        "the URL is printed for headless users: {stderr}"
    );
    d.cli_ok(&["status"]);
}

#[test]
fn the_cli_says_when_the_daemon_is_not_running() {
    let out = std::process::Command::new(mcp_authd_tests::daemon::bin("mcp-auth"))
        .args(["--socket", "/tmp/no-such-mcp-authd.sock", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not running") && stderr.contains("mcp-authd"),
        "{stderr}"
    );
}

/// No session bus, so no keychain: `auto` falls back to the 0600 file and says so loudly,
/// in the log and in `status`; `keychain` refuses to start, with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_keychain_auto_falls_back_loudly_and_keychain_refuses() {
    let no_bus = [(
        "DBUS_SESSION_BUS_ADDRESS",
        "unix:path=/nonexistent/mcp-authd-test-bus",
    )];
    let home = DaemonHome::new("auto", "");
    let d = home.start_with_env(None, &no_bus);
    let status: StatusResult = json(&d.cli_ok(&["status", "--json"]));
    assert_eq!(status.secret_store.backend.as_str(), "file");
    assert!(
        status
            .secret_store
            .warning
            .as_deref()
            .unwrap_or("")
            .contains("no OS keychain could be used")
    );
    assert!(d.cli_ok(&["status"]).contains("WARNING"));
    d.stop();
    assert!(
        home.log_text().contains("WARN"),
        "the fallback is logged as a warning"
    );

    let strict = DaemonHome::new("keychain", "");
    let out = strict.command(None, &no_bus).output().unwrap();
    assert!(
        !out.status.success(),
        "must refuse to run without the keychain"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("secret_store = \"keychain\""), "{stderr}");
    assert!(!strict.path().join("secrets.json").exists());
}

/// Two logins for one server at once: the second joins the first (one registration, one
/// loopback listener), and both get its outcome.
///
/// The daemon runs in this process; once both callers were shown the URL, tokio's clock
/// runs 10 times as fast, so the 2 s login timeout takes a fifth of a second.
#[tokio::test]
async fn concurrent_logins_for_one_server_share_one_attempt() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start_in_process().await;
    // Nobody approves: both callers wait on the same pending login.
    type Shown = tokio::sync::mpsc::UnboundedSender<()>;
    let (shown, mut shown_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let login = |socket: std::path::PathBuf, url: String, shown: Shown| async move {
        let mut client = Client::connect(&socket).await.unwrap();
        let params = mcp_authd_ipc::methods::LoginParams {
            server: url,
            timeout_secs: Some(2),
            open_browser: Some(false),
            ..Default::default()
        };
        let mut urls = Vec::new();
        let r: Result<serde_json::Value, ClientError> = client
            .call_with_notifications(mcp_authd_ipc::methods::LOGIN, &params, |n| {
                urls.push(
                    n.params["authorization_url"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                );
                let _ = shown.send(());
            })
            .await;
        (r, urls)
    };
    let a = tokio::spawn(login(d.socket().to_path_buf(), url.clone(), shown.clone()));
    // A caller that ends unshown ends the wait: only the callers hold senders.
    let b = tokio::spawn(login(d.socket().to_path_buf(), url.clone(), shown));
    for _ in 0..2 {
        shown_rx
            .recv()
            .await
            .expect("both callers are shown the URL");
    }
    let _clock = fast_clock(10);
    let ((ra, ua), (rb, ub)) = (a.await.unwrap(), b.await.unwrap());
    for r in [ra, rb] {
        match r {
            Err(ClientError::Rpc(e)) => assert_eq!(e.kind(), Some(ErrorKind::LoginTimeout)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ua.len(), 1);
    assert_eq!(ua, ub, "both callers were shown the same authorization URL");
    assert_eq!(auth.counts().registrations, 1, "one login ran");
}
