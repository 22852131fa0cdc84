//! Corporate networks, end to end (issue 14.5): an HTTP proxy from the environment
//! (`HTTPS_PROXY`, `HTTP_PROXY`, `NO_PROXY`) through a real `tinyproxy`, and servers whose
//! TLS certificate a private CA signed (a real `socat` TLS front with an `openssl`-made CA),
//! reached by host name. Without the CA the login fails saying which host, why and what to
//! set; with `ca_file` or `SSL_CERT_FILE` it works, directly and through the proxy.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Output, Stdio};

use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::outside::{
    AS_HOST, HttpProxy, MCP_HOST, TestCa, TlsFront, free_port, hosts_entry,
};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::{Value, json};

/// The test authorization server and MCP server behind TLS fronts, by host name.
struct TlsSite {
    ca: TestCa,
    url: String,
    mcp: McpServer,
    auth: AuthServer,
    _fronts: [TlsFront; 2],
    _dir: tempfile::TempDir,
}

async fn tls_site() -> Option<TlsSite> {
    let dir = tempfile::tempdir().unwrap();
    hosts_entry(&[AS_HOST, MCP_HOST]);
    let ca = TestCa::create(dir.path(), &[AS_HOST, MCP_HOST])?;
    let (as_port, mcp_port) = (free_port(), free_port());
    let auth = AuthServer::start(AsOptions {
        public_origin: Some(format!("https://{AS_HOST}:{as_port}")),
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            public_origin: Some(format!("https://{MCP_HOST}:{mcp_port}")),
            ..Default::default()
        },
    )
    .await;
    let fronts = [
        TlsFront::start(&ca, as_port, auth.listen_addr())?,
        TlsFront::start(&ca, mcp_port, mcp.listen_addr())?,
    ];
    Some(TlsSite {
        url: mcp.url().to_string(),
        ca,
        mcp,
        auth,
        _fronts: fronts,
        _dir: dir,
    })
}

/// A daemon with `extra_config` and `env`; the browser stand-in trusts the test CA, as the
/// user's browser would once they accepted the company CA.
fn daemon(site: &TlsSite, extra_config: &str, env: &[(&str, &str)]) -> (DaemonHome, Daemon) {
    let home = DaemonHome::new("file", extra_config);
    let ca = site.ca.ca.display().to_string();
    let mut env = env.to_vec();
    env.push(("MCP_AUTHD_TEST_BROWSER_CA", &ca));
    let d = home.start_with_env(None, &env);
    (home, d)
}

fn ca_file_config(site: &TlsSite) -> String {
    format!("ca_file = \"{}\"\n", site.ca.ca.display())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Logs in and takes a token: the whole path through discovery, registration, the browser,
/// the code exchange.
fn login_and_token(d: &Daemon, url: &str) -> String {
    let out = d.cli_ok(&["login", url]);
    assert!(out.contains("Logged in to"), "{out}");
    let token = d.cli_ok(&["token", url]).trim().to_string();
    assert!(!token.is_empty());
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_refused_naming_the_host_the_reason_and_the_setting() {
    let Some(site) = tls_site().await else { return };
    let (home, d) = daemon(&site, "", &[]);
    let out = d.cli(&["login", &site.url]);
    assert!(!out.status.success(), "{}", text(&out));
    let said = text(&out);
    assert!(said.contains(MCP_HOST), "the host: {said}");
    assert!(
        said.contains("certificate authority this machine does not trust"),
        "the reason: {said}"
    );
    assert!(
        said.contains("ca_file") && said.contains("SSL_CERT_FILE"),
        "the setting: {said}"
    );
    assert_eq!(site.mcp.authorized_requests(), 0);

    // Adding ca_file: a reload says the client is built at start; after a restart it works.
    let config = home.path().join("config.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&ca_file_config(&site));
    std::fs::write(&config, text).unwrap();
    let reloaded: Value = serde_json::from_str(&d.cli_ok(&["reload", "--json"])).unwrap();
    assert_eq!(reloaded["restart_needed"], json!(["ca_file"]), "{reloaded}");
    d.stop();
    let ca = site.ca.ca.display().to_string();
    let d = home.start_with_env(None, &[("MCP_AUTHD_TEST_BROWSER_CA", &ca)]);
    login_and_token(&d, &site.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ca_file_in_the_config_makes_the_private_ca_trusted() {
    let Some(site) = tls_site().await else { return };
    let (_home, d) = daemon(&site, &ca_file_config(&site), &[]);
    login_and_token(&d, &site.url);

    // A proxy that does not trust it either says what to pass; with --ca-file it works.
    let (answer, _) = proxy_tools_list(&d, &site.url, None, &[]);
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(MCP_HOST) && message.contains("--ca-file"),
        "{answer}"
    );
    let ca = site.ca.ca.display().to_string();
    let (answer, _) = proxy_tools_list(&d, &site.url, Some(&ca), &[]);
    assert!(answer["result"]["tools"].is_array(), "{answer}");
    assert!(site.mcp.authorized_requests() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssl_cert_file_makes_the_private_ca_trusted() {
    let Some(site) = tls_site().await else { return };
    let ca = site.ca.ca.display().to_string();
    let (_home, d) = daemon(&site, "", &[("SSL_CERT_FILE", &ca)]);
    login_and_token(&d, &site.url);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_carries_the_daemon_and_the_proxy_through_connect() {
    let Some(site) = tls_site().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = HttpProxy::start(dir.path()) else {
        return;
    };
    let proxy_url = proxy.url();
    let env = [("HTTPS_PROXY", proxy_url.as_str()), ("NO_PROXY", "")];
    let (_home, d) = daemon(&site, &ca_file_config(&site), &env);
    login_and_token(&d, &site.url);
    let requests = proxy.requests();
    let as_port = site.auth.issuer().rsplit(':').next().unwrap().to_string();
    let mcp_port = site
        .url
        .rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches("/mcp")
        .to_string();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT {AS_HOST}:{as_port} "))),
        "the daemon's requests to the authorization server: {requests:?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT {MCP_HOST}:{mcp_port} "))),
        "the daemon's discovery at the MCP server: {requests:?}"
    );

    // `mcp-auth proxy` through it too.
    let before = requests.len();
    let ca = site.ca.ca.display().to_string();
    let (answer, _) = proxy_tools_list(&d, &site.url, Some(&ca), &env);
    assert!(answer["result"]["tools"].is_array(), "{answer}");
    let after = proxy.requests();
    assert!(
        after[before..]
            .iter()
            .any(|r| r.starts_with(&format!("CONNECT {MCP_HOST}:{mcp_port} "))),
        "the proxy's requests: {after:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_and_loopback_go_direct() {
    let Some(site) = tls_site().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let Some(proxy) = HttpProxy::start(dir.path()) else {
        return;
    };
    let proxy_url = proxy.url();
    // Lowercase forms, as many shells set them; the MCP server is excluded by name.
    let env = [
        ("https_proxy", proxy_url.as_str()),
        ("http_proxy", proxy_url.as_str()),
        ("no_proxy", MCP_HOST),
    ];
    let (_home, d) = daemon(&site, &ca_file_config(&site), &env);
    login_and_token(&d, &site.url);

    // A server on loopback, plain http: never through the proxy, though http_proxy is set.
    let auth = AuthServer::start(AsOptions::default()).await;
    let local = McpServer::start(&auth, McpOptions::default()).await;
    login_and_token(&d, local.url());

    let requests = proxy.requests();
    assert!(
        requests.iter().any(|r| r.contains(AS_HOST)),
        "the authorization server through the proxy: {requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains(MCP_HOST)),
        "no_proxy names the MCP server: {requests:?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.contains("127.0.0.1") || r.contains("localhost")),
        "loopback is never proxied: {requests:?}"
    );
}

/// `mcp-auth proxy URL [--ca-file CA]`: initialize, then tools/list; returns the answer to
/// tools/list (or the first error) and stderr.
fn proxy_tools_list(
    d: &Daemon,
    url: &str,
    ca_file: Option<&str>,
    env: &[(&str, &str)],
) -> (Value, String) {
    let mut command = Command::new(bin("mcp-auth"));
    command
        .arg("--socket")
        .arg(d.socket())
        .args(["proxy", url, "--no-login"]);
    if let Some(ca) = ca_file {
        command.args(["--ca-file", ca]);
    }
    let mut child = command
        .env_remove("MCP_AUTH_CA_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the proxy");
    let mut stdin = child.stdin.take().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut ask = move |id: i64, method: &str, params: Value| -> Value {
        writeln!(
            stdin,
            "{}",
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        )
        .unwrap();
        loop {
            let line = lines.next().expect("an answer").expect("a line");
            let message: Value = serde_json::from_str(&line).expect("JSON on stdout");
            if message["id"] == json!(id) {
                return message;
            }
        }
    };
    let init = ask(
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    let answer = if init.get("error").is_some() {
        init
    } else {
        ask(2, "tools/list", json!({}))
    };
    drop(ask);
    let out = child.wait_with_output().expect("the proxy exits");
    (answer, String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn a_malformed_proxy_variable_stops_the_daemon_naming_it_but_not_its_password() {
    let home = DaemonHome::new("file", "");
    let out = home
        .command(None, &[("HTTPS_PROXY", "http://alice:s3cret-pw@[::1")])
        .output()
        .expect("run mcp-authd");
    assert!(!out.status.success());
    let said = text(&out);
    assert!(said.contains("HTTPS_PROXY"), "{said}");
    assert!(!said.contains("s3cret-pw"), "{said}");
}
