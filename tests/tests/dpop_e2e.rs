//! DPoP (RFC 9449), end to end: the real binaries against the test authorization server
//! and MCP server, which verify every proof (signature, `htm`/`htu`, `ath`, `jti`, the
//! `cnf.jkt` binding, nonces).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_authd_ipc::methods::{
    DpopProofParams, DpopProofResult, TOKEN_DPOP_PROOF, TOKEN_GET, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn dpop_as() -> AsOptions {
    AsOptions {
        dpop: true,
        ..Default::default()
    }
}

async fn token(d: &Daemon, server: &str) -> TokenGetResult {
    let mut client = Client::connect(d.socket()).await.unwrap();
    let params = TokenGetParams {
        server: server.into(),
        scopes: None,
        min_valid_secs: Some(1),
        account: None,
    };
    client.call(TOKEN_GET, &params).await.unwrap()
}

async fn proof(d: &Daemon, p: DpopProofParams) -> Result<DpopProofResult, ClientError> {
    let mut client = Client::connect(d.socket()).await.unwrap();
    client.call(TOKEN_DPOP_PROOF, &p).await
}

/// The DPoP private key the daemon keeps for its one grant (file secret store), as stored.
fn stored_private_key(home: &DaemonHome) -> String {
    let secrets: Value =
        serde_json::from_slice(&std::fs::read(home.path().join("secrets.json")).unwrap()).unwrap();
    let keys: Vec<&str> = secrets
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.starts_with("dpop_key:"))
        .map(|(_, v)| v.as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), 1, "one key for the one grant: {keys:?}");
    let encoded = keys[0].rsplit(':').next().unwrap().to_string();
    assert_eq!(
        URL_SAFE_NO_PAD.decode(&encoded).unwrap().len(),
        32,
        "a P-256 private scalar"
    );
    encoded
}

/// A `tools/list` with a token and a proof, as a third-party client would send it.
async fn tools_list(url: &str, scheme: &str, token: &str, proof: Option<&str>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("authorization", format!("{scheme} {token}"))
        .header("accept", "application/json, text/event-stream")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}));
    if let Some(proof) = proof {
        request = request.header("dpop", proof);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_login_gets_a_dpop_bound_token_and_refreshes_prove_the_same_key_across_restarts() {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: 2,
        ..dpop_as()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let mut d = home.start(None);
    d.cli_ok(&["login", &url]);

    let first = token(&d, &url).await;
    assert_eq!(first.token_type.as_str(), "DPoP", "{first:?}");
    let jkt = auth
        .dpop_binding(&first.access_token)
        .expect("the AS bound the token to a key");
    assert!(auth.counts().dpop_proofs >= 1);
    // A bound token is worthless as a bearer token.
    assert_eq!(mcp.status_with_token(&first.access_token).await, 401);

    // Past its lifetime: the refresh carries a proof by the same key (the AS refuses a
    // bound refresh token otherwise), and so does one after a restart, from the store.
    for restart in [false, true] {
        if restart {
            d.stop();
            d = home.start(None);
        }
        tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
        let before = auth.counts().refreshes;
        let renewed = token(&d, &url).await;
        assert_eq!(auth.counts().refreshes, before + 1, "restart: {restart}");
        assert_eq!(auth.counts().refresh_failures, 0, "restart: {restart}");
        assert_eq!(renewed.token_type.as_str(), "DPoP");
        assert_eq!(
            auth.dpop_binding(&renewed.access_token).as_deref(),
            Some(jkt.as_str())
        );
    }

    // The private key is in the secret store only: not in SQLite, not in the log.
    let private = stored_private_key(&home);
    let database = String::from_utf8_lossy(&home.database_bytes()).into_owned();
    assert!(!database.contains(&private), "the key is in SQLite");
    assert!(!home.log_text().contains(&private), "the key is in the log");
    assert!(
        home.log_text().contains(&jkt),
        "the log names the public thumbprint"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nonces_are_retried_once_with_a_new_proof_at_the_as_and_at_the_mcp_server() {
    let auth = AuthServer::start(AsOptions {
        dpop_nonce: true,
        ..dpop_as()
    })
    .await;
    let mcp = McpServer::start(
        &auth,
        McpOptions {
            dpop_nonce: true,
            ..Default::default()
        },
    )
    .await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);

    let mut proxy = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(d.socket())
        .args(["proxy", mcp.url()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = proxy.stdin.take().unwrap();
    let mut stdout = BufReader::new(proxy.stdout.take().unwrap());
    let mut ask = |id: i64, method: &str, params: Value| -> Value {
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{request}").unwrap();
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let init = ask(
        1,
        "initialize",
        json!({"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}),
    );
    assert_eq!(init["result"]["protocolVersion"], "2025-11-25", "{init}");
    let list = ask(2, "tools/list", json!({}));
    assert_eq!(list["result"]["tools"][0]["name"], "whoami", "{list}");
    drop(stdin);
    let out = proxy.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");

    let counts = auth.counts();
    assert_eq!(
        counts.code_exchanges, 1,
        "the nonce retry redeemed the code"
    );
    assert_eq!(
        counts.dpop_nonce_challenges, 1,
        "the AS asked once; the nonce was remembered"
    );
    assert_eq!(
        mcp.dpop_nonce_challenges(),
        1,
        "the MCP server asked once; the proxy kept its nonce for the next request"
    );
    assert_eq!(
        mcp.dpop_requests(),
        2,
        "both requests admitted with a valid proof"
    );
    let private = stored_private_key(&home);
    assert!(!stderr.contains(&private) && !home.log_text().contains(&private));
}

#[tokio::test(flavor = "multi_thread")]
async fn any_client_uses_a_dpop_grant_through_the_socket_and_headers_refuses_it() {
    let auth = AuthServer::start(dpop_as()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let t = token(&d, &url).await;
    assert_eq!(t.token_type.as_str(), "DPoP");
    let ask = |access_token: Option<String>, ath: Option<String>, target: &str| DpopProofParams {
        server: url.clone(),
        method: "POST".into(),
        url: target.into(),
        access_token,
        ath,
        nonce: None,
        account: None,
    };

    // A proof from the socket makes the token good for one request.
    let p = proof(&d, ask(Some(t.access_token.clone()), None, &url))
        .await
        .unwrap();
    assert_eq!(
        tools_list(&url, "DPoP", &t.access_token, Some(&p.proof)).await,
        200
    );
    assert_eq!(
        tools_list(&url, "DPoP", &t.access_token, Some(&p.proof)).await,
        401,
        "a proof is good once"
    );
    // The hash instead of the token works alike.
    let ath = URL_SAFE_NO_PAD.encode(Sha256::digest(t.access_token.as_bytes()));
    let p = proof(&d, ask(None, Some(ath), &url)).await.unwrap();
    assert_eq!(
        tools_list(&url, "DPoP", &t.access_token, Some(&p.proof)).await,
        200
    );
    // Proofs are signed only for the grant's server.
    let e = proof(&d, ask(None, None, auth.issuer())).await.unwrap_err();
    match e {
        ClientError::Rpc(e) => {
            assert_eq!(e.kind(), Some(ErrorKind::InvalidParams), "{e:?}");
            assert!(e.message.contains("only for URLs at that server"), "{e:?}");
        }
        other => panic!("{other}"),
    }

    // `mcp-auth headers` cannot give a reusable header for it, and says what to do.
    let out = d.cli(&["headers", &url]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty(), "no header printed");
    assert!(
        stderr.contains("DPoP-bound") && stderr.contains(&format!("mcp-auth proxy {url}")),
        "{stderr}"
    );
    assert!(!stderr.contains(&t.access_token));
    let json: Value = serde_json::from_str(&d.cli_ok(&["token", &url, "--json"])).unwrap();
    assert_eq!(json["token_type"], "DPoP");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_config_turns_dpop_off_or_on_per_server() {
    let offered = AuthServer::start(dpop_as()).await;
    let offered_mcp = McpServer::start(&offered, McpOptions::default()).await;
    let plain = AuthServer::start(AsOptions::default()).await;
    let plain_mcp = McpServer::start(&plain, McpOptions::default()).await;
    let home = DaemonHome::new(
        "file",
        &format!(
            "[servers.\"{}\"]\ndpop = false\n[servers.\"{}\"]\ndpop = true\n",
            offered_mcp.url(),
            plain_mcp.url()
        ),
    );
    let d = home.start(None);
    d.cli_ok(&["login", offered_mcp.url()]);
    d.cli_ok(&["login", plain_mcp.url()]);

    // Off: a bearer token although the AS offers DPoP; no key is kept.
    let off = token(&d, offered_mcp.url()).await;
    assert_eq!(off.token_type.as_str(), "Bearer");
    assert_eq!(offered.counts().dpop_proofs, 0);
    assert_eq!(offered_mcp.status_with_token(&off.access_token).await, 200);
    let refused = proof(
        &d,
        DpopProofParams {
            server: offered_mcp.url().into(),
            method: "POST".into(),
            url: offered_mcp.url().into(),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        refused.to_string().contains("is not DPoP-bound"),
        "{refused}"
    );
    // On: proofs go to an AS that advertises nothing; it ignores them (no DPoP there),
    // so the token stays a bearer one, and the grant keeps its key for refreshes.
    let on = token(&d, plain_mcp.url()).await;
    assert_eq!(on.token_type.as_str(), "Bearer");
    assert_eq!(plain_mcp.status_with_token(&on.access_token).await, 200);
    stored_private_key(&home);
}
