//! A real, strict OAuth 2.1 authorization server for end-to-end tests.
//!
//! Everything a client can get wrong is checked the way a production server
//! would check it (PKCE, exact redirect URIs, RFC 8707 `resource` binding,
//! client authentication per registered method, single-use codes, refresh
//! token rotation with replay detection), because a lenient test server would
//! let daemon bugs pass silently. Approval is automatic: a GET on
//! `/authorize` behaves like a user who clicked "allow".
//!
//! State lives in one `Mutex` so the test can inspect it (counts, issued
//! secrets) and the in-process [`crate::McpServer`] can validate tokens
//! without an introspection round trip.

mod authorize;
mod client_auth;
mod device;
mod machine_grants;
mod metadata;
mod register;
mod request;
mod revoke;
mod state;

#[cfg(test)]
mod tests;
mod token;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use serde_json::{Value, json};

use self::authorize::authorize;
use self::device::{device_authorization, device_verification};
use self::metadata::{metadata, openid_configuration};
use self::register::register;
use self::request::random_token;
use self::revoke::revoke;

pub(crate) use self::state::Shared;
use self::state::{AuthMethod, Client, Inner};
use self::token::token;
use crate::jwt::{TestKey, VerifyingKey};
use crate::net::{ServerHandle, bind_loopback, spawn_server};

/// How long an authorization code may wait before being exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(600);

const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];

/// RFC 8628 §3.4.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Knobs that let a test reproduce the variety of real-world servers.
#[derive(Debug, Clone)]
pub struct AsOptions {
    /// Lifetime of access tokens issued from now on (see also
    /// [`AuthServer::set_access_token_ttl`]).
    pub access_token_ttl_secs: u64,
    /// Whether token responses include a refresh token at all.
    pub issue_refresh_tokens: bool,
    /// Whether a refresh replaces the refresh token (OAuth 2.1 public-client
    /// behaviour) or keeps the old one valid and omits it from the response.
    pub rotate_refresh_tokens: bool,
    /// Advertised in metadata and enforced at `/authorize`.
    pub scopes_supported: Vec<String>,
    /// Serve RFC 7591 dynamic client registration at `{issuer}/register`.
    pub registration_endpoint: bool,
    /// Serve RFC 7009 revocation at `{issuer}/revoke`.
    pub revocation_endpoint: bool,
    /// `None` honours the client's requested `token_endpoint_auth_method`;
    /// `Some(m)` overrides it in the DCR response, as some servers do.
    pub dcr_auth_method: Option<String>,
    /// Issuer path (`""` or e.g. `"/tenant1"`), for RFC 8414 path-aware
    /// metadata discovery.
    pub path: String,
    /// Like Microsoft Entra ID v2: the RFC 8707 `resource` parameter is an error, and
    /// tokens are for [`IMPLIED_RESOURCE`].
    pub rejects_resource: bool,
    /// The id_token's `email` instead of [`TEST_ACCOUNT_EMAIL`]: a hostile server's
    /// string that reaches what the daemon shows.
    pub account_email: Option<String>,
    /// Serve under this host name instead of `127.0.0.1` (e.g. one [`crate::host_alias`]
    /// maps to loopback): a server mcp-authd must treat as remote.
    pub host: Option<String>,
    /// The origin clients reach this server at when a TLS front (a real TLS-terminating
    /// relay) stands before it, e.g. `https://as.corp.mcp-authd.test:PORT`; `None`: its
    /// own loopback address.
    pub public_origin: Option<String>,
    /// A strict OpenID provider: OpenID Connect Discovery metadata (also served at
    /// `/.well-known/openid-configuration`), and, as OpenID Connect Core §11 says,
    /// `offline_access` is ignored unless the authorization request carries
    /// `prompt=consent`: no refresh token without both.
    pub strict_oidc: bool,
    /// Like providers whose access tokens are self-contained JWTs: revoking an access
    /// token answers `unsupported_token_type` (RFC 7009 §2.2.1).
    pub access_token_revocation_unsupported: bool,
    /// Like Microsoft Entra ID: takes PKCE S256 (and still requires it) but its metadata
    /// leaves `code_challenge_methods_supported` out.
    pub pkce_unadvertised: bool,
    /// Issuers whose signed JWTs the RFC 7523 JWT-bearer grant accepts as assertions (a
    /// workload identity provider, an enterprise IdP issuing ID-JAGs), with their keys.
    pub trusted_assertion_issuers: Vec<(String, VerifyingKey)>,
    /// Act as an enterprise IdP (SEP-990): RFC 8693 token exchange of an ID token signed
    /// with this key for an ID-JAG, signed with it too.
    pub idp: Option<IdpOptions>,
    /// RFC 9449: advertise `dpop_signing_alg_values_supported: ["ES256"]`; a token request
    /// with a valid proof gets a DPoP-bound token (`cnf.jkt` kept here), and a bound
    /// grant's refresh needs a proof by the same key.
    pub dpop: bool,
    /// With `dpop`: a proof without [`AuthServer::dpop_nonce`] is answered
    /// `use_dpop_nonce` (RFC 9449 §8).
    pub dpop_nonce: bool,
    /// Serve RFC 8628 device authorization (off by default, as on most servers).
    pub device: Option<DeviceOptions>,
}

/// How the device authorization endpoint behaves. The "user" approves or denies with a
/// GET on the verification URI (`?user_code=…`, plus `&decision=deny` to deny).
#[derive(Debug, Clone)]
pub struct DeviceOptions {
    /// The `interval` announced; `None` leaves it out (clients then wait 5 s).
    pub interval_secs: Option<u64>,
    /// The device code's `expires_in`; polls after it answer `expired_token`.
    pub code_ttl_secs: u64,
    /// The first this many polls are answered `slow_down` whatever their pace.
    pub slow_down_polls: u32,
}

impl Default for DeviceOptions {
    fn default() -> Self {
        Self {
            interval_secs: Some(1),
            code_ttl_secs: 600,
            slow_down_polls: 0,
        }
    }
}

/// One poll of the token endpoint with a device code, as the server saw it.
#[derive(Debug, Clone)]
pub struct DevicePoll {
    /// Tokio's clock: paused with the test's, when it is.
    pub at: tokio::time::Instant,
    /// `granted`, or the RFC 8628 §3.5 error answered.
    pub answer: String,
}

/// An enterprise identity provider's side of SEP-990.
#[derive(Debug, Clone)]
pub struct IdpOptions {
    /// Signs the ID tokens tests mint ([`AuthServer::mint_id_token`]), the ones its
    /// OpenID logins issue, and the ID-JAGs.
    pub key: Arc<TestKey>,
    /// Lifetime of the ID tokens its OpenID logins and refreshes issue.
    pub id_token_ttl_secs: u64,
    /// The `client_id` claim of the ID-JAGs: the client at the authorization server the
    /// IdP's administrator configured for it.
    pub jag_client_id: String,
}

/// RFC 7523 §2.1.
const JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// RFC 8693 §2.1.
const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";

const TOKEN_TYPE_ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// The `email` of the id_token issued when the granted scope includes `openid`.
pub const TEST_ACCOUNT_EMAIL: &str = "tester@example.test";

/// The `sub` of that id_token.
pub const TEST_ACCOUNT_SUBJECT: &str = "user-4711";

/// The `sub` of the user a login with `login_hint` = `hint` logs in as: each hint is a
/// user of its own.
pub fn subject_of_hint(hint: &str) -> String {
    format!("user-{hint}")
}

/// The resource of tokens from an AS with `rejects_resource`.
pub const IMPLIED_RESOURCE: &str = "https://resource.invalid/implied-by-scopes";

impl Default for AsOptions {
    fn default() -> Self {
        Self {
            access_token_ttl_secs: 3600,
            issue_refresh_tokens: true,
            rotate_refresh_tokens: true,
            scopes_supported: ["mcp:read", "mcp:write", "offline_access"]
                .map(String::from)
                .to_vec(),
            registration_endpoint: true,
            revocation_endpoint: true,
            dcr_auth_method: None,
            path: String::new(),
            rejects_resource: false,
            account_email: None,
            host: None,
            public_origin: None,
            strict_oidc: false,
            access_token_revocation_unsupported: false,
            pkce_unadvertised: false,
            trusted_assertion_issuers: Vec::new(),
            idp: None,
            dpop: false,
            dpop_nonce: false,
            device: None,
        }
    }
}

/// Snapshot of how often each endpoint did its job (successful operations,
/// except `refresh_failures`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Successful dynamic client registrations.
    pub registrations: u32,
    /// Authorization codes issued by `/authorize`.
    pub authorizations: u32,
    /// Successful `authorization_code` grants.
    pub code_exchanges: u32,
    /// Successful `refresh_token` grants.
    pub refreshes: u32,
    /// Failed `refresh_token` grant requests, for any reason.
    pub refresh_failures: u32,
    /// Authenticated, well-formed revocation requests (RFC 7009 answers 200
    /// even for unknown tokens, so this counts requests, not tokens).
    pub revocations: u32,
    /// Successful `client_credentials` grants.
    pub client_credentials: u32,
    /// `jwt-bearer` grant requests, successful or not.
    pub jwt_bearer_requests: u32,
    /// Successful `jwt-bearer` grants.
    pub jwt_bearer_grants: u32,
    /// Successful token exchanges for an ID-JAG (as an IdP).
    pub token_exchanges: u32,
    /// Token requests that carried a valid DPoP proof.
    pub dpop_proofs: u32,
    /// `use_dpop_nonce` answers from the token endpoint.
    pub dpop_nonce_challenges: u32,
}

/// Why [`AuthServer::validate_access_token`] refused a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenProblem {
    /// Never issued by this server.
    Unknown,
    /// Past its lifetime.
    Expired,
    /// Issued for a different RFC 8707 resource (audience).
    WrongResource,
    /// Revoked directly, or its grant was revoked (revocation or replay).
    Revoked,
}

/// A client that exists without dynamic registration, for servers that do not
/// offer DCR.
#[derive(Debug, Clone)]
pub struct PreRegisteredClient {
    pub client_id: String,
    /// Required unless the method is `"none"`.
    pub client_secret: Option<String>,
    /// `"none"`, `"client_secret_basic"` or `"client_secret_post"`.
    pub token_endpoint_auth_method: String,
    /// Exact redirect URIs; empty accepts any loopback `http` redirect URI
    /// (RFC 8252 section 7.3 style).
    pub redirect_uris: Vec<String>,
}

/// A running authorization server; shuts down when dropped.
pub struct AuthServer {
    issuer: String,
    shared: Arc<Shared>,
    /// Where it listens (behind a TLS front, the front forwards here).
    listen_addr: std::net::SocketAddr,
    _server: ServerHandle,
}

impl AuthServer {
    /// Binds an ephemeral loopback port and starts serving.
    ///
    /// Panics on nonsensical options: they are test bugs, not runtime input.
    pub async fn start(opts: AsOptions) -> AuthServer {
        assert!(
            opts.path.is_empty() || (opts.path.starts_with('/') && !opts.path.ends_with('/')),
            "AsOptions::path must be empty or start with '/' and not end with '/'"
        );
        if let Some(method) = &opts.dcr_auth_method {
            assert!(
                AuthMethod::parse(method).is_some(),
                "unsupported AsOptions::dcr_auth_method {method:?}"
            );
        }

        let (listener, origin) = bind_loopback().await;
        let listen_addr = listener.local_addr().expect("a bound listener's address");
        let origin = opts
            .public_origin
            .clone()
            .unwrap_or_else(|| crate::net::named(&origin, opts.host.as_deref()));
        let issuer = format!("{origin}{}", opts.path);
        let shared = Arc::new(Shared {
            issuer: issuer.clone(),
            inner: Mutex::new(Inner::new(Duration::from_secs(opts.access_token_ttl_secs))),
            opts,
            token_delay_ms: Default::default(),
            token_reply_delay_ms: Default::default(),
            dpop_nonce: random_token("nonce-"),
        });
        let server = spawn_server(listener, router(&shared));
        AuthServer {
            issuer,
            shared,
            listen_addr,
            _server: server,
        }
    }

    /// The loopback address it listens on (what a TLS front forwards to).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen_addr
    }

    /// The issuer identifier, without a trailing slash.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Whether `token` is DPoP-bound, and to which key thumbprint (`cnf.jkt`).
    pub fn dpop_binding(&self, token: &str) -> Option<String> {
        self.shared.dpop_binding(token)
    }

    pub fn counts(&self) -> Counts {
        self.shared.lock().counts.clone()
    }

    /// Every secret this server issued or received, so a test can assert that
    /// none of them leaks into logs, command output or plaintext files.
    pub fn issued_secrets(&self) -> Vec<String> {
        self.shared.lock().secrets.clone()
    }

    /// Refresh tokens that would currently be accepted.
    pub fn current_refresh_tokens(&self) -> Vec<String> {
        let inner = self.shared.lock();
        inner
            .refresh_tokens
            .iter()
            .filter(|(_, rt)| !rt.rotated && !inner.families[rt.family].revoked)
            .map(|(token, _)| token.clone())
            .collect()
    }

    /// Checks an access token for use at `resource`; returns its scopes.
    pub fn validate_access_token(
        &self,
        token: &str,
        resource: &str,
    ) -> Result<Vec<String>, TokenProblem> {
        self.shared.validate_access_token(token, resource)
    }

    /// Adds a client as if an administrator had configured it.
    ///
    /// Panics on an inconsistent client definition (a test bug).
    pub fn register_client(&self, client: PreRegisteredClient) {
        let method = AuthMethod::parse(&client.token_endpoint_auth_method).unwrap_or_else(|| {
            panic!(
                "unsupported token_endpoint_auth_method {:?}",
                client.token_endpoint_auth_method
            )
        });
        assert_eq!(
            method == AuthMethod::None,
            client.client_secret.is_none(),
            "a client secret is required exactly when the auth method is not \"none\""
        );
        let mut inner = self.shared.lock();
        if let Some(secret) = &client.client_secret {
            inner.remember_secret(secret);
        }
        inner.clients.insert(
            client.client_id.clone(),
            Client {
                secret: client.client_secret,
                method,
                redirect_uris: client.redirect_uris,
                jwt_key: None,
            },
        );
    }

    /// Adds a client that authenticates with `private_key_jwt` (RFC 7523 §2.2) using the
    /// private half of `key`.
    pub fn register_jwt_client(&self, client_id: &str, key: VerifyingKey) {
        self.shared.lock().clients.insert(
            client_id.to_string(),
            Client {
                secret: None,
                method: AuthMethod::PrivateKeyJwt,
                redirect_uris: Vec::new(),
                jwt_key: Some(key),
            },
        );
    }

    /// The assertions presented to the JWT-bearer grant so far, in order.
    pub fn assertions_seen(&self) -> Vec<String> {
        self.shared.lock().assertions_seen.clone()
    }

    /// From now on, refuse every JWT-bearer grant with `invalid_grant` (a revoked
    /// workload identity, a user removed at the IdP).
    pub fn reject_assertions(&self, reject: bool) {
        self.shared.lock().reject_assertions = reject;
    }

    /// An ID token of this IdP (see [`AsOptions::idp`]) for `subject`, for `audience`
    /// (the IdP client), as the user's OpenID login at the IdP would give.
    pub fn mint_id_token(&self, subject: &str, audience: &str) -> String {
        let idp = self
            .shared
            .opts
            .idp
            .as_ref()
            .expect("AsOptions::idp is set");
        let now = crate::jwt::unix_now();
        let token = idp.key.sign(
            "JWT",
            &json!({"iss": self.issuer, "sub": subject, "aud": audience, "iat": now, "exp": now + 3600}),
        );
        self.shared.lock().remember_secret(&token);
        token
    }

    /// Changes the lifetime of access tokens issued from now on; `0` makes
    /// them expire immediately, to exercise the client's refresh path.
    /// Forgets every access token issued so far (as a password change or an admin
    /// revoking sessions would); refresh tokens stay valid.
    pub fn invalidate_access_tokens(&self) {
        self.shared.lock().access_tokens.clear();
    }

    pub fn set_access_token_ttl(&self, secs: u64) {
        self.shared.lock().access_token_ttl = Duration::from_secs(secs);
    }

    /// Makes `/token` answer only after `delay` from now on (a slow server, or a
    /// request still in flight when the client is told to stop).
    pub fn set_token_delay(&self, delay: Duration) {
        self.shared.token_delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Makes `/token` do the work of a `refresh_token` grant at once but send the answer
    /// only after `delay` (a refresh the server has already rotated, its answer still on
    /// the way). Other grants are answered at once.
    pub fn set_refresh_reply_delay(&self, delay: Duration) {
        self.shared.token_reply_delay_ms.store(
            delay.as_millis() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Every token presented at `/revoke`, in order.
    pub fn revoked_tokens(&self) -> Vec<String> {
        self.shared.lock().revoked.clone()
    }

    /// The refresh token issued last (by a code exchange or a refresh), if any.
    pub fn newest_refresh_token(&self) -> Option<String> {
        self.shared.lock().newest_refresh_token.clone()
    }

    /// Bodies of every DCR request received (invalid JSON is kept as a
    /// string), for asserting on the client's metadata.
    pub fn registrations(&self) -> Vec<Value> {
        self.shared.lock().registrations.clone()
    }

    /// The `sub` of the user an access token was issued to: the `login_hint` of the
    /// login (as [`subject_of_hint`] makes it), else [`TEST_ACCOUNT_SUBJECT`]; `None` for
    /// a token this server never issued.
    pub fn subject_of(&self, access_token: &str) -> Option<String> {
        let user = self.shared.lock().user_of(access_token)?;
        Some(match user {
            Some(hint) => subject_of_hint(&hint),
            None => TEST_ACCOUNT_SUBJECT.to_string(),
        })
    }

    /// Query parameters of the most recent `/authorize` request.
    pub fn last_authorize_params(&self) -> Option<BTreeMap<String, String>> {
        self.shared.lock().last_authorize.clone()
    }

    /// Form parameters of the most recent `/token` request, unredacted.
    /// The kind of token each revocation request presented, in order (`refresh_token`,
    /// `access_token`, `unknown`).
    pub fn revoked_kinds(&self) -> Vec<&'static str> {
        self.shared.lock().revoked_kinds.clone()
    }

    /// When each successful refresh happened, oldest first.
    pub fn refresh_times(&self) -> Vec<Instant> {
        self.shared.lock().refresh_times.clone()
    }

    pub fn last_token_params(&self) -> Option<BTreeMap<String, String>> {
        self.shared.lock().last_token.clone()
    }

    /// Every poll with a device code so far, oldest first.
    pub fn device_polls(&self) -> Vec<DevicePoll> {
        self.shared.lock().device_polls.clone()
    }

    /// Parameters of the most recent device authorization request.
    pub fn last_device_params(&self) -> Option<BTreeMap<String, String>> {
        self.shared.lock().last_device.clone()
    }

    /// The state the MCP server validates tokens against.
    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

/// The endpoints this server offers, under its issuer path.
fn router(shared: &Arc<Shared>) -> Router {
    let path = &shared.opts.path;
    let mut router = Router::new()
        .route(
            &format!("/.well-known/oauth-authorization-server{path}"),
            get(metadata),
        )
        .route(
            &format!("/.well-known/openid-configuration{path}"),
            get(openid_configuration),
        )
        .route(&format!("{path}/authorize"), get(authorize))
        .route(&format!("{path}/token"), post(token));
    if shared.opts.registration_endpoint {
        router = router.route(&format!("{path}/register"), post(register));
    }
    if shared.opts.revocation_endpoint {
        router = router.route(&format!("{path}/revoke"), post(revoke));
    }
    if shared.opts.device.is_some() {
        router = router
            .route(
                &format!("{path}/device_authorization"),
                post(device_authorization),
            )
            .route(&format!("{path}/device"), get(device_verification));
    }
    router.with_state(Arc::clone(shared))
}
