//! Test infrastructure for mcp-authd's end-to-end tests.
//!
//! The daemon is only trustworthy if it is exercised against servers that
//! behave like real ones, so this crate provides two genuine HTTP servers that
//! run inside the test process on ephemeral loopback ports:
//!
//! * [`AuthServer`]: an OAuth 2.1 authorization server (RFC 8414 metadata,
//!   RFC 7591 dynamic client registration, PKCE-only authorization code flow,
//!   RFC 8707 resource indicators, refresh-token rotation with replay
//!   detection, RFC 7009 revocation). It is deliberately strict so that client
//!   bugs surface as test failures instead of being papered over.
//! * [`McpServer`]: an MCP endpoint protected per the MCP authorization spec
//!   (RFC 9728 protected-resource metadata and RFC 6750 bearer challenges),
//!   validating tokens directly against the [`AuthServer`]'s state.
//!
//! The `mcp-authd-test-browser` binary stands in for a user approving the login
//! in a browser.

mod auth_server;
pub mod daemon;
mod dpop;
pub mod jwt;
mod mcp_server;
pub mod outside;
pub mod planted;
pub mod procfs;
pub mod tools;

pub use auth_server::{
    AsOptions, AuthServer, Counts, DEVICE_GRANT, DeviceOptions, DevicePoll, IMPLIED_RESOURCE,
    IdpOptions, PreRegisteredClient, TEST_ACCOUNT_EMAIL, TEST_ACCOUNT_SUBJECT, TokenProblem,
    subject_of_hint,
};
pub use mcp_server::{McpOptions, McpServer};

/// Serving an axum app on a loopback ephemeral port for the lifetime of a
/// handle, shared by both servers.
mod net {
    use axum::Router;
    use tokio::net::TcpListener;
    use tokio::sync::oneshot;

    /// Binds `127.0.0.1:0`.
    ///
    /// Binding happens before the app is built because both servers need to
    /// know their own URL (issuer, resource) to construct their responses.
    /// Panics on failure: without a socket there is no test to run.
    pub(crate) async fn bind_loopback() -> (TcpListener, String) {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind an ephemeral port on 127.0.0.1");
        let addr = listener
            .local_addr()
            .expect("read the local address of a bound listener");
        (listener, format!("http://{addr}"))
    }

    /// `origin` (`http://127.0.0.1:PORT`) with `host` instead of the address, if given.
    pub(crate) fn named(origin: &str, host: Option<&str>) -> String {
        match host {
            Some(host) => origin.replace("127.0.0.1", host),
            None => origin.to_string(),
        }
    }

    /// Keeps a spawned server alive; dropping it shuts the server down
    /// gracefully so a test never leaks a listening socket into the next one.
    pub(crate) struct ServerHandle {
        shutdown: Option<oneshot::Sender<()>>,
    }

    impl Drop for ServerHandle {
        fn drop(&mut self) {
            if let Some(tx) = self.shutdown.take() {
                // The server may already be gone (runtime shutting down); that
                // is exactly the state we want, so the error is irrelevant.
                let _ = tx.send(());
            }
        }
    }

    /// Serves `app` on `listener` in a background task until the returned
    /// handle is dropped.
    pub(crate) fn spawn_server(listener: TcpListener, app: Router) -> ServerHandle {
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let shutdown = async move {
                // Either an explicit signal or a dropped sender means "stop".
                let _ = rx.await;
            };
            if let Err(err) = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
            {
                eprintln!("test server stopped with an error: {err}");
            }
        });
        ServerHandle { shutdown: Some(tx) }
    }
}

/// Helpers shared by the unit tests of both servers: a plain HTTP client and
/// a by-the-book OAuth client flow to obtain tokens.
/// Makes `name` resolve to 127.0.0.1 through `/etc/hosts` (appended once; the tests run as
/// root, in CI as on a developer's container). mcp-authd must treat such a name as remote:
/// it decides "loopback" by the URL alone, never by what a name resolves to. Panics when
/// the file cannot be written: without the name there is no test.
pub fn host_alias(name: &str) -> String {
    use std::io::Write;
    let hosts = std::path::Path::new("/etc/hosts");
    let line = format!("127.0.0.1 {name}");
    let present = std::fs::read_to_string(hosts)
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["127.0.0.1", name]);
    if !present {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(hosts)
            .expect("append to /etc/hosts (the end-to-end tests run as root)");
        // One write: concurrent tests never interleave half lines.
        f.write_all(format!("\n{line}\n").as_bytes())
            .expect("write /etc/hosts");
    }
    name.to_string()
}

#[cfg(test)]
mod test_support {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::{Value, json};
    use sha2::{Digest, Sha256};
    use url::Url;

    use crate::AuthServer;

    /// The redirect URI the test clients register; nothing listens on it
    /// because the tests never follow the redirect.
    pub(crate) const REDIRECT_URI: &str = "http://127.0.0.1:9/callback";

    /// A client that never follows redirects, so tests can inspect `Location`.
    pub(crate) fn http() -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .build()
            .expect("build reqwest client")
    }

    /// A fresh PKCE pair: (code_verifier, S256 code_challenge).
    pub(crate) fn pkce() -> (String, String) {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        (verifier, challenge)
    }

    /// Registers a public (`none`) client via DCR and returns its client_id.
    pub(crate) async fn register_public_client(auth: &AuthServer) -> String {
        let response = http()
            .post(format!("{}/register", auth.issuer()))
            .json(&json!({
                "redirect_uris": [REDIRECT_URI],
                "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code", "refresh_token"],
                "application_type": "native",
                "client_name": "unit test",
            }))
            .send()
            .await
            .expect("send registration");
        assert_eq!(response.status(), 201);
        let body: Value = response.json().await.expect("registration JSON");
        body["client_id"]
            .as_str()
            .expect("client_id in registration response")
            .to_owned()
    }

    /// Runs `/authorize` for `client_id` and returns the code from the
    /// redirect, checking `state` and `iss` on the way.
    pub(crate) async fn authorize(
        auth: &AuthServer,
        client_id: &str,
        challenge: &str,
        resource: &str,
        scope: &str,
    ) -> String {
        let url = Url::parse_with_params(
            &format!("{}/authorize", auth.issuer()),
            [
                ("response_type", "code"),
                ("client_id", client_id),
                ("redirect_uri", REDIRECT_URI),
                ("code_challenge", challenge),
                ("code_challenge_method", "S256"),
                ("resource", resource),
                ("scope", scope),
                ("state", "xyz"),
            ],
        )
        .expect("authorization URL");
        let response = http().get(url).send().await.expect("send authorize");
        assert_eq!(response.status(), 302);
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .expect("Location header")
            .to_str()
            .expect("ASCII Location");
        let location = Url::parse(location).expect("absolute Location");
        assert!(location.as_str().starts_with(REDIRECT_URI));
        let param = |name: &str| {
            location
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        assert_eq!(param("state").as_deref(), Some("xyz"));
        assert_eq!(param("iss").as_deref(), Some(auth.issuer()));
        param("code").expect("code in redirect")
    }

    /// POSTs a form to the token endpoint and returns (status, JSON body).
    pub(crate) async fn token_request(auth: &AuthServer, form: &[(&str, &str)]) -> (u16, Value) {
        let response = http()
            .post(format!("{}/token", auth.issuer()))
            .form(form)
            .send()
            .await
            .expect("send token request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("token endpoint JSON"))
    }

    /// Full public-client flow: register, authorize, exchange. Returns the
    /// client_id and the token response.
    pub(crate) async fn obtain_tokens(
        auth: &AuthServer,
        resource: &str,
        scope: &str,
    ) -> (String, Value) {
        let client_id = register_public_client(auth).await;
        let (verifier, challenge) = pkce();
        let code = authorize(auth, &client_id, &challenge, resource, scope).await;
        let (status, body) = token_request(
            auth,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", &verifier),
                ("client_id", &client_id),
                ("resource", resource),
            ],
        )
        .await;
        assert_eq!(status, 200, "{body}");
        (client_id, body)
    }
}
