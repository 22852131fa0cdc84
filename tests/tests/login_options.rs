//! mcp-remote's login options, mcp-authd's way: a fixed redirect URI (`--callback-port`,
//! `--callback-host`, `--callback-path`, or `redirect_uri` in the config) for authorization
//! servers that accept only a registered one, and the client metadata sent in dynamic
//! registration (`client_metadata` in the config). Real binaries, the test authorization
//! server and MCP server on loopback.

use mcp_authd_tests::daemon::DaemonHome;
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::json;

/// A port free a moment ago.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fixed_callback_port_is_registered_used_again_and_never_moved() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let port = free_port().to_string();
    let flags = [
        "--callback-port",
        &port,
        "--callback-host",
        "localhost",
        "--callback-path",
        "/oauth/callback",
    ];
    let login = |extra: &[&str]| {
        let mut args = vec!["login", url.as_str()];
        args.extend_from_slice(extra);
        d.cli(&args)
    };
    let out = login(&flags);
    assert!(out.status.success(), "{out:?}");
    let expected = format!("http://localhost:{port}/oauth/callback");
    assert_eq!(auth.registrations()[0]["redirect_uris"], json!([expected]));
    let authz = auth.last_authorize_params().expect("authorize was called");
    assert_eq!(authz.get("redirect_uri"), Some(&expected));

    // Again with the same URI: the registration is used again.
    assert!(login(&flags).status.success());
    assert_eq!(auth.registrations().len(), 1);
    assert_eq!(auth.counts().authorizations, 2);

    // The port taken: the login fails naming it, instead of moving to another port the
    // authorization server would refuse.
    let held = std::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>().unwrap()))
        .expect("hold the port");
    let out = login(&flags);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&port), "{stderr}");
    assert!(stderr.contains("is fixed"), "{stderr}");
    assert_eq!(auth.counts().authorizations, 2);
    drop(held);

    // Bad flags are refused by the CLI.
    let out = login(&["--callback-host", "localhost"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = login(&["--callback-port", "8080", "--callback-host", "example.com"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let out = login(&["--callback-port", "8080", "--callback-path", "no-slash"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_sets_the_redirect_uri_and_the_registered_client_metadata() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let port = free_port();
    let home = DaemonHome::new(
        "file",
        &format!(
            r#"
[servers."{url}"]
redirect_uri = "http://127.0.0.1:{port}/cb"
client_metadata = {{ client_name = "Team \"Blue\" tool", client_uri = "https://tool.example/", policy_uri = "https://tool.example/privacy", contacts = ["ops@tool.example"] }}
"#
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", &url]);

    let reg = &auth.registrations()[0];
    assert_eq!(reg["client_name"], "Team \"Blue\" tool");
    assert_eq!(reg["client_uri"], "https://tool.example/");
    assert_eq!(reg["policy_uri"], "https://tool.example/privacy");
    assert_eq!(reg["contacts"], json!(["ops@tool.example"]));
    // What the login needs stays mcp-authd's.
    assert_eq!(reg["application_type"], "native");
    assert_eq!(reg["software_id"], "mcp-authd");
    assert_eq!(
        reg["redirect_uris"],
        json!([format!("http://127.0.0.1:{port}/cb")])
    );
}
