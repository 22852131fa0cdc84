//! Mix-up defences (RFC 9700 §4.4): each authorization server gets its own redirect path;
//! a configured client secret goes only to the issuer it is configured for; a registration
//! stored for one issuer is never presented to another.

use std::process::Command;

use mcp_authd_tests::daemon::DaemonHome;
use mcp_authd_tests::tools::{on_path, required};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer, PreRegisteredClient};

/// The redirect path of the first registration at `auth`.
fn redirect_path(auth: &AuthServer) -> String {
    let regs = auth.registrations();
    let uri = regs[0]["redirect_uris"][0].as_str().unwrap().to_string();
    url::Url::parse(&uri).unwrap().path().to_string()
}

/// Two authorization servers, two dynamic registrations: two redirect paths, each under
/// `/callback/`, so a response the browser brings back from one can never complete a
/// login at the other (the listener serves its own path only — see also
/// `loopback::tests::a_response_at_another_path_is_refused`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_authorization_server_gets_its_own_redirect_path() {
    let auth_a = AuthServer::start(AsOptions::default()).await;
    let auth_b = AuthServer::start(AsOptions::default()).await;
    let mcp_a = McpServer::start(&auth_a, McpOptions::default()).await;
    let mcp_b = McpServer::start(&auth_b, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", mcp_a.url()]);
    d.cli_ok(&["login", mcp_b.url()]);
    assert_eq!(auth_a.counts().registrations, 1);
    assert_eq!(auth_b.counts().registrations, 1);
    let (a, b) = (redirect_path(&auth_a), redirect_path(&auth_b));
    assert!(
        a.starts_with("/callback/") && b.starts_with("/callback/"),
        "{a} {b}"
    );
    assert_ne!(a, b);
    // The same server keeps its path: a second login reuses the registration.
    d.cli_ok(&["login", mcp_a.url()]);
    assert_eq!(auth_a.counts().registrations, 1);
    assert!(auth_a.last_authorize_params().unwrap()["redirect_uri"].contains(&a));
}

/// A client secret configured for authorization server A is not sent to B, which the MCP
/// server names instead; nor is one configured without saying whose it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_secret_goes_only_to_its_issuer() {
    let secret = "configured-secret-for-a-0123456789";
    let auth_a = AuthServer::start(AsOptions::default()).await;
    auth_a.register_client(PreRegisteredClient {
        client_id: "desktop-app".into(),
        client_secret: Some(secret.into()),
        token_endpoint_auth_method: "client_secret_post".into(),
        redirect_uris: vec![],
    });
    let auth_b = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth_b, McpOptions::default()).await;
    let url = mcp.url().to_string();

    for binding in [format!("issuer = \"{}\"\n", auth_a.issuer()), String::new()] {
        let home = DaemonHome::new(
            "file",
            &format!(
                "[servers.\"{url}\"]\nclient_id = \"desktop-app\"\nclient_secret = \"{secret}\"\ntoken_endpoint_auth_method = \"client_secret_post\"\n{binding}"
            ),
        );
        let d = home.start(None);
        let out = d.cli(&["login", &url]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains(auth_b.issuer()), "{err}");
        if binding.is_empty() {
            assert!(
                err.contains(&format!("issuer = \"{}\"", auth_b.issuer())),
                "{err}"
            );
        } else {
            assert!(err.contains(auth_a.issuer()), "{err}");
        }
        assert!(!err.contains(secret));
        d.stop();
        assert!(!home.log_text().contains(secret));
    }
    assert_eq!(auth_b.counts().authorizations, 0);
    assert_eq!(auth_b.counts().registrations, 0);
    assert!(
        auth_b.last_token_params().is_none(),
        "nothing reached B's token endpoint"
    );

    // Bound to A and used at A: works.
    let mcp_a = McpServer::start(&auth_a, McpOptions::default()).await;
    let home = DaemonHome::new(
        "file",
        &format!(
            "[servers.\"{}\"]\nclient_id = \"desktop-app\"\nclient_secret = \"{secret}\"\ntoken_endpoint_auth_method = \"client_secret_post\"\nissuer = \"{}\"\n",
            mcp_a.url(),
            auth_a.issuer()
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", mcp_a.url()]);
    assert_eq!(auth_a.last_token_params().unwrap()["client_secret"], secret);
}

/// A grant of issuer B pointed (in the database) at the registration made at issuer A: the
/// refresh is refused before anything is sent, instead of presenting A's client to B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_never_used_at_another_issuer() {
    let Some(python) = required("python3", on_path("python3"), "editing the daemon's SQLite")
    else {
        return;
    };
    let short = || AsOptions {
        access_token_ttl_secs: 2,
        ..Default::default()
    };
    let auth_a = AuthServer::start(short()).await;
    let auth_b = AuthServer::start(short()).await;
    let mcp_a = McpServer::start(&auth_a, McpOptions::default()).await;
    let mcp_b = McpServer::start(&auth_b, McpOptions::default()).await;
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start(None);
    d.cli_ok(&["login", mcp_a.url()]);
    d.cli_ok(&["login", mcp_b.url()]);
    d.stop();

    let edit = format!(
        "import sqlite3\ndb = sqlite3.connect('{}')\ndb.execute(\"UPDATE grants SET registration_id = (SELECT registration_id FROM grants WHERE issuer = ?) WHERE issuer = ?\", ('{}', '{}'))\ndb.commit()\nassert db.total_changes == 1\n",
        home.path().join("state.db").display(),
        auth_a.issuer(),
        auth_b.issuer()
    );
    let out = Command::new(python).arg("-c").arg(edit).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    // Access tokens live in the daemon's memory only: after the restart, a refresh.
    let d = home.start(None);
    let refreshes_before = auth_b.counts().refreshes;
    let failures_before = auth_b.counts().refresh_failures;
    let out = d.cli(&["token", mcp_b.url()]);
    assert!(!out.status.success() && out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains(auth_a.issuer()) && err.contains(auth_b.issuer()) && err.contains("mix-up"),
        "{err}"
    );
    assert_eq!(auth_b.counts().refreshes, refreshes_before);
    assert_eq!(
        auth_b.counts().refresh_failures,
        failures_before,
        "nothing was sent to B"
    );
    // A's own grant is untouched.
    d.cli_ok(&["token", mcp_a.url()]);
}

/// A dynamic registration stored with the redirect path every server used to share
/// (`/callback`) is replaced at the next login by one with the server's own path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_with_the_old_shared_path_is_replaced() {
    let Some(python) = required("python3", on_path("python3"), "editing the daemon's SQLite")
    else {
        return;
    };
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", mcp.url()]);
    let own = redirect_path(&auth);
    d.stop();
    let edit = format!(
        "import sqlite3\ndb = sqlite3.connect('{}')\ndb.execute(\"UPDATE registrations SET redirect_uri = 'http://127.0.0.1:1/callback'\")\ndb.commit()\nassert db.total_changes == 1\n",
        home.path().join("state.db").display()
    );
    let out = Command::new(python).arg("-c").arg(edit).output().unwrap();
    assert!(out.status.success(), "{out:?}");

    let d = home.start(None);
    d.cli_ok(&["login", mcp.url()]);
    assert_eq!(auth.counts().registrations, 2, "registered again");
    let redirect = auth.last_authorize_params().unwrap()["redirect_uri"].clone();
    assert!(
        redirect.ends_with(&own),
        "{redirect} has the server's own path {own}"
    );
}
