//! Which client logs in, and on which redirect URI: a pre-registered client, our Client ID
//! Metadata Document, a stored dynamic registration, or a new one (RFC 7591); and the
//! loopback listener on its redirect URI.

use mcp_authd_ipc::text::MAX_QUOTED_CHARS;
use mcp_authd_ipc::{ErrorKind, RpcError};
use url::Url;

use super::Login;
use super::errors::login_failed;
use crate::broker::Broker;
use crate::config::ServerConfig;
use crate::loopback::{LoopbackRedirect, RedirectHost};
use crate::oauth::discovery::Discovery;
use crate::oauth::http::UrlPolicy;
use crate::oauth::printable;
use crate::oauth::registration::{AuthMethod, ClientCredentials, ClientMetadata, register};
use crate::oauth::token::now;
use crate::secret::Secret;
use crate::store::db::RegistrationKind;
use crate::store::{RegistrationRow, new_id};

const CALLBACK_PATH: &str = "/callback";

/// The client chosen for a login: its registration, its credentials, and the listener on
/// its redirect URI.
pub(super) type Chosen = (RegistrationRow, ClientCredentials, LoopbackRedirect);

/// The client to log in with and a listener on its redirect URI, in the order the MCP spec
/// gives: a pre-registered client from the config; else our Client ID Metadata Document
/// URL when one is configured and the AS supports them; else the dynamic registration
/// stored for this issuer (if its port is free); else a new dynamic registration.
///
/// The redirect path of a dynamic registration is its issuer's own ([`callback_path`]), so
/// a response the browser brings from another authorization server (a mix-up attack, RFC
/// 9700 §4.4) arrives at a path this login does not serve. `server_cfg` is the server's
/// `[servers."…"]` entry; its client is used only where it is bound to this issuer
/// ([`crate::config::Config::client`]).
pub(super) async fn client_for(
    login: &Login<'_>,
    policy: &UrlPolicy,
    d: &Discovery,
    server_cfg: Option<&ServerConfig>,
    state: &Secret,
) -> Result<Chosen, RpcError> {
    let (broker, server_url, p) = (login.broker, login.server_url, login.params);
    let client_cfg = broker
        .config()
        .client(server_url, &d.metadata.issuer)
        .map_err(|why| login_failed(server_url, &why))?
        .cloned();
    // A fixed redirect URI (the caller's, else the config's) for authorization servers
    // that accept only the one registered with them: used as given or the login fails.
    let fixed_redirect = p
        .redirect_uri
        .clone()
        .or_else(|| server_cfg.and_then(|c| c.redirect_uri.clone()));
    let fixed = Fixed {
        redirect_uri: fixed_redirect.as_deref(),
        client_metadata: server_cfg.and_then(|c| c.client_metadata.as_ref()),
    };
    let candidates = Candidates {
        broker,
        d,
        fixed,
        state,
    };
    if let Some(cfg) = client_cfg.as_ref().filter(|c| c.client_id.is_some()) {
        return candidates.configured_client(cfg).await;
    }
    if let Some(chosen) = candidates.metadata_document_client().await? {
        return Ok(chosen);
    }
    if let Some(chosen) = candidates.stored_registration().await? {
        return Ok(chosen);
    }
    candidates.register_new(policy).await
}

/// What the user fixed about the client for one login: its redirect URI and what dynamic
/// registration says about it.
struct Fixed<'a> {
    /// `--callback-port` (with `--callback-host`/`--callback-path`), else the config's
    /// `redirect_uri`; may lack a path (see [`with_path`]).
    redirect_uri: Option<&'a str>,
    client_metadata: Option<&'a ClientMetadata>,
}

impl Fixed<'_> {
    /// The fixed redirect URI of a client registered by hand: without a path of its own
    /// (`--callback-port` alone) it gets `/callback`.
    fn for_static_client(&self) -> Option<String> {
        self.redirect_uri.map(|uri| with_path(uri, CALLBACK_PATH))
    }

    /// The fixed redirect URI of a dynamic registration: without a path of its own it gets
    /// the issuer's (the user's path, when given, wins).
    fn for_dynamic_client(&self, own_path: &str) -> Option<String> {
        self.redirect_uri.map(|uri| with_path(uri, own_path))
    }
}

/// The candidates for one login's client, tried in the MCP spec's order.
struct Candidates<'a> {
    broker: &'a Broker,
    d: &'a Discovery,
    fixed: Fixed<'a>,
    state: &'a Secret,
}

impl<'a> Candidates<'a> {
    fn parts(&self) -> (&'a Broker, &'a Discovery, &Fixed<'a>, &'a Secret) {
        (self.broker, self.d, &self.fixed, self.state)
    }

    /// The client configured for the server, on its fixed redirect URI or `/callback`.
    async fn configured_client(&self, cfg: &ServerConfig) -> Result<Chosen, RpcError> {
        let (broker, d, fixed, state) = self.parts();
        let issuer = &d.metadata.issuer;
        let fixed = fixed
            .for_static_client()
            .or_else(|| cfg.redirect_uri.clone());
        let redirect = bind_redirect(fixed, CALLBACK_PATH, state).await?;
        let reg = pre_registered(broker, issuer, cfg).await?;
        let credentials = broker.credentials(&reg, issuer, Some(cfg)).await?;
        Ok((reg, credentials, redirect))
    }

    /// Our Client ID Metadata Document URL as the client id, where one is configured and
    /// the authorization server takes them and sends `iss` (a client id shared by several
    /// servers needs it against mix-ups).
    async fn metadata_document_client(&self) -> Result<Option<Chosen>, RpcError> {
        let (broker, d, fixed, state) = self.parts();
        let issuer = &d.metadata.issuer;
        let cimd = broker.config().client_metadata_url.clone();
        if cimd.is_some()
            && d.metadata.client_id_metadata_document_supported == Some(true)
            && d.metadata.authorization_response_iss_parameter_supported != Some(true)
        {
            tracing::info!(issuer = %issuer, "not using the client metadata document: the authorization server does not send `iss` (RFC 9207), which a client id shared by several servers needs against mix-ups");
        }
        let Some(url) = &cimd else {
            return Ok(None);
        };
        if d.metadata.client_id_metadata_document_supported != Some(true)
            || d.metadata.authorization_response_iss_parameter_supported != Some(true)
        {
            return Ok(None);
        }
        let redirect = bind_redirect(fixed.for_static_client(), CALLBACK_PATH, state).await?;
        let reg = match broker
            .find_registration(issuer, &RegistrationKind::MetadataDocument, Some(url))
            .await?
        {
            Some(r) => r,
            None => {
                let r = registration_row(
                    issuer,
                    RegistrationKind::MetadataDocument,
                    url.clone(),
                    None,
                    AuthMethod::None,
                    false,
                );
                broker.save_registration(&r, None).await?;
                r
            }
        };
        let credentials = broker.credentials(&reg, issuer, None).await?;
        Ok(Some((reg, credentials, redirect)))
    }

    /// The dynamic registration stored for this issuer, when its redirect URI is the fixed
    /// one (if any), has the issuer's own path, and its port is free.
    async fn stored_registration(&self) -> Result<Option<Chosen>, RpcError> {
        let (broker, d, fixed, state) = self.parts();
        let issuer = &d.metadata.issuer;
        let own_path = callback_path(issuer);
        let fixed_dynamic = fixed.for_dynamic_client(&own_path);
        let Some(reg) = broker
            .find_registration(issuer, &RegistrationKind::Dynamic, None)
            .await?
        else {
            return Ok(None);
        };
        // A registration for another redirect URI than the fixed one is not reused.
        if fixed_dynamic
            .as_deref()
            .is_some_and(|uri| reg.redirect_uri.as_deref() != Some(uri))
        {
            return Ok(None);
        }
        let port = reg
            .redirect_uri
            .as_deref()
            .and_then(|u| loopback_port_and_path(u).ok());
        match port {
            // Registered before redirect paths were per issuer: replaced (unless it is the
            // fixed redirect URI the user chose).
            Some((_, _, path)) if path != own_path && fixed_dynamic.is_none() => tracing::info!(
                "stored registration {} has the shared redirect path {path}; registering again with this server's own",
                reg.id
            ),
            Some((host, port, path)) => {
                match LoopbackRedirect::bind(&host, port, &path, state).await {
                    Ok(redirect) => match broker.credentials(&reg, issuer, None).await {
                        Ok(credentials) => return Ok(Some((reg, credentials, redirect))),
                        Err(e) => tracing::warn!(
                            "stored registration {} is unusable ({}); registering again",
                            reg.id,
                            e.message
                        ),
                    },
                    Err(e) => tracing::info!("{e}; registering a new redirect URI"),
                }
            }
            None => {}
        }
        Ok(None)
    }

    /// A new dynamic registration (RFC 7591) on a new listener (the fixed redirect URI's, or
    /// any free port with the issuer's own path); its secret to the secret store.
    async fn register_new(&self, policy: &UrlPolicy) -> Result<Chosen, RpcError> {
        let (broker, d, fixed, state) = self.parts();
        let issuer = &d.metadata.issuer;
        let own_path = callback_path(issuer);
        let redirect = bind_redirect(fixed.for_dynamic_client(&own_path), &own_path, state).await?;
        let registered = register(
            broker.http(),
            policy,
            &d.metadata,
            &redirect.redirect_uri,
            fixed.client_metadata,
        )
        .await
        .map_err(|e| {
            RpcError::new(
                ErrorKind::RegistrationFailed,
                format!(
                    "{e}; configure a pre-registered client_id under [servers.\"{}\"] in the config file, then run: {}",
                    printable(&d.server_url, MAX_QUOTED_CHARS),
                    mcp_authd_ipc::next_step::RELOAD
                ),
            )
            .with_server(&d.server_url)
        })?;
        let reg = registration_row(
            issuer,
            RegistrationKind::Dynamic,
            registered.credentials.client_id.clone(),
            Some(registered.redirect_uri.clone()),
            registered.credentials.auth_method,
            registered.credentials.client_secret.is_some(),
        );
        broker
            .save_registration(&reg, registered.credentials.client_secret.as_ref())
            .await?;
        tracing::info!(issuer = %issuer, client_id = %reg.client_id, "registered a client");
        Ok((reg, registered.credentials, redirect))
    }
}

/// The registration row of the client configured for a server (its `client_id`, or none
/// for a grant without client authentication), made on first use.
pub(super) async fn pre_registered(
    broker: &Broker,
    issuer: &str,
    cfg: &ServerConfig,
) -> Result<RegistrationRow, RpcError> {
    let client_id = cfg.client_id.clone().unwrap_or_default();
    let method = AuthMethod::parse(cfg.auth_method())
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, format!("config file: {e}")))?;
    match broker
        .find_registration(issuer, &RegistrationKind::PreRegistered, Some(&client_id))
        .await?
    {
        Some(r) if r.token_endpoint_auth_method == method.as_str() => Ok(r),
        _ => {
            let r = registration_row(
                issuer,
                RegistrationKind::PreRegistered,
                client_id,
                cfg.redirect_uri.clone(),
                method,
                cfg.client_secret.is_some(),
            );
            broker.save_registration(&r, None).await?;
            Ok(r)
        }
    }
}

/// A new registration row (a new id, created now): the one place one is built.
fn registration_row(
    issuer: &str,
    kind: RegistrationKind,
    client_id: String,
    redirect_uri: Option<String>,
    auth_method: AuthMethod,
    has_client_secret: bool,
) -> RegistrationRow {
    RegistrationRow {
        id: new_id("r"),
        issuer: issuer.to_string(),
        kind,
        client_id,
        redirect_uri,
        token_endpoint_auth_method: auth_method.as_str().into(),
        has_client_secret,
        created_at: now(),
    }
}

/// The fixed redirect URI's listener, or one on any free port serving `path`.
async fn bind_redirect(
    fixed: Option<String>,
    path: &str,
    state: &Secret,
) -> Result<LoopbackRedirect, RpcError> {
    match fixed {
        Some(uri) => bind_fixed(&uri, state).await,
        None => LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, path, state)
            .await
            .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string())),
    }
}

/// Listens on exactly `uri` (from `--callback-port`/`--callback-host` or the config): an
/// authorization server that knows only this URI would refuse any other, so a port in
/// use is an error, never a quiet move to another port.
async fn bind_fixed(uri: &str, state: &Secret) -> Result<LoopbackRedirect, RpcError> {
    let (host, port, path) = loopback_port_and_path(uri)?;
    LoopbackRedirect::bind(&host, port, &path, state)
        .await
        .map_err(|e| {
            RpcError::new(
                ErrorKind::InvalidParams,
                format!(
                    "{e}: the redirect URI {} is fixed (--callback-port or redirect_uri in the config); stop what holds the port, or register another port with the authorization server and pass it",
                    printable(uri, MAX_QUOTED_CHARS)
                ),
            )
        })
}

/// `uri` as given when it names a path (`http://127.0.0.1:8080/cb`, even `/`), else with
/// `path` appended (`http://127.0.0.1:8080`): the path the user chose always wins.
fn with_path(uri: &str, path: &str) -> String {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    if after_scheme.contains('/') {
        uri.to_string()
    } else {
        format!("{uri}{path}")
    }
}

/// The host (as written: `localhost` stays `localhost`), port and path of a loopback
/// redirect URI from the config or a stored registration.
fn loopback_port_and_path(uri: &str) -> Result<(RedirectHost, u16, String), RpcError> {
    let bad = || {
        RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "redirect_uri `{}` must be http://127.0.0.1:<port>/<path> (or http://localhost:<port>/<path>, http://[::1]:<port>/<path>)",
                printable(uri, MAX_QUOTED_CHARS)
            ),
        )
    };
    let url = Url::parse(uri).map_err(|_| bad())?;
    if url.scheme() != "http" || !mcp_authd_ipc::transport::is_loopback(&url) {
        return Err(bad());
    }
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => RedirectHost::Ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => RedirectHost::Ip(ip.into()),
        _ => RedirectHost::Localhost,
    };
    Ok((host, url.port().unwrap_or(80), url.path().to_string()))
}

/// The redirect path of dynamic registrations at `issuer`: `/callback/` and 16 hex digits
/// of the issuer's SHA-256, so each authorization server has its own (RFC 9700 §4.4.2).
pub(super) fn callback_path(issuer: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(issuer.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CALLBACK_PATH}/{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each authorization server has its own redirect path; the same one every time.
    #[test]
    fn callback_paths_are_per_issuer() {
        let a = callback_path("https://as-a.example");
        assert_eq!(a, callback_path("https://as-a.example"));
        assert_ne!(a, callback_path("https://as-b.example"));
        assert!(
            a.starts_with("/callback/") && a.len() == "/callback/".len() + 16,
            "{a}"
        );
    }

    /// `--callback-port` alone leaves the path to the daemon: a dynamic registration keeps
    /// its issuer's own; a path the user gave (even `/`) is used as is.
    #[test]
    fn a_fixed_redirect_uri_without_a_path_gets_the_issuers_own() {
        let own = callback_path("https://as-a.example");
        for (given, want) in [
            (
                "http://127.0.0.1:8080",
                format!("http://127.0.0.1:8080{own}"),
            ),
            ("http://[::1]:8080", format!("http://[::1]:8080{own}")),
            (
                "http://localhost:8080/cb",
                "http://localhost:8080/cb".into(),
            ),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/".into()),
        ] {
            assert_eq!(with_path(given, &own), want, "{given}");
        }
        let (_, port, path) =
            loopback_port_and_path(&with_path("http://127.0.0.1:8080", &own)).unwrap();
        assert_eq!((port, path), (8080, own));
    }

    /// A redirect URI is plain http on a loopback literal or `localhost`, which stays as
    /// written; anything else is refused with the shape it must have.
    #[test]
    fn a_redirect_uri_must_be_http_on_loopback() {
        let (host, port, path) = loopback_port_and_path("http://localhost:9/cb").unwrap();
        assert!(matches!(host, RedirectHost::Localhost));
        assert_eq!((port, path.as_str()), (9, "/cb"));
        let (host, port, _) = loopback_port_and_path("http://[::1]/").unwrap();
        assert!(matches!(host, RedirectHost::Ip(ip) if ip.is_ipv6() && ip.is_loopback()));
        assert_eq!(port, 80);
        for bad in [
            "https://127.0.0.1:9/cb",
            "http://10.0.0.1:9/cb",
            "http://localhost.evil.example:9/cb",
            "http://127.0.0.1.nip.io:9/cb",
            "not a url",
        ] {
            let e = loopback_port_and_path(bad).unwrap_err();
            assert_eq!(e.kind(), Some(ErrorKind::InvalidParams), "{bad}");
            assert!(
                e.message.contains("must be http://127.0.0.1"),
                "{bad}: {e:?}"
            );
        }
    }

    /// Every registration row is made by one function: a fresh id each time, the method's
    /// wire name.
    #[test]
    fn registration_rows_get_fresh_ids() {
        let row = |kind| {
            registration_row(
                "https://as.example",
                kind,
                "c1".into(),
                Some("http://127.0.0.1:9/callback".into()),
                AuthMethod::None,
                false,
            )
        };
        let (a, b) = (
            row(RegistrationKind::Dynamic),
            row(RegistrationKind::Dynamic),
        );
        assert_ne!(a.id, b.id);
        assert!(a.id.starts_with("r"), "{}", a.id);
        assert_eq!(a.token_endpoint_auth_method, AuthMethod::None.as_str());
        assert_eq!(
            row(RegistrationKind::MetadataDocument).kind,
            RegistrationKind::MetadataDocument
        );
    }

    /// A fixed redirect URI is listened on exactly: a port in use is an error naming the
    /// setting, never a quiet move to another port.
    #[tokio::test]
    async fn a_fixed_redirect_uri_in_use_is_an_error() {
        let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = taken.local_addr().unwrap().port();
        let state = crate::oauth::pkce::random_token();
        let uri = format!("http://127.0.0.1:{port}/callback");
        let Err(e) = bind_redirect(Some(uri), CALLBACK_PATH, &state).await else {
            panic!("listened on a port in use");
        };
        assert_eq!(e.kind(), Some(ErrorKind::InvalidParams));
        assert!(e.message.contains("--callback-port"), "{}", e.message);
        drop(taken);
        let free = bind_redirect(None, "/callback/x", &state).await.unwrap();
        assert!(
            free.redirect_uri.starts_with("http://127.0.0.1:")
                && free.redirect_uri.ends_with("/callback/x"),
            "{}",
            free.redirect_uri
        );
    }

    /// A broker on a fresh data directory with `config` (TOML), and a started login of
    /// `server` on it.
    struct Fixture {
        _dir: tempfile::TempDir,
        broker: std::sync::Arc<Broker>,
        params: mcp_authd_ipc::methods::LoginParams,
        started: crate::broker::Started<crate::broker::LoginProgress>,
    }

    const SERVER: &str = "https://h.example/mcp";
    const ISSUER: &str = "https://as.example";

    impl Fixture {
        async fn new(config: &str) -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let db = crate::store::Db::open(&dir.path().join("state.db"))
                .await
                .unwrap();
            let secrets = crate::store::SecretStore::file_for_tests(dir.path().join("secrets"));
            let (audit, _writer) = crate::audit::AuditLog::start(db.clone());
            let broker = std::sync::Arc::new(Broker::new(
                db,
                audit,
                std::sync::Arc::new(secrets),
                crate::oauth::http::Http::new(None).unwrap(),
                toml::from_str(config).unwrap(),
                crate::config::Paths {
                    data_dir: dir.path().to_path_buf(),
                    config_file: dir.path().join("config.toml"),
                },
                "test.sock".into(),
            ));
            let key = crate::broker::LoginKey::new(SERVER, None);
            let crate::broker::Join::Started(started) = broker
                .logins()
                .join_or_start(key, crate::broker::LoginProgress::Starting)
            else {
                unreachable!("a fresh broker has no login running")
            };
            Fixture {
                _dir: dir,
                broker,
                params: Default::default(),
                started,
            }
        }

        /// The client `client_for` chooses at an authorization server with `metadata`
        /// (JSON over the required fields), whose registration endpoint refuses at once.
        async fn choose(&self, metadata: serde_json::Value) -> Result<Chosen, RpcError> {
            let mut d = crate::login::authorize::tests::discovery_with(metadata);
            // Nothing listens there, and the transport policy refuses it anyway: a new
            // registration fails without reaching any network.
            d.metadata.registration_endpoint = Some("http://127.0.0.1:1/register".into());
            let login = Login {
                broker: &self.broker,
                server_url: SERVER,
                params: &self.params,
                progress: &self.started,
            };
            let policy = self.broker.url_policy(SERVER);
            let cfg = self.broker.config().server(SERVER, Some(ISSUER)).cloned();
            let state = crate::oauth::pkce::random_token();
            client_for(&login, &policy, &d, cfg.as_ref(), &state).await
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    fn refused_registration(chosen: Result<Chosen, RpcError>) -> RpcError {
        match chosen {
            Err(e) => {
                assert_eq!(e.kind(), Some(ErrorKind::RegistrationFailed), "{e:?}");
                e
            }
            Ok((reg, _, _)) => panic!("chose {} ({}) instead of registering", reg.id, reg.kind),
        }
    }

    /// A client configured for the server comes first, on `/callback`; its row is made
    /// on first use and reused after.
    #[tokio::test]
    async fn a_configured_client_comes_first_and_its_row_is_made_once() {
        let f = Fixture::new(&format!(
            "client_metadata_url = \"https://client.example/cimd.json\"\n\
             [servers.\"{SERVER}\"]\nclient_id = \"pre-1\"\n"
        ))
        .await;
        let cimd = serde_json::json!({
            "client_id_metadata_document_supported": true,
            "authorization_response_iss_parameter_supported": true,
        });
        let (reg, credentials, redirect) = f.choose(cimd.clone()).await.unwrap();
        assert_eq!(
            (reg.kind.as_str(), credentials.client_id.as_str()),
            ("pre-registered", "pre-1")
        );
        assert!(
            redirect.redirect_uri.ends_with("/callback"),
            "{}",
            redirect.redirect_uri
        );
        drop(redirect);
        let (again, _, _) = f.choose(cimd).await.unwrap();
        assert_eq!(again.id, reg.id);
    }

    /// Our Client ID Metadata Document only where the server takes them and sends `iss`.
    #[tokio::test]
    async fn the_metadata_document_client_needs_iss() {
        let url = "https://client.example/cimd.json";
        let f = Fixture::new(&format!("client_metadata_url = \"{url}\"\n")).await;
        let (reg, credentials, redirect) = f
            .choose(serde_json::json!({
                "client_id_metadata_document_supported": true,
                "authorization_response_iss_parameter_supported": true,
            }))
            .await
            .unwrap();
        assert_eq!(
            (reg.kind, credentials.client_id.as_str()),
            (RegistrationKind::MetadataDocument, url)
        );
        assert!(
            redirect.redirect_uri.ends_with("/callback"),
            "{}",
            redirect.redirect_uri
        );
        drop(redirect);
        // Without `iss`, a dynamic registration instead.
        refused_registration(
            f.choose(serde_json::json!({ "client_id_metadata_document_supported": true }))
                .await,
        );
    }

    /// The dynamic registration stored for the issuer is reused on its own port while
    /// that port is free; when it is taken, or the registration has the old shared path,
    /// a new one is registered.
    #[tokio::test]
    async fn a_stored_registration_is_reused_while_its_port_is_free() {
        let f = Fixture::new("").await;
        let port = free_port();
        let own = format!("http://127.0.0.1:{port}{}", callback_path(ISSUER));
        let stored = registration_row(
            ISSUER,
            RegistrationKind::Dynamic,
            "dyn-1".into(),
            Some(own.clone()),
            AuthMethod::None,
            false,
        );
        f.broker.save_registration(&stored, None).await.unwrap();
        let (reg, credentials, redirect) = f.choose(serde_json::json!({})).await.unwrap();
        assert_eq!(
            (reg.id.as_str(), credentials.client_id.as_str()),
            (stored.id.as_str(), "dyn-1")
        );
        assert_eq!(redirect.redirect_uri, own);

        // Its port is held (by this login's own listener, still open).
        let e = refused_registration(f.choose(serde_json::json!({})).await);
        assert!(
            e.message.contains("pre-registered client_id"),
            "{}",
            e.message
        );
        drop(redirect);

        // Registered when every issuer shared `/callback`: replaced.
        let f = Fixture::new("").await;
        let shared = format!("http://127.0.0.1:{}/callback", free_port());
        let old = registration_row(
            ISSUER,
            RegistrationKind::Dynamic,
            "dyn-0".into(),
            Some(shared),
            AuthMethod::None,
            false,
        );
        f.broker.save_registration(&old, None).await.unwrap();
        refused_registration(f.choose(serde_json::json!({})).await);
    }

    /// A registration for another redirect URI than the fixed one is not reused.
    #[tokio::test]
    async fn a_fixed_redirect_uri_passes_over_a_registration_for_another() {
        let mut f = Fixture::new("").await;
        let stored = format!("http://127.0.0.1:{}{}", free_port(), callback_path(ISSUER));
        let row = registration_row(
            ISSUER,
            RegistrationKind::Dynamic,
            "dyn-1".into(),
            Some(stored),
            AuthMethod::None,
            false,
        );
        f.broker.save_registration(&row, None).await.unwrap();
        f.params.redirect_uri = Some(format!("http://127.0.0.1:{}", free_port()));
        refused_registration(f.choose(serde_json::json!({})).await);
    }
}
