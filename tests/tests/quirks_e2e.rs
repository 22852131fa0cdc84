//! Identity-provider quirks as per-server settings, each against a test server that
//! behaves like the provider: each test also shows the failure without the setting.

use mcp_authd_tests::daemon::DaemonHome;
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};

const BACKGROUND_OFF: &str = "background_refresh_days = 0\n";

/// `mcp-auth login URL` with a daemon that has no per-server settings: exit code, stderr.
fn login_without_settings(url: &str) -> (Option<i32>, String) {
    let home = DaemonHome::new("file", BACKGROUND_OFF);
    let d = home.start(None);
    let out = d.cli(&["login", url]);
    d.stop();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn entra_settings_send_scope_on_refresh_and_no_resource() {
    let auth = AuthServer::start(AsOptions {
        rejects_resource: true,
        access_token_ttl_secs: 2,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();

    // Without the settings the provider refuses the login.
    let (code, stderr) = login_without_settings(&url);
    assert_eq!(code, Some(5), "{stderr}");
    assert!(stderr.contains("invalid_target"), "{stderr}");

    let home = DaemonHome::new(
        "file",
        &format!(
            "{BACKGROUND_OFF}[servers.\"{}\"]\nrefresh_scope = true\nomit_resource = true\n",
            auth.issuer()
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    assert!(
        !auth
            .last_authorize_params()
            .unwrap()
            .contains_key("resource")
    );
    tokio::time::sleep(std::time::Duration::from_millis(3100)).await;
    d.cli_ok(&["token", &url]);
    assert_eq!(auth.counts().refreshes, 1);
    let refresh = auth.last_token_params().unwrap();
    assert_eq!(refresh["grant_type"], "refresh_token");
    assert!(!refresh.contains_key("resource"), "{refresh:?}");
    assert_eq!(
        refresh["scope"], "mcp:read offline_access",
        "the granted scopes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn google_settings_add_authorization_parameters() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new(
        "file",
        &format!(
            "[servers.\"{url}\"]\nauthorization_params = {{ access_type = \"offline\", prompt = \"consent\" }}\n"
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let authz = auth.last_authorize_params().unwrap();
    assert_eq!(authz["access_type"], "offline");
    assert_eq!(authz["prompt"], "consent");
    assert_eq!(
        authz["resource"], url,
        "the rest of the request is unchanged"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_403_invalid_token_is_read_as_a_401_only_when_configured() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            invalid_token_status: Some(403),
            ..Default::default()
        },
    )
    .await;
    let url = mcp.url().to_string();
    let call = |d: &mcp_authd_tests::daemon::Daemon| {
        let out = std::process::Command::new(mcp_authd_tests::daemon::bin("mcp-auth"))
            .arg("--socket")
            .arg(d.socket())
            .args(["proxy", &url])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                let mut stdin = child.stdin.take().unwrap();
                writeln!(
                    stdin,
                    r#"{{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{{}}}}"#
                )?;
                drop(stdin);
                child.wait_with_output()
            })
            .unwrap();
        let answer: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (answer, String::from_utf8_lossy(&out.stderr).into_owned())
    };

    for configured in [true, false] {
        let config = if configured {
            format!("{BACKGROUND_OFF}[servers.\"{url}\"]\ninvalid_token_as_401 = true\n")
        } else {
            BACKGROUND_OFF.to_string()
        };
        let home = DaemonHome::new("file", &config);
        let d = home.start(None);
        d.cli_ok(&["login", &url]);
        // The tokens die early (a password change): the server answers 403 invalid_token.
        auth.invalidate_access_tokens();
        let refreshes = auth.counts().refreshes;
        let (answer, stderr) = call(&d);
        if configured {
            assert!(answer["result"]["tools"].is_array(), "{answer} {stderr}");
            assert_eq!(auth.counts().refreshes, refreshes + 1);
        } else {
            assert!(answer["error"].is_object(), "{answer}");
            assert!(
                stderr.contains("invalid_token_as_401"),
                "the fix is named: {stderr}"
            );
            assert_eq!(auth.counts().refreshes, refreshes);
        }
        d.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn assume_pkce_s256_lets_a_server_log_in_that_takes_pkce_without_saying_so() {
    let auth = AuthServer::start(AsOptions {
        pkce_unadvertised: true,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();

    // Without the setting the login stops before the browser, naming the setting.
    let (code, stderr) = login_without_settings(&url);
    assert_eq!(code, Some(7), "{stderr}");
    assert!(
        stderr.contains("PKCE S256") && stderr.contains("assume_pkce_s256 = true"),
        "{stderr}"
    );
    assert_eq!(auth.counts().authorizations, 0);

    // With it (under the issuer's key, as for Entra), the login runs with S256 — the
    // server still refuses any code without a verifier.
    let home = DaemonHome::new(
        "file",
        &format!(
            "{BACKGROUND_OFF}[servers.\"{}\"]\nassume_pkce_s256 = true\n",
            auth.issuer()
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let authorize = auth.last_authorize_params().unwrap();
    assert_eq!(authorize["code_challenge_method"], "S256");
    assert_eq!(auth.counts().code_exchanges, 1);
}
