//! Grants without a browser, end to end against the test authorization server (which
//! checks client assertions, JWT-bearer assertions and ID-JAGs as a production server
//! would): client credentials with a secret and with `private_key_jwt` (ES256 from a file,
//! RS256 from the secret store), the JWT-bearer grant with an assertion read afresh at
//! each grant and never retried after a refusal, and enterprise-managed authorization
//! through a second test server acting as the enterprise IdP.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::methods::{
    ChallengeParams, GrantInfo, GrantsList, TOKEN_CHALLENGE, TokenGetResult,
};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::jwt::{TestKey, unix_now};
use mcp_authd_tests::{
    AsOptions, AuthServer, IdpOptions, McpOptions, McpServer, PreRegisteredClient,
};

/// Access-token lifetime: short, so renewals happen within the test.
const TTL: u64 = 2;
/// Renewals only when a caller asks, so the counts are the test's own.
const ON_DEMAND_ONLY: &str = "background_refresh_days = 0\n";
/// A browser that fails at once: these grants must never open one.
const NO_BROWSER: Option<&str> = Some("/bin/false");
const WORKLOAD_ISSUER: &str = "https://workload-idp.test";

fn short_lived(opts: AsOptions) -> AsOptions {
    AsOptions {
        access_token_ttl_secs: TTL,
        ..opts
    }
}

async fn let_tokens_expire() {
    tokio::time::sleep(Duration::from_millis(TTL * 1000 + 1100)).await;
}

fn confidential(id: &str, secret: &str) -> PreRegisteredClient {
    PreRegisteredClient {
        client_id: id.into(),
        client_secret: Some(secret.into()),
        token_endpoint_auth_method: "client_secret_basic".into(),
        redirect_uris: vec![],
    }
}

fn public(id: &str) -> PreRegisteredClient {
    PreRegisteredClient {
        client_id: id.into(),
        client_secret: None,
        token_endpoint_auth_method: "none".into(),
        redirect_uris: vec![],
    }
}

fn grant_of(d: &Daemon, url: &str) -> GrantInfo {
    let list: GrantsList = serde_json::from_str(&d.cli_ok(&["list", "--json"])).unwrap();
    list.grants
        .into_iter()
        .find(|g| g.server == url)
        .unwrap_or_else(|| panic!("no grant for {url}"))
}

fn token(d: &Daemon, url: &str) -> String {
    d.cli_ok(&["token", url]).trim().to_string()
}

/// Nothing secret in the daemon's log or database.
fn assert_no_leak(home: &DaemonHome, secrets: &[String]) {
    let log = home.log_text();
    let db = String::from_utf8_lossy(&home.database_bytes()).into_owned();
    for s in secrets.iter().filter(|s| s.len() >= 12) {
        let probe = &s[s.len() - 12..];
        assert!(!log.contains(probe), "a secret reached the log: …{probe}");
        assert!(!db.contains(probe), "a secret reached SQLite: …{probe}");
    }
}

fn workload_token(key: &TestKey, audience: &str, subject: &str) -> String {
    let now = unix_now();
    key.sign(
        "JWT",
        &serde_json::json!({
            "iss": WORKLOAD_ISSUER, "sub": subject, "aud": audience,
            "iat": now, "exp": now + 600, "jti": format!("{subject}-{now}"),
        }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_need_no_browser_and_renew_by_granting_again() {
    let auth = AuthServer::start(short_lived(AsOptions::default())).await;
    auth.register_client(confidential("cc-client", "cc-secret-0123456789"));
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new(
        "file",
        &format!(
            "{ON_DEMAND_ONLY}[servers.\"{url}\"]\ngrant = \"client_credentials\"\nclient_id = \"cc-client\"\nclient_secret = \"cc-secret-0123456789\"\nissuer = \"{}\"\nscopes = [\"mcp:read\"]\n",
            auth.issuer()
        ),
    );
    let d = home.start(NO_BROWSER);

    let out = d.cli_ok(&["login", &url]);
    assert!(out.contains("with the client_credentials grant"), "{out}");
    assert!(!out.contains("log in again"), "{out}");
    let first = token(&d, &url);
    assert_eq!(mcp.status_with_token(&first).await, 200);
    let counts = auth.counts();
    assert_eq!(
        (
            counts.client_credentials,
            counts.authorizations,
            counts.registrations
        ),
        (1, 0, 0),
        "one client_credentials grant, no browser, no registration"
    );
    let g = grant_of(&d, &url);
    assert_eq!(g.grant_type.as_str(), "client_credentials");
    assert_eq!(g.scopes, ["mcp:read"], "offline_access is not asked for");
    assert!(!g.has_refresh_token);
    let inspected = d.cli_ok(&["inspect", &url]);
    assert!(inspected.contains("client_credentials"), "{inspected}");
    let listed = d.cli_ok(&["list"]);
    assert!(
        listed.contains("client_credentials") && !listed.contains("needs login"),
        "{listed}"
    );

    // Renewal: the same grant again, once, shared by every caller.
    let_tokens_expire().await;
    let second = token(&d, &url);
    assert_ne!(second, first);
    assert_eq!(mcp.status_with_token(&second).await, 200);
    assert_eq!(auth.counts().client_credentials, 2);

    let mut secrets = auth.issued_secrets();
    secrets.push("cc-secret-0123456789".into());
    assert_no_leak(&home, &secrets);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_key_jwt_with_es256_from_a_file_and_rs256_from_the_secret_store() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let (es, rs) = (TestKey::es256(), TestKey::rs256());
    auth.register_jwt_client("jwt-es", es.verifying_key());
    auth.register_jwt_client("jwt-rs", rs.verifying_key());
    let mcp_es = McpServer::start(&auth, McpOptions::default()).await;
    let mcp_rs = McpServer::start(&auth, McpOptions::default()).await;
    let (url_es, url_rs) = (mcp_es.url().to_string(), mcp_rs.url().to_string());
    let key_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(key_file.path(), es.pem()).unwrap();
    let home = DaemonHome::new(
        "file",
        &format!(
            "{ON_DEMAND_ONLY}\
             [servers.\"{url_es}\"]\ngrant = \"client_credentials\"\nclient_id = \"jwt-es\"\nprivate_key = {{ file = \"{}\" }}\n\
             [servers.\"{url_rs}\"]\ngrant = \"client_credentials\"\nclient_id = \"jwt-rs\"\nprivate_key = {{ keychain = \"rs-key\" }}\nsigning_algorithm = \"RS256\"\n",
            key_file.path().display()
        ),
    );
    let d = home.start(NO_BROWSER);

    // Not stored yet: a clear error that says how to store it.
    let out = d.cli(&["login", &url_rs]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("mcp-auth secret set rs-key"), "{stderr}");

    let mut set = Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg(d.socket())
        .args(["secret", "set", "rs-key"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    set.stdin
        .take()
        .unwrap()
        .write_all(rs.pem().as_bytes())
        .unwrap();
    let set = set.wait_with_output().unwrap();
    assert!(
        set.status.success(),
        "{}",
        String::from_utf8_lossy(&set.stderr)
    );
    assert!(String::from_utf8_lossy(&set.stdout).contains("{ keychain = \"rs-key\" }"));

    // No login needed: the first `token` runs the configured grant itself.
    assert_eq!(mcp_es.status_with_token(&token(&d, &url_es)).await, 200);
    d.cli_ok(&["login", &url_rs]);
    assert_eq!(mcp_rs.status_with_token(&token(&d, &url_rs)).await, 200);
    for url in [&url_es, &url_rs] {
        assert_eq!(grant_of(&d, url).grant_type.as_str(), "client_credentials");
    }
    assert_eq!(auth.counts().client_credentials, 2);
    // The test AS checked each assertion: signature with the registered key, iss = sub =
    // the client, aud = its issuer, exp within the hour, jti never seen before.
    let params = auth.last_token_params().unwrap();
    assert_eq!(params["client_id"], "jwt-rs");
    assert_eq!(params["grant_type"], "client_credentials");

    let pem_body = |k: &TestKey| k.pem().lines().nth(2).unwrap().to_string();
    let mut secrets = auth.issued_secrets();
    secrets.extend([pem_body(&es), pem_body(&rs)]);
    assert_no_leak(&home, &secrets);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_bearer_reads_the_assertion_afresh_and_never_retries_a_refusal() {
    let workload = TestKey::es256();
    let auth = AuthServer::start(short_lived(AsOptions {
        trusted_assertion_issuers: vec![(WORKLOAD_ISSUER.into(), workload.verifying_key())],
        ..Default::default()
    }))
    .await;
    auth.register_client(public("wif-client"));
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    // A projected token file that the platform rotates in place.
    let token_file = tempfile::NamedTempFile::new().unwrap();
    let first_assertion = workload_token(&workload, auth.issuer(), "pod-1");
    std::fs::write(token_file.path(), format!("{first_assertion}\n")).unwrap();
    let home = DaemonHome::new(
        "file",
        &format!(
            "{ON_DEMAND_ONLY}[servers.\"{url}\"]\ngrant = \"jwt_bearer\"\nclient_id = \"wif-client\"\nassertion = {{ file = \"{}\" }}\n",
            token_file.path().display()
        ),
    );
    let d = home.start(NO_BROWSER);

    d.cli_ok(&["login", &url]);
    assert_eq!(mcp.status_with_token(&token(&d, &url)).await, 200);
    assert_eq!(grant_of(&d, &url).grant_type.as_str(), "jwt_bearer");

    let second_assertion = workload_token(&workload, auth.issuer(), "pod-2");
    std::fs::write(token_file.path(), &second_assertion).unwrap();
    let_tokens_expire().await;
    assert_eq!(mcp.status_with_token(&token(&d, &url)).await, 200);
    assert_eq!(
        auth.assertions_seen(),
        [first_assertion.clone(), second_assertion.clone()],
        "each grant read the file afresh"
    );

    // Refused: one request, then the grant waits for a new login; the caller's next
    // request does not retry it (nor does the background renewal, which skips grants that
    // need a login).
    auth.reject_assertions(true);
    let_tokens_expire().await;
    let out = d.cli(&["token", &url]);
    assert_eq!(out.status.code(), Some(4), "authorization required");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("invalid_grant"), "{stderr}");
    assert_eq!(auth.counts().jwt_bearer_requests, 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(d.cli(&["token", &url]).status.code(), Some(4));
    // A client reporting a 401 in a way that allows a login (as `mcp-auth proxy` does)
    // does not run the refused grant again either.
    let mut client = Client::connect(d.socket()).await.unwrap();
    let challenged: Result<TokenGetResult, _> = client
        .call(
            TOKEN_CHALLENGE,
            &ChallengeParams {
                server: url.clone(),
                status: 401,
                interactive: Some(true),
                ..Default::default()
            },
        )
        .await;
    match challenged {
        Err(ClientError::Rpc(e)) => {
            assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired), "{e}")
        }
        other => panic!("expected authorization_required, got {other:?}"),
    }
    assert_eq!(auth.counts().jwt_bearer_requests, 3, "never retried");
    let g = grant_of(&d, &url);
    assert_eq!(g.state.as_str(), "needs_login");

    // Asked again (a new login), with a fresh assertion, it works again; this time the
    // assertion comes from a command (no shell), as from a cloud CLI.
    auth.reject_assertions(false);
    let third_assertion = workload_token(&workload, auth.issuer(), "pod-3");
    std::fs::write(token_file.path(), &third_assertion).unwrap();
    let config = std::fs::read_to_string(home.path().join("config.toml")).unwrap();
    let config = config.replace(
        &format!(
            "assertion = {{ file = \"{}\" }}",
            token_file.path().display()
        ),
        &format!(
            "assertion = {{ command = [\"cat\", \"{}\"] }}",
            token_file.path().display()
        ),
    );
    std::fs::write(home.path().join("config.toml"), config).unwrap();
    d.cli_ok(&["reload"]);
    d.cli_ok(&["login", &url]);
    assert_eq!(mcp.status_with_token(&token(&d, &url)).await, 200);
    assert_eq!(auth.assertions_seen().last(), Some(&third_assertion));

    assert_no_leak(&home, &auth.issued_secrets());
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enterprise_grant_exchanges_the_id_token_for_an_id_jag_at_each_renewal() {
    let idp_key = Arc::new(TestKey::es256());
    let idp = AuthServer::start(AsOptions {
        idp: Some(IdpOptions {
            key: idp_key.clone(),
            jag_client_id: "mcp-client".into(),
            id_token_ttl_secs: 3600,
        }),
        ..Default::default()
    })
    .await;
    idp.register_client(public("idp-client"));
    let auth = AuthServer::start(short_lived(AsOptions {
        trusted_assertion_issuers: vec![(idp.issuer().to_string(), idp_key.verifying_key())],
        ..Default::default()
    }))
    .await;
    auth.register_client(confidential("mcp-client", "mcp-secret-0123456789"));
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let id_token = idp.mint_id_token("employee-7", "idp-client");
    let home = DaemonHome::new(
        "file",
        &format!(
            "{ON_DEMAND_ONLY}[servers.\"{url}\"]\ngrant = \"enterprise\"\nclient_id = \"mcp-client\"\nclient_secret = \"mcp-secret-0123456789\"\nissuer = \"{}\"\n\
             [servers.\"{url}\".enterprise]\nidp_token_endpoint = \"{}/token\"\nidp_client_id = \"idp-client\"\nid_token = {{ env = \"TEST_IDP_ID_TOKEN\" }}\n",
            auth.issuer(),
            idp.issuer()
        ),
    );
    let d = home.start_with_env(NO_BROWSER, &[("TEST_IDP_ID_TOKEN", &id_token)]);

    d.cli_ok(&["login", &url]);
    assert_eq!(mcp.status_with_token(&token(&d, &url)).await, 200);
    assert_eq!(grant_of(&d, &url).grant_type.as_str(), "enterprise");
    assert_eq!(
        (
            idp.counts().token_exchanges,
            auth.counts().jwt_bearer_grants
        ),
        (1, 1)
    );
    let_tokens_expire().await;
    assert_eq!(mcp.status_with_token(&token(&d, &url)).await, 200);
    assert_eq!(
        (
            idp.counts().token_exchanges,
            auth.counts().jwt_bearer_grants
        ),
        (2, 2),
        "an ID-JAG is short-lived: each renewal asks the IdP again"
    );

    let mut secrets = auth.issued_secrets();
    secrets.extend(idp.issued_secrets());
    secrets.push("mcp-secret-0123456789".into());
    assert_no_leak(&home, &secrets);
    d.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_openid_login_at_the_idp_serves_every_enterprise_server() {
    let idp_key = Arc::new(TestKey::es256());
    let idp = AuthServer::start(AsOptions {
        idp: Some(IdpOptions {
            key: idp_key.clone(),
            jag_client_id: "mcp-client".into(),
            // Less than the minute the daemon wants left: every grant renews it first.
            id_token_ttl_secs: 30,
        }),
        // An IdP, not an MCP authorization server: OpenID scopes, no RFC 8707 resource.
        scopes_supported: vec!["openid".into(), "offline_access".into()],
        rejects_resource: true,
        ..Default::default()
    })
    .await;
    idp.register_client(public("mcp-authd-at-idp"));
    let auth = AuthServer::start(short_lived(AsOptions {
        trusted_assertion_issuers: vec![(idp.issuer().to_string(), idp_key.verifying_key())],
        ..Default::default()
    }))
    .await;
    auth.register_client(confidential("mcp-client", "mcp-secret-0123456789"));
    let (wiki, crm) = (
        McpServer::start(&auth, McpOptions::default()).await,
        McpServer::start(&auth, McpOptions::default()).await,
    );
    let mut config = ON_DEMAND_ONLY.to_string();
    for url in [wiki.url(), crm.url()] {
        config.push_str(&format!(
            "[servers.\"{url}\"]\ngrant = \"enterprise\"\nclient_id = \"mcp-client\"\nclient_secret = \"mcp-secret-0123456789\"\nissuer = \"{1}\"\n\
             [servers.\"{url}\".enterprise]\nidp_token_endpoint = \"{0}/token\"\nidp_issuer = \"{0}\"\nidp_client_id = \"mcp-authd-at-idp\"\n",
            idp.issuer(),
            auth.issuer()
        ));
    }
    let home = DaemonHome::new("file", &config);
    let d = home.start(None); // the browser stand-in approves at the IdP

    // The first server: the OpenID login at the IdP in the browser, then the exchange.
    d.cli_ok(&["login", wiki.url()]);
    assert_eq!(wiki.status_with_token(&token(&d, wiki.url())).await, 200);
    assert_eq!(
        idp.counts().authorizations,
        1,
        "one browser login at the IdP"
    );
    // The second server and every renewal: the same ID token, no browser.
    assert_eq!(crm.status_with_token(&token(&d, crm.url())).await, 200);
    let_tokens_expire().await;
    assert_eq!(wiki.status_with_token(&token(&d, wiki.url())).await, 200);
    assert_eq!(idp.counts().authorizations, 1, "still one browser login");
    assert!(
        idp.counts().refreshes >= 3,
        "the short-lived ID token was renewed with the IdP's (rotated) refresh token: {:?}",
        idp.counts()
    );
    assert_eq!(idp.counts().token_exchanges, 3);
    assert_eq!(auth.counts().jwt_bearer_grants, 3);
    assert_eq!(grant_of(&d, crm.url()).grant_type.as_str(), "enterprise");

    let mut secrets = auth.issued_secrets();
    secrets.extend(idp.issued_secrets());
    assert_no_leak(&home, &secrets);
    d.stop();
}
