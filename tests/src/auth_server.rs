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

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use url::{Host, Url};

use crate::jwt::{TestKey, VerifyingKey};
use crate::net::{ServerHandle, bind_loopback, spawn_server};

/// How long an authorization code may wait before being exchanged.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
const GRANT_TYPES: [&str; 2] = ["authorization_code", "refresh_token"];
/// RFC 8628 §3.4.
pub const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

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
    pub at: Instant,
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

// ---------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------

/// State shared between the HTTP handlers, [`AuthServer`] and the MCP server.
pub(crate) struct Shared {
    issuer: String,
    opts: AsOptions,
    inner: Mutex<Inner>,
    /// Milliseconds `/token` waits before answering (a slow server).
    token_delay_ms: std::sync::atomic::AtomicU64,
    /// Milliseconds `/token` waits after doing a refresh, before it answers.
    token_reply_delay_ms: std::sync::atomic::AtomicU64,
    dpop_nonce: String,
}

impl Shared {
    /// Whether this server binds tokens to DPoP keys (`AsOptions::dpop`).
    pub(crate) fn offers_dpop(&self) -> bool {
        self.opts.dpop
    }
}

impl Shared {
    /// Locks the state. A panic in another thread holding the lock (only
    /// possible from a failing test assertion) must not cascade into
    /// unrelated requests, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The thumbprint of the key an access token is bound to (`cnf.jkt`), if it is
    /// DPoP-bound.
    pub(crate) fn dpop_binding(&self, token: &str) -> Option<String> {
        let inner = self.lock();
        let record = inner.access_tokens.get(token)?;
        inner.families[record.family].jkt.clone()
    }

    /// The nonce this server demands in DPoP proofs (its token endpoint and its MCP
    /// server's resource requests).
    pub(crate) fn dpop_nonce(&self) -> &str {
        &self.dpop_nonce
    }

    /// Records a proof's `jti`; false when it was seen before (a replay).
    pub(crate) fn fresh_jti(&self, jti: &str) -> bool {
        self.lock().dpop_jtis.insert(jti.to_owned())
    }

    pub(crate) fn validate_access_token(
        &self,
        token: &str,
        resource: &str,
    ) -> Result<Vec<String>, TokenProblem> {
        let inner = self.lock();
        let record = inner
            .access_tokens
            .get(token)
            .ok_or(TokenProblem::Unknown)?;
        if record.revoked || inner.families[record.family].revoked {
            return Err(TokenProblem::Revoked);
        }
        if Instant::now() >= record.expires_at {
            return Err(TokenProblem::Expired);
        }
        if record.resource != resource {
            return Err(TokenProblem::WrongResource);
        }
        Ok(split_scope(record.scope.as_deref()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// Registered with [`AuthServer::register_jwt_client`] only.
    PrivateKeyJwt,
}

impl AuthMethod {
    const ALL: [&'static str; 3] = ["none", "client_secret_basic", "client_secret_post"];

    fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

struct Client {
    secret: Option<String>,
    method: AuthMethod,
    redirect_uris: Vec<String>,
    /// The public key of a `private_key_jwt` client.
    jwt_key: Option<VerifyingKey>,
}

impl Client {
    /// Exact string match (OAuth 2.1 section 2.3.1), except that a client
    /// without registered URIs accepts any loopback `http` URI.
    fn accepts_redirect(&self, uri: &str) -> bool {
        if self.redirect_uris.is_empty() {
            Url::parse(uri).is_ok_and(|url| {
                url.scheme() == "http" && is_loopback(&url) && url.fragment().is_none()
            })
        } else {
            self.redirect_uris
                .iter()
                .any(|registered| registered == uri)
        }
    }
}

/// An issued authorization code.
#[derive(Clone)]
struct PendingCode {
    client_id: String,
    redirect_uri: String,
    code_challenge: String,
    scope: Option<String>,
    resource: String,
    /// Whether a refresh token may be issued for this code (see `strict_oidc`).
    offline: bool,
    issued_at: Instant,
    state: CodeState,
    /// The request's OpenID Connect `login_hint`: the user this consent is for.
    login_hint: Option<String>,
}

/// Codes are single use: the first redemption attempt consumes the code
/// whatever its outcome, and a second use revokes whatever the first one
/// produced (OAuth 2.1 section 4.1.3).
#[derive(Clone, Copy)]
enum CodeState {
    Fresh,
    Consumed { family: Option<FamilyId> },
}

/// Index into `Inner::families`: one grant and every token derived from it.
type FamilyId = usize;

struct Family {
    client_id: String,
    scope: Option<String>,
    resource: String,
    revoked: bool,
    /// The DPoP key thumbprint the grant's tokens are bound to.
    jkt: Option<String>,
    /// The user the grant is for: the `login_hint` of its authorization request (so two
    /// logins with different hints are two users), else the test account.
    user: Option<String>,
}

struct RefreshRecord {
    family: FamilyId,
    /// Replaced by a newer token; presenting it again is a replay.
    rotated: bool,
}

struct AccessRecord {
    family: FamilyId,
    scope: Option<String>,
    resource: String,
    expires_at: Instant,
    revoked: bool,
}

struct Inner {
    access_token_ttl: Duration,
    clients: HashMap<String, Client>,
    codes: HashMap<String, PendingCode>,
    families: Vec<Family>,
    refresh_tokens: HashMap<String, RefreshRecord>,
    access_tokens: HashMap<String, AccessRecord>,
    counts: Counts,
    secrets: Vec<String>,
    registrations: Vec<Value>,
    last_authorize: Option<BTreeMap<String, String>>,
    last_token: Option<BTreeMap<String, String>>,
    revoked: Vec<String>,
    newest_refresh_token: Option<String>,
    /// What each revocation request presented, in order: `refresh_token`,
    /// `access_token` or `unknown`.
    revoked_kinds: Vec<&'static str>,
    /// When each successful refresh happened.
    refresh_times: Vec<Instant>,
    assertions_seen: Vec<String>,
    reject_assertions: bool,
    /// `jti`s of client assertions already used (RFC 7523 §3).
    used_jtis: BTreeSet<String>,
    /// Every DPoP proof `jti` seen (token endpoint and MCP server): none may come twice.
    dpop_jtis: HashSet<String>,
    device_codes: HashMap<String, DeviceGrant>,
    device_polls: Vec<DevicePoll>,
    last_device: Option<BTreeMap<String, String>>,
}

/// An issued device code (RFC 8628 §3.2) and what the user did about it.
struct DeviceGrant {
    client_id: String,
    user_code: String,
    scope: Option<String>,
    resource: String,
    expires_at: Instant,
    /// The interval the client must keep, lengthened by each `slow_down`.
    interval: Duration,
    last_poll: Option<Instant>,
    decision: DeviceDecision,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DeviceDecision {
    Pending,
    Approved,
    Denied,
    /// Tokens were issued: the code is spent.
    Redeemed,
}

impl Inner {
    fn new(access_token_ttl: Duration) -> Self {
        Self {
            access_token_ttl,
            clients: HashMap::new(),
            codes: HashMap::new(),
            families: Vec::new(),
            refresh_tokens: HashMap::new(),
            access_tokens: HashMap::new(),
            counts: Counts::default(),
            secrets: Vec::new(),
            registrations: Vec::new(),
            last_authorize: None,
            last_token: None,
            revoked: Vec::new(),
            newest_refresh_token: None,
            revoked_kinds: Vec::new(),
            refresh_times: Vec::new(),
            assertions_seen: Vec::new(),
            reject_assertions: false,
            used_jtis: BTreeSet::new(),
            dpop_jtis: HashSet::new(),
            device_codes: HashMap::new(),
            device_polls: Vec::new(),
            last_device: None,
        }
    }

    fn remember_secret(&mut self, secret: &str) {
        if !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
        }
    }

    /// Generates a secret value and records it in the leak-check list.
    fn new_secret(&mut self, prefix: &str) -> String {
        let value = random_token(prefix);
        self.remember_secret(&value);
        value
    }

    fn new_family(
        &mut self,
        client_id: &str,
        scope: Option<String>,
        resource: String,
        user: Option<String>,
        jkt: Option<String>,
    ) -> FamilyId {
        self.families.push(Family {
            client_id: client_id.to_owned(),
            scope,
            resource,
            revoked: false,
            jkt,
            user,
        });
        self.families.len() - 1
    }

    /// The user of an access token's grant: `Some(None)` for the test account, `None`
    /// for a token never issued.
    fn user_of(&self, access_token: &str) -> Option<Option<String>> {
        let record = self.access_tokens.get(access_token)?;
        Some(self.families[record.family].user.clone())
    }

    fn revoke_family(&mut self, family: FamilyId) {
        if let Some(f) = self.families.get_mut(family) {
            f.revoked = true;
        }
    }

    /// Issues an access token (and a refresh token if asked) for `family`
    /// and returns the RFC 6749 section 5.1 response body.
    fn issue(&mut self, family: FamilyId, scope: Option<String>, with_refresh: bool) -> Value {
        let access_token = self.new_secret("at_");
        let ttl = self.access_token_ttl;
        let resource = self.families[family].resource.clone();
        self.access_tokens.insert(
            access_token.clone(),
            AccessRecord {
                family,
                scope: scope.clone(),
                resource,
                expires_at: Instant::now() + ttl,
                revoked: false,
            },
        );
        let token_type = match self.families[family].jkt {
            Some(_) => "DPoP",
            None => "Bearer",
        };
        let mut body = json!({
            "access_token": access_token,
            "token_type": token_type,
            "expires_in": ttl.as_secs(),
        });
        if let Some(scope) = scope {
            body["scope"] = json!(scope);
        }
        if with_refresh {
            let refresh_token = self.new_secret("rt_");
            self.refresh_tokens.insert(
                refresh_token.clone(),
                RefreshRecord {
                    family,
                    rotated: false,
                },
            );
            body["refresh_token"] = json!(refresh_token);
        }
        body
    }
}

// ---------------------------------------------------------------------------
// Request parsing and error responses
// ---------------------------------------------------------------------------

/// `application/x-www-form-urlencoded` parameters (query or body).
struct Params {
    map: BTreeMap<String, String>,
    duplicated: BTreeSet<String>,
}

impl Params {
    fn parse(raw: &[u8]) -> Self {
        let mut map = BTreeMap::new();
        let mut duplicated = BTreeSet::new();
        for (key, value) in url::form_urlencoded::parse(raw) {
            if map.insert(key.to_string(), value.into_owned()).is_some() {
                duplicated.insert(key.into_owned());
            }
        }
        Self { map, duplicated }
    }

    /// RFC 6749 section 3.1: parameters without a value are treated as
    /// omitted.
    fn get(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {key}")))
    }

    /// RFC 6749 section 3.1: parameters must not be repeated.
    fn reject_duplicates(&self) -> Result<(), OAuthError> {
        match self.duplicated.first() {
            Some(key) => Err(OAuthError::invalid_request(format!(
                "parameter {key} is repeated"
            ))),
            None => Ok(()),
        }
    }
}

/// An RFC 6749 section 5.2 error.
#[derive(Debug)]
struct OAuthError {
    status: StatusCode,
    code: &'static str,
    description: String,
    /// A `DPoP-Nonce` to send with the error (RFC 9449 §8).
    nonce: Option<String>,
}

impl OAuthError {
    fn new(status: StatusCode, code: &'static str, description: impl Into<String>) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            nonce: None,
        }
    }

    fn with_nonce(mut self, nonce: &str) -> Self {
        self.nonce = Some(nonce.to_owned());
        self
    }

    fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }

    fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    fn client_metadata(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "error_description": self.description});
        let mut response = (self.status, no_store(), axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 section 5.2: a 401 must carry a challenge.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mcp-authd-test-as\""),
            );
        }
        if let Some(nonce) = self.nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
        response
    }
}

/// RFC 6749 section 5.1: token responses must not be cached.
fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(expected))
}

// ---------------------------------------------------------------------------
// Small pure helpers
// ---------------------------------------------------------------------------

/// 32 random bytes, base64url, behind a prefix that makes logs readable.
fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// RFC 7636 section 4.2 S256 transform.
fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 section 4.1: 43..=128 characters of `[A-Za-z0-9-._~]`.
fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An S256 challenge is exactly a base64url-nopad SHA-256 digest.
fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn split_scope(scope: Option<&str>) -> Vec<String> {
    scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// RFC 8707 section 2: an absolute URI without a fragment.
fn is_valid_resource(resource: &str) -> bool {
    Url::parse(resource).is_ok_and(|url| url.fragment().is_none() && url.has_host())
}

/// Decodes one `application/x-www-form-urlencoded` component, as used for
/// HTTP Basic client credentials (RFC 6749 section 2.3.1).
fn form_decode(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------
// HTTP handlers
// ---------------------------------------------------------------------------

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

/// RFC 8414 metadata.
async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    let issuer = &shared.issuer;
    let mut body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "grant_types_supported": GRANT_TYPES.iter().chain(&["client_credentials", JWT_BEARER]).collect::<Vec<_>>(),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AuthMethod::ALL.iter().chain(&["private_key_jwt"]).collect::<Vec<_>>(),
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
        "scopes_supported": shared.opts.scopes_supported,
        "authorization_response_iss_parameter_supported": true,
    });
    if shared.opts.idp.is_some() {
        body["grant_types_supported"]
            .as_array_mut()
            .expect("an array")
            .push(json!(TOKEN_EXCHANGE));
    }
    if shared.opts.registration_endpoint {
        body["registration_endpoint"] = json!(format!("{issuer}/register"));
    }
    if shared.opts.pkce_unadvertised {
        body.as_object_mut()
            .expect("metadata object")
            .remove("code_challenge_methods_supported");
    }
    if shared.opts.revocation_endpoint {
        body["revocation_endpoint"] = json!(format!("{issuer}/revoke"));
        body["revocation_endpoint_auth_methods_supported"] = json!(AuthMethod::ALL);
    }
    if shared.opts.strict_oidc {
        // What OpenID Connect Discovery 1.0 §3 requires beyond RFC 8414.
        body["id_token_signing_alg_values_supported"] = json!(["RS256"]);
        body["subject_types_supported"] = json!(["public"]);
        body["jwks_uri"] = json!(format!("{issuer}/jwks"));
    }
    if shared.opts.dpop {
        body["dpop_signing_alg_values_supported"] = json!(["ES256"]);
    }
    if shared.opts.device.is_some() {
        body["device_authorization_endpoint"] = json!(format!("{issuer}/device_authorization"));
        body["grant_types_supported"] = json!([GRANT_TYPES[0], GRANT_TYPES[1], DEVICE_GRANT]);
    }
    axum::Json(body).into_response()
}

/// OpenID Connect Discovery: the same document, only for a `strict_oidc` server.
async fn openid_configuration(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.opts.strict_oidc {
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(State(shared)).await
}

/// RFC 7591 dynamic client registration.
async fn register(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let mut inner = shared.lock();
    inner.registrations.push(match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    });
    let result = if !has_content_type(&headers, "application/json") {
        Err(OAuthError::client_metadata(
            "invalid_client_metadata",
            "Content-Type must be application/json",
        ))
    } else {
        match parsed {
            Ok(Value::Object(request)) => register_client(&shared.opts, &mut inner, &request),
            _ => Err(OAuthError::client_metadata(
                "invalid_client_metadata",
                "body must be a JSON object",
            )),
        }
    };
    match result {
        Ok(body) => (StatusCode::CREATED, no_store(), axum::Json(body)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Validates client metadata, stores the client and builds the RFC 7591
/// section 3.2.1 response.
fn register_client(
    opts: &AsOptions,
    inner: &mut Inner,
    request: &serde_json::Map<String, Value>,
) -> Result<Value, OAuthError> {
    let metadata_error = |d: &str| OAuthError::client_metadata("invalid_client_metadata", d);

    let redirect_uris = string_array(request, "redirect_uris")
        .ok_or_else(|| {
            OAuthError::client_metadata(
                "invalid_redirect_uri",
                "redirect_uris must be an array of strings",
            )
        })?
        .unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(OAuthError::client_metadata(
            "invalid_redirect_uri",
            "redirect_uris is required",
        ));
    }
    if let Some(bad) = redirect_uris.iter().find(|u| !is_registrable_redirect(u)) {
        return Err(OAuthError::client_metadata(
            "invalid_redirect_uri",
            format!("{bad} is neither https nor an http loopback URI with a port"),
        ));
    }

    match request.get("application_type") {
        None => {}
        Some(Value::String(t)) if t == "native" || t == "web" => {}
        Some(_) => {
            return Err(metadata_error(
                "application_type must be \"native\" or \"web\"",
            ));
        }
    }

    let requested_method = match request.get("token_endpoint_auth_method") {
        None => None,
        Some(Value::String(m)) => Some(
            AuthMethod::parse(m)
                .ok_or_else(|| metadata_error("unsupported token_endpoint_auth_method"))?,
        ),
        Some(_) => {
            return Err(metadata_error(
                "token_endpoint_auth_method must be a string",
            ));
        }
    };
    // RFC 7591 section 2: the default is client_secret_basic.
    let method = opts
        .dcr_auth_method
        .as_deref()
        .and_then(AuthMethod::parse)
        .or(requested_method)
        .unwrap_or(AuthMethod::ClientSecretBasic);

    let grant_types = string_array(request, "grant_types")
        .ok_or_else(|| metadata_error("grant_types must be an array of strings"))?
        // The server may substitute defaults; offering both lets clients
        // that omit grant_types still refresh.
        .unwrap_or_else(|| GRANT_TYPES.map(String::from).to_vec());
    let device = opts.device.is_some();
    if let Some(bad) = grant_types
        .iter()
        .find(|g| !(GRANT_TYPES.contains(&g.as_str()) || device && g.as_str() == DEVICE_GRANT))
    {
        return Err(metadata_error(&format!("unsupported grant type {bad}")));
    }
    let response_types = string_array(request, "response_types")
        .ok_or_else(|| metadata_error("response_types must be an array of strings"))?
        .unwrap_or_else(|| vec!["code".to_owned()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_error(
            "only the \"code\" response type is supported",
        ));
    }

    let client_id = format!("client_{}", random_token(""));
    let secret = (method != AuthMethod::None).then(|| inner.new_secret("cs_"));
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let mut response = json!({
        "client_id": client_id,
        "client_id_issued_at": issued_at,
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": method.as_str(),
    });
    if let Some(secret) = &secret {
        response["client_secret"] = json!(secret);
        // Required whenever a secret is issued; 0 means "never expires".
        response["client_secret_expires_at"] = json!(0);
    }
    for echoed in [
        "client_name",
        "application_type",
        "scope",
        "client_uri",
        "software_id",
        "software_version",
    ] {
        if let Some(value) = request.get(echoed) {
            response[echoed] = value.clone();
        }
    }

    inner.clients.insert(
        client_id,
        Client {
            secret,
            method,
            redirect_uris,
            jwt_key: None,
        },
    );
    inner.counts.registrations += 1;
    Ok(response)
}

/// `Some(None)` if absent, `Some(Some(v))` if an array of strings, `None` if
/// malformed.
fn string_array(object: &serde_json::Map<String, Value>, key: &str) -> Option<Option<Vec<String>>> {
    match object.get(key) {
        None => Some(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Some),
        Some(_) => None,
    }
}

/// What DCR accepts as a redirect URI: https, or http on a loopback host
/// with an explicit port (RFC 8252 section 7.3), never with a fragment.
fn is_registrable_redirect(uri: &str) -> bool {
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    if url.fragment().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.has_host(),
        "http" => is_loopback(&url) && url.port().is_some(),
        _ => false,
    }
}

/// Authorization endpoint with automatic consent.
async fn authorize(State(shared): State<Arc<Shared>>, RawQuery(query): RawQuery) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let mut inner = shared.lock();
    inner.last_authorize = Some(params.map.clone());

    // Until client and redirect URI are trusted, errors must not redirect
    // (RFC 6749 section 4.1.2.1): that would be an open redirector.
    let client_id = match params.get("client_id") {
        Some(id) if !params.duplicated.contains("client_id") => id,
        _ => return plain_error("missing or repeated client_id"),
    };
    let Some(client) = inner.clients.get(client_id) else {
        return plain_error("unknown client_id");
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if !params.duplicated.contains("redirect_uri") => uri,
        _ => return plain_error("missing or repeated redirect_uri"),
    };
    if !client.accepts_redirect(redirect_uri) {
        return plain_error("redirect_uri is not registered for this client");
    }
    // Parsing cannot fail for an accepted URI, but never trust that blindly.
    let Ok(mut location) = Url::parse(redirect_uri) else {
        return plain_error("redirect_uri is not an absolute URI");
    };

    match validate_authorization_request(&shared.opts, &params) {
        Ok(request) => {
            let code = inner.new_secret("ac_");
            inner.codes.insert(
                code.clone(),
                PendingCode {
                    client_id: client_id.to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    code_challenge: request.code_challenge,
                    scope: request.scope,
                    resource: request.resource,
                    offline: request.offline,
                    issued_at: Instant::now(),
                    state: CodeState::Fresh,
                    login_hint: params.get("login_hint").map(str::to_string),
                },
            );
            inner.counts.authorizations += 1;
            location.query_pairs_mut().append_pair("code", &code);
        }
        Err(err) => {
            location
                .query_pairs_mut()
                .append_pair("error", err.code)
                .append_pair("error_description", &err.description);
        }
    }
    let mut pairs = location.query_pairs_mut();
    if let Some(state) = params.get("state") {
        pairs.append_pair("state", state);
    }
    // RFC 9207 mix-up defence, on success and error alike.
    pairs.append_pair("iss", &shared.issuer);
    drop(pairs);
    redirect(&location)
}

/// The validated parts of an authorization request that the code remembers.
struct AuthorizationRequest {
    code_challenge: String,
    scope: Option<String>,
    resource: String,
    /// Refresh tokens may be issued: always, except at a `strict_oidc` server, which
    /// needs `offline_access` and `prompt=consent`.
    offline: bool,
}

fn validate_authorization_request(
    opts: &AsOptions,
    params: &Params,
) -> Result<AuthorizationRequest, OAuthError> {
    params.reject_duplicates()?;
    match params.require("response_type")? {
        "code" => {}
        _ => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    // OAuth 2.1: PKCE is mandatory and a missing method means "plain",
    // which this server refuses.
    if params.get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256",
        ));
    }
    let code_challenge = params.require("code_challenge")?;
    if !is_valid_s256_challenge(code_challenge) {
        return Err(OAuthError::invalid_request(
            "code_challenge is not a base64url SHA-256 digest",
        ));
    }
    let resource = requested_resource(opts, params)?;
    let resource = resource.as_str();
    if !is_valid_resource(resource) {
        return Err(OAuthError::invalid_target(
            "resource must be an absolute URI without a fragment",
        ));
    }
    let scope = params.get("scope");
    if let Some(unknown) = split_scope(scope)
        .into_iter()
        .find(|s| !opts.scopes_supported.contains(s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "unknown scope {unknown}"
        )));
    }
    let offline = !opts.strict_oidc
        || (split_scope(scope).iter().any(|s| s == "offline_access")
            && params
                .get("prompt")
                .is_some_and(|p| p.split(' ').any(|v| v == "consent")));
    Ok(AuthorizationRequest {
        code_challenge: code_challenge.to_owned(),
        scope: scope.map(String::from),
        resource: resource.to_owned(),
        offline,
    })
}

/// The `resource` a request is for, as this AS reads it (see `rejects_resource`).
fn requested_resource(opts: &AsOptions, params: &Params) -> Result<String, OAuthError> {
    match (params.get("resource"), opts.rejects_resource) {
        (Some(_), true) => Err(OAuthError::invalid_target(
            "the resource parameter is not supported; scopes name the resource",
        )),
        (None, true) => Ok(IMPLIED_RESOURCE.to_string()),
        (Some(r), false) => Ok(r.to_string()),
        (None, false) => Err(OAuthError::invalid_target(
            "resource (RFC 8707) is required",
        )),
    }
}

fn plain_error(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

fn redirect(location: &Url) -> Response {
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        // A serialized Url is always ASCII, so this is unreachable in practice.
        Err(_) => plain_error("cannot build the redirect"),
    }
}

/// Token endpoint.
async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let delay = shared
        .token_delay_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let params = Params::parse(&body);
    let is_refresh = params.get("grant_type") == Some("refresh_token");
    let response = {
        let mut inner = shared.lock();
        inner.last_token = Some(params.map.clone());
        if let Some(verifier) = params.get("code_verifier") {
            inner.remember_secret(verifier);
        }
        let result = dpop_proof(&shared, &mut inner, &headers)
            .and_then(|jkt| token_grant(&shared, &mut inner, &headers, &params, jkt));
        match result {
            Ok(body) => {
                if let Some(rt) = body.get("refresh_token").and_then(Value::as_str) {
                    inner.newest_refresh_token = Some(rt.to_string());
                }
                (StatusCode::OK, no_store(), axum::Json(body)).into_response()
            }
            Err(err) => {
                if is_refresh {
                    inner.counts.refresh_failures += 1;
                }
                err.into_response()
            }
        }
    };
    let reply_delay = shared
        .token_reply_delay_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    if reply_delay > 0 && is_refresh {
        tokio::time::sleep(Duration::from_millis(reply_delay)).await;
    }
    response
}

/// The token request's DPoP proof (RFC 9449 §5), when the server does DPoP: the
/// thumbprint of its key, or `None` without a proof.
fn dpop_proof(
    shared: &Shared,
    inner: &mut Inner,
    headers: &HeaderMap,
) -> Result<Option<String>, OAuthError> {
    if !shared.opts.dpop {
        return Ok(None);
    }
    let invalid = |why: String| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why);
    let Some(proof) = crate::dpop::header(headers).map_err(invalid)? else {
        return Ok(None);
    };
    let htu = format!("{}/token", shared.issuer);
    let proof = crate::dpop::verify(proof, "POST", &htu, None).map_err(invalid)?;
    if !inner.dpop_jtis.insert(proof.jti.clone()) {
        return Err(invalid("the proof's jti was used before".into()));
    }
    if shared.opts.dpop_nonce && proof.nonce.as_deref() != Some(shared.dpop_nonce.as_str()) {
        inner.counts.dpop_nonce_challenges += 1;
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            "the authorization server requires a DPoP nonce",
        )
        .with_nonce(&shared.dpop_nonce));
    }
    inner.counts.dpop_proofs += 1;
    Ok(Some(proof.jkt))
}

fn token_grant(
    shared: &Shared,
    inner: &mut Inner,
    headers: &HeaderMap,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    check_form_request(headers, params)?;
    let client_id = authenticate_client(&shared.issuer, inner, headers, params)?;
    let mut body = match params.require("grant_type")? {
        "authorization_code" => exchange_code(&shared.opts, inner, &client_id, params, jkt)?,
        "refresh_token" => refresh(&shared.opts, inner, &client_id, params, jkt)?,
        // Grants without a browser issue bearer tokens here.
        "client_credentials" => client_credentials(shared, inner, &client_id, params)?,
        JWT_BEARER => jwt_bearer(shared, inner, &client_id, params)?,
        TOKEN_EXCHANGE if shared.opts.idp.is_some() => {
            token_exchange(shared, inner, &client_id, params)?
        }
        DEVICE_GRANT if shared.opts.device.is_some() => {
            device_grant(&shared.opts, inner, &client_id, params, jkt)?
        }
        other => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other} is not supported"),
            ));
        }
    };
    let openid = body["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == "openid"));
    if openid {
        let user = body["access_token"]
            .as_str()
            .and_then(|at| inner.user_of(at))
            .flatten();
        let email = shared.opts.account_email.clone();
        let (sub, email) = match user {
            Some(hint) => (subject_of_hint(&hint), email.unwrap_or(hint)),
            None => (
                TEST_ACCOUNT_SUBJECT.to_string(),
                email.unwrap_or_else(|| TEST_ACCOUNT_EMAIL.to_string()),
            ),
        };
        let id_token = id_token(
            &shared.issuer,
            &client_id,
            &sub,
            &email,
            shared
                .opts
                .idp
                .as_ref()
                .map(|idp| (&*idp.key, idp.id_token_ttl_secs)),
        );
        inner.remember_secret(&id_token);
        body["id_token"] = json!(id_token);
    }
    Ok(body)
}

/// An OpenID Connect id_token for [`TEST_ACCOUNT_EMAIL`] (OIDC Core §2), issued whenever the
/// granted scope includes `openid`. Its signature is a random value — clients here only
/// read the claims for display, and a test that starts verifying must fail loudly —
/// except at an enterprise IdP, whose token exchange verifies its own ID tokens.
fn id_token(
    issuer: &str,
    client_id: &str,
    sub: &str,
    email: &str,
    idp_key: Option<(&TestKey, u64)>,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "iss": issuer,
        "sub": sub,
        "aud": client_id,
        "iat": now,
        "exp": now + idp_key.map_or(3600, |(_, ttl)| ttl),
        "email": email,
        "preferred_username": "tester",
    });
    if let Some((key, _)) = idp_key {
        return key.sign("JWT", &claims);
    }
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(json!({"alg": "RS256", "typ": "JWT"})),
        part(claims),
        random_token("")
    )
}

fn check_form_request(headers: &HeaderMap, params: &Params) -> Result<(), OAuthError> {
    if !has_content_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    params.reject_duplicates()
}

/// Authenticates the client with exactly the method it registered
/// (RFC 6749 section 2.3) and returns its client_id.
fn authenticate_client(
    issuer: &str,
    inner: &mut Inner,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, OAuthError> {
    if params.get("client_assertion").is_some() || params.get("client_assertion_type").is_some() {
        return authenticate_jwt_client(issuer, inner, headers, params);
    }
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let (id, secret) = parse_basic(authorization)?;
        if params.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request(
                "use only one client authentication method",
            ));
        }
        if params.get("client_id").is_some_and(|form_id| form_id != id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the HTTP Basic user",
            ));
        }
        let client = inner
            .clients
            .get(&id)
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        if client.method != AuthMethod::ClientSecretBasic {
            return Err(OAuthError::invalid_client(format!(
                "client is registered for {}, not client_secret_basic",
                client.method.as_str()
            )));
        }
        if client.secret.as_deref() != Some(secret.as_str()) {
            return Err(OAuthError::invalid_client("wrong client secret"));
        }
        return Ok(id);
    }

    let id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_client("no client authentication"))?;
    let client = inner
        .clients
        .get(id)
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let form_secret = params.get("client_secret");
    match client.method {
        AuthMethod::None if form_secret.is_some() => Err(OAuthError::invalid_client(
            "public client must not send a client_secret",
        )),
        AuthMethod::None => Ok(id.to_owned()),
        AuthMethod::ClientSecretPost
            if form_secret.is_some() && form_secret == client.secret.as_deref() =>
        {
            Ok(id.to_owned())
        }
        AuthMethod::ClientSecretPost => {
            Err(OAuthError::invalid_client("missing or wrong client_secret"))
        }
        AuthMethod::ClientSecretBasic => Err(OAuthError::invalid_client(
            "client is registered for client_secret_basic: use HTTP Basic",
        )),
        AuthMethod::PrivateKeyJwt => Err(OAuthError::invalid_client(
            "client is registered for private_key_jwt: send a client_assertion",
        )),
    }
}

/// RFC 7523 §2.2 / §3: a client assertion signed with the client's registered key, with
/// `iss` = `sub` = the client, `aud` this issuer, a live `exp` and an unused `jti`.
fn authenticate_jwt_client(
    issuer: &str,
    inner: &mut Inner,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) || params.get("client_secret").is_some() {
        return Err(OAuthError::invalid_request(
            "use only one client authentication method",
        ));
    }
    if params.get("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err(OAuthError::invalid_client("wrong client_assertion_type"));
    }
    let assertion = params.require("client_assertion")?;
    inner.remember_secret(assertion);
    let (_, unverified) = crate::jwt::peek(assertion)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    let id = unverified["sub"].as_str().unwrap_or_default().to_string();
    let key = inner
        .clients
        .get(&id)
        .filter(|c| c.method == AuthMethod::PrivateKeyJwt)
        .and_then(|c| c.jwt_key.clone())
        .ok_or_else(|| OAuthError::invalid_client("unknown private_key_jwt client"))?;
    let (_, claims) = key
        .verify(assertion)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    if claims["iss"] != id.as_str() {
        return Err(OAuthError::invalid_client(
            "client_assertion iss is not the client",
        ));
    }
    if params.get("client_id").is_some_and(|form_id| form_id != id) {
        return Err(OAuthError::invalid_request(
            "client_id differs from the assertion",
        ));
    }
    crate::jwt::check_assertion_claims(&claims, issuer)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    let jti = claims["jti"]
        .as_str()
        .ok_or_else(|| OAuthError::invalid_client("client_assertion has no jti"))?;
    if !inner.used_jtis.insert(jti.to_string()) {
        return Err(OAuthError::invalid_client(
            "client_assertion replayed (jti seen before)",
        ));
    }
    Ok(id)
}

/// `grant_type=client_credentials` (OAuth 2.1 section 4.2): confidential clients only;
/// no refresh token (RFC 6749 §4.4.3).
fn client_credentials(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
) -> Result<Value, OAuthError> {
    if inner.clients.get(client_id).map(|c| c.method) == Some(AuthMethod::None) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "public clients may not use client_credentials",
        ));
    }
    let resource = requested_resource(&shared.opts, params)?;
    let scope = supported_scope(&shared.opts, params)?;
    let family = inner.new_family(client_id, scope.clone(), resource, None, None);
    let body = inner.issue(family, scope, false);
    inner.counts.client_credentials += 1;
    Ok(body)
}

/// The requested `scope`, refused when it names a scope this server does not offer.
fn supported_scope(opts: &AsOptions, params: &Params) -> Result<Option<String>, OAuthError> {
    let scope = params.get("scope").map(str::to_owned);
    if let Some(bad) = split_scope(scope.as_deref())
        .into_iter()
        .find(|s| !opts.scopes_supported.contains(s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "scope {bad} is not offered"
        )));
    }
    Ok(scope)
}

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): an assertion
/// signed by a trusted issuer, for this server (`aud`), live. An ID-JAG
/// (SEP-990, `typ` `oauth-id-jag+jwt`) must also name the authenticated client and the
/// requested resource.
fn jwt_bearer(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
) -> Result<Value, OAuthError> {
    inner.counts.jwt_bearer_requests += 1;
    let assertion = params.require("assertion")?.to_string();
    inner.remember_secret(&assertion);
    inner.assertions_seen.push(assertion.clone());
    if inner.reject_assertions {
        return Err(OAuthError::invalid_grant(
            "the assertion's subject is no longer authorized",
        ));
    }
    let (_, unverified) = crate::jwt::peek(&assertion).map_err(OAuthError::invalid_grant)?;
    let iss = unverified["iss"].as_str().unwrap_or_default();
    let key = shared
        .opts
        .trusted_assertion_issuers
        .iter()
        .find(|(trusted, _)| trusted == iss)
        .map(|(_, key)| key)
        .ok_or_else(|| {
            OAuthError::invalid_grant(format!("assertion issuer {iss} is not trusted"))
        })?;
    let (header, claims) = key.verify(&assertion).map_err(OAuthError::invalid_grant)?;
    // No replay check: like the workload identity federation of real clouds, a projected
    // token is accepted again until it expires (RFC 7523 §3 leaves it to the server).
    crate::jwt::check_assertion_claims(&claims, &shared.issuer)
        .map_err(OAuthError::invalid_grant)?;
    let resource = requested_resource(&shared.opts, params)?;
    if header["typ"] == "oauth-id-jag+jwt" {
        if claims["client_id"] != client_id {
            return Err(OAuthError::invalid_grant(
                "the ID-JAG is for another client",
            ));
        }
        if claims["resource"] != resource.as_str() {
            return Err(OAuthError::invalid_target(
                "the ID-JAG is for another resource",
            ));
        }
    }
    let scope = supported_scope(&shared.opts, params)?;
    let family = inner.new_family(client_id, scope.clone(), resource, None, None);
    let body = inner.issue(family, scope, false);
    inner.counts.jwt_bearer_grants += 1;
    Ok(body)
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693) at an
/// enterprise IdP: an ID token it issued, exchanged for an ID-JAG addressed to
/// `audience` for `resource` (SEP-990).
fn token_exchange(
    shared: &Shared,
    inner: &mut Inner,
    _client_id: &str,
    params: &Params,
) -> Result<Value, OAuthError> {
    let idp = shared.opts.idp.as_ref().expect("checked by the caller");
    if params.require("requested_token_type")? != TOKEN_TYPE_ID_JAG {
        return Err(OAuthError::invalid_request(
            "requested_token_type must be the ID-JAG type",
        ));
    }
    if params.require("subject_token_type")? != TOKEN_TYPE_ID_TOKEN {
        return Err(OAuthError::invalid_request(
            "subject_token_type must be id_token",
        ));
    }
    let audience = params.require("audience")?.to_string();
    let resource = params.require("resource")?.to_string();
    let subject_token = params.require("subject_token")?;
    let (_, id_token) = idp
        .key
        .verifying_key()
        .verify(subject_token)
        .map_err(|e| OAuthError::invalid_grant(format!("subject_token: {e}")))?;
    if id_token["iss"] != shared.issuer.as_str()
        || id_token["exp"]
            .as_i64()
            .is_none_or(|exp| exp <= crate::jwt::unix_now())
    {
        return Err(OAuthError::invalid_grant(
            "subject_token is not a live ID token of this IdP",
        ));
    }
    let now = crate::jwt::unix_now();
    let jag = idp.key.sign(
        "oauth-id-jag+jwt",
        &json!({
            "iss": shared.issuer,
            "sub": id_token["sub"],
            "aud": audience,
            "resource": resource,
            "client_id": idp.jag_client_id,
            "iat": now,
            "exp": now + 300,
            "jti": random_token("jti_"),
        }),
    );
    inner.remember_secret(&jag);
    inner.counts.token_exchanges += 1;
    Ok(json!({
        "access_token": jag,
        "issued_token_type": TOKEN_TYPE_ID_JAG,
        "token_type": "N_A",
        "expires_in": 300,
    }))
}

/// Parses `Authorization: Basic base64(urlencode(id):urlencode(secret))`.
fn parse_basic(value: &HeaderValue) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed HTTP Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "only HTTP Basic client authentication is accepted in Authorization",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok((
        form_decode(id).ok_or_else(malformed)?,
        form_decode(secret).ok_or_else(malformed)?,
    ))
}

/// `grant_type=authorization_code` (OAuth 2.1 section 4.1.3).
fn exchange_code(
    opts: &AsOptions,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.require("code_verifier")?;
    let resource = requested_resource(opts, params)?;
    let resource = resource.as_str();

    let pending = inner
        .codes
        .get_mut(code)
        .ok_or_else(|| OAuthError::invalid_grant("unknown authorization code"))?;
    // Any redemption attempt consumes the code, so a wrong verifier cannot be
    // retried and a replay can be detected.
    let previous = std::mem::replace(&mut pending.state, CodeState::Consumed { family: None });
    if let CodeState::Consumed { family } = previous {
        if let Some(family) = family {
            inner.revoke_family(family);
        }
        return Err(OAuthError::invalid_grant(
            "authorization code was already used; tokens issued from it are revoked",
        ));
    }
    let pending = pending.clone();

    if pending.issued_at.elapsed() > CODE_LIFETIME {
        return Err(OAuthError::invalid_grant("authorization code expired"));
    }
    if pending.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "authorization code was issued to another client",
        ));
    }
    if pending.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    if !is_valid_verifier(verifier) || s256(verifier) != pending.code_challenge {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match code_challenge",
        ));
    }
    if pending.resource != resource {
        return Err(OAuthError::invalid_target(
            "resource differs from the authorization request",
        ));
    }

    let family = inner.new_family(
        client_id,
        pending.scope.clone(),
        pending.resource,
        pending.login_hint,
        jkt,
    );
    if let Some(stored) = inner.codes.get_mut(code) {
        stored.state = CodeState::Consumed {
            family: Some(family),
        };
    }
    let body = inner.issue(
        family,
        pending.scope,
        opts.issue_refresh_tokens && pending.offline,
    );
    inner.counts.code_exchanges += 1;
    Ok(body)
}

/// `grant_type=refresh_token` (OAuth 2.1 section 4.3) with rotation and
/// replay detection (section 4.3.1).
fn refresh(
    opts: &AsOptions,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let presented = params.require("refresh_token")?;
    let record = inner
        .refresh_tokens
        .get(presented)
        .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
    let (family_id, rotated) = (record.family, record.rotated);
    let family = &inner.families[family_id];
    let (granted_scope, granted_resource) = (family.scope.clone(), family.resource.clone());
    if family.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "refresh token was issued to another client",
        ));
    }
    if family.revoked {
        return Err(OAuthError::invalid_grant("refresh token was revoked"));
    }
    // RFC 9449 §5: a public client's refresh token is bound to its DPoP key.
    if family.jkt.is_some() && family.jkt != jkt {
        return Err(OAuthError::invalid_grant(
            "refresh token is bound to a DPoP key the request did not prove",
        ));
    }
    if rotated {
        inner.revoke_family(family_id);
        return Err(OAuthError::invalid_grant(
            "refresh token was already used; the whole grant is revoked",
        ));
    }

    let resource = requested_resource(opts, params)?;
    let resource = resource.as_str();
    if resource != granted_resource {
        return Err(OAuthError::invalid_target(
            "resource differs from the original grant",
        ));
    }
    let scope = match params.get("scope") {
        None => granted_scope,
        Some(requested) => {
            let granted = split_scope(granted_scope.as_deref());
            if let Some(extra) = split_scope(Some(requested))
                .into_iter()
                .find(|s| !granted.contains(s))
            {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {extra} exceeds the original grant"
                )));
            }
            Some(requested.to_owned())
        }
    };

    if opts.rotate_refresh_tokens
        && let Some(old) = inner.refresh_tokens.get_mut(presented)
    {
        old.rotated = true;
    }
    let body = inner.issue(family_id, scope, opts.rotate_refresh_tokens);
    inner.counts.refreshes += 1;
    inner.refresh_times.push(Instant::now());
    Ok(body)
}

/// RFC 8628 §3.1: a device code for an authenticated client, for a scope and (RFC 8707)
/// a resource checked as `/authorize` checks them.
async fn device_authorization(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let mut inner = shared.lock();
    inner.last_device = Some(params.map.clone());
    let device = shared.opts.device.clone().unwrap_or_default();
    let result = check_form_request(&headers, &params)
        .and_then(|()| authenticate_client(&shared.issuer, &mut inner, &headers, &params))
        .and_then(|client_id| {
            let resource = requested_resource(&shared.opts, &params)?;
            if !is_valid_resource(&resource) {
                return Err(OAuthError::invalid_target(
                    "resource must be an absolute URI without a fragment",
                ));
            }
            let scope = params.get("scope");
            if let Some(unknown) = split_scope(scope)
                .into_iter()
                .find(|s| !shared.opts.scopes_supported.contains(s))
            {
                return Err(OAuthError::invalid_scope(format!(
                    "unknown scope {unknown}"
                )));
            }
            Ok((client_id, resource, scope.map(String::from)))
        });
    let (client_id, resource, scope) = match result {
        Ok(ok) => ok,
        Err(err) => return err.into_response(),
    };
    let device_code = inner.new_secret("dc_");
    // RFC 8628 §6.1: short, unambiguous, typed by a human.
    let letters: String = rand::random::<[u8; 8]>()
        .iter()
        .map(|b| b"BCDFGHJKLMNPQRSTVWXZ"[usize::from(*b) % 20] as char)
        .collect();
    let user_code = format!("{}-{}", &letters[..4], &letters[4..]);
    let interval = Duration::from_secs(device.interval_secs.unwrap_or(5));
    inner.device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            client_id,
            user_code: user_code.clone(),
            scope,
            resource,
            expires_at: Instant::now() + Duration::from_secs(device.code_ttl_secs),
            interval,
            last_poll: None,
            decision: DeviceDecision::Pending,
        },
    );
    let issuer = &shared.issuer;
    let mut body = json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": format!("{issuer}/device"),
        "verification_uri_complete": format!("{issuer}/device?user_code={user_code}"),
        "expires_in": device.code_ttl_secs,
    });
    if let Some(interval) = device.interval_secs {
        body["interval"] = json!(interval);
    }
    (StatusCode::OK, no_store(), axum::Json(body)).into_response()
}

/// The verification page: a GET with the user code plays the user who approves it
/// (`decision=deny` denies).
async fn device_verification(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let Some(user_code) = params.get("user_code") else {
        return (StatusCode::OK, "Enter the code shown on your device.").into_response();
    };
    let deny = params.get("decision") == Some("deny");
    let mut inner = shared.lock();
    let Some(grant) = inner
        .device_codes
        .values_mut()
        .find(|g| g.user_code == user_code && g.decision == DeviceDecision::Pending)
    else {
        return plain_error("unknown or used user code");
    };
    if Instant::now() >= grant.expires_at {
        return plain_error("this code has expired");
    }
    grant.decision = if deny {
        DeviceDecision::Denied
    } else {
        DeviceDecision::Approved
    };
    (
        StatusCode::OK,
        if deny {
            "Denied."
        } else {
            "Approved: you can return to your device."
        },
    )
        .into_response()
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4–3.5): every
/// poll recorded, a client that polls faster than the interval slowed down.
fn device_grant(
    opts: &AsOptions,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let code = params.require("device_code")?.to_string();
    let resource = requested_resource(opts, params)?;
    let scripted_slow_downs = opts.device.as_ref().map_or(0, |d| d.slow_down_polls);
    let polls_so_far = inner.device_polls.len();
    let now = Instant::now();
    let answer = poll_device_code(
        inner.device_codes.get_mut(&code),
        client_id,
        &resource,
        polls_so_far < scripted_slow_downs as usize,
        now,
    )
    .map(|(scope, resource)| {
        let family = inner.new_family(client_id, scope.clone(), resource, None, jkt);
        (family, scope)
    });
    inner.device_polls.push(DevicePoll {
        at: now,
        answer: match &answer {
            Ok(_) => "granted".into(),
            Err(e) => e.code.to_string(),
        },
    });
    let (family, scope) = answer?;
    inner.counts.code_exchanges += 1;
    Ok(inner.issue(family, scope, opts.issue_refresh_tokens))
}

/// What one poll with a device code gets: the approved grant's (scope, resource), the code
/// then spent, or the RFC 8628 §3.5 error.
fn poll_device_code(
    grant: Option<&mut DeviceGrant>,
    client_id: &str,
    resource: &str,
    scripted_slow_down: bool,
    now: Instant,
) -> Result<(Option<String>, String), OAuthError> {
    let grant = grant.ok_or_else(|| OAuthError::invalid_grant("unknown device code"))?;
    if grant.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "device code was issued to another client",
        ));
    }
    if grant.resource != resource {
        return Err(OAuthError::invalid_target(
            "resource differs from the device authorization request",
        ));
    }
    let error = |code: &'static str| OAuthError::new(StatusCode::BAD_REQUEST, code, code);
    let too_soon = grant
        .last_poll
        .is_some_and(|last| now.duration_since(last) < grant.interval);
    grant.last_poll = Some(now);
    if now >= grant.expires_at {
        return Err(error("expired_token"));
    }
    if scripted_slow_down || too_soon {
        grant.interval += Duration::from_secs(5);
        return Err(error("slow_down"));
    }
    match grant.decision {
        DeviceDecision::Pending => Err(error("authorization_pending")),
        DeviceDecision::Denied => Err(error("access_denied")),
        DeviceDecision::Redeemed => Err(OAuthError::invalid_grant("device code already used")),
        DeviceDecision::Approved => {
            grant.decision = DeviceDecision::Redeemed;
            Ok((grant.scope.clone(), grant.resource.clone()))
        }
    }
}

/// RFC 7009 revocation.
async fn revoke(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let params = Params::parse(&body);
    let mut inner = shared.lock();
    let result = check_form_request(&headers, &params)
        .and_then(|()| authenticate_client(&shared.issuer, &mut inner, &headers, &params))
        .and_then(|client_id| {
            let token = params.require("token")?;
            Ok((client_id, token))
        });
    let (client_id, token) = match result {
        Ok(ok) => ok,
        Err(err) => return err.into_response(),
    };

    let inner = &mut *inner;
    inner.revoked.push(token.to_string());
    let owned = |family: FamilyId| inner.families[family].client_id == client_id;
    // The hint is only an optimisation (RFC 7009 section 2.1): look the token
    // up in both tables regardless. Revoking a refresh token ends its whole
    // grant, including access tokens issued from it.
    let kind = if inner.refresh_tokens.contains_key(token) {
        "refresh_token"
    } else if inner.access_tokens.contains_key(token) {
        "access_token"
    } else {
        "unknown"
    };
    inner.revoked_kinds.push(kind);
    if let Some(family) = inner.refresh_tokens.get(token).map(|r| r.family) {
        if owned(family) {
            inner.revoke_family(family);
        }
    } else if let Some(access) = inner.access_tokens.get_mut(token)
        && inner.families[access.family].client_id == client_id
    {
        if shared.opts.access_token_revocation_unsupported {
            inner.counts.revocations += 1;
            return OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_token_type",
                "access tokens are self-contained and cannot be revoked",
            )
            .into_response();
        }
        access.revoked = true;
    }
    // Tokens of other clients are silently left alone: a 200 for
    // everything avoids revealing which tokens exist.
    inner.counts.revocations += 1;
    StatusCode::OK.into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::test_support::{
        REDIRECT_URI, authorize, http, obtain_tokens, pkce, register_public_client, token_request,
    };

    const RESOURCE: &str = "http://127.0.0.1:1/mcp";

    #[tokio::test(flavor = "multi_thread")]
    async fn serves_metadata_under_the_issuer_path() {
        let auth = AuthServer::start(AsOptions {
            path: "/tenant1".into(),
            ..AsOptions::default()
        })
        .await;
        assert!(auth.issuer().ends_with("/tenant1"));
        let origin = auth.issuer().trim_end_matches("/tenant1");
        let metadata: Value = http()
            .get(format!(
                "{origin}/.well-known/oauth-authorization-server/tenant1"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata["issuer"], auth.issuer());
        assert_eq!(
            metadata["token_endpoint"],
            format!("{}/token", auth.issuer())
        );
        assert_eq!(
            metadata["registration_endpoint"],
            format!("{}/register", auth.issuer())
        );
        assert_eq!(
            metadata["code_challenge_methods_supported"],
            json!(["S256"])
        );
        assert_eq!(
            metadata["scopes_supported"],
            json!(["mcp:read", "mcp:write", "offline_access"])
        );

        // Path-less discovery must not find a path-ful issuer.
        let root = http()
            .get(format!("{origin}/.well-known/oauth-authorization-server"))
            .send()
            .await
            .unwrap();
        assert_eq!(root.status(), 404);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn dynamic_registration_accepts_loopback_and_rejects_bad_redirects() {
        let auth = AuthServer::start(AsOptions {
            dcr_auth_method: Some("client_secret_basic".into()),
            ..AsOptions::default()
        })
        .await;
        let register = |body: Value| {
            http()
                .post(format!("{}/register", auth.issuer()))
                .json(&body)
                .send()
        };

        let ok = register(json!({
            "redirect_uris": ["http://localhost:4711/cb"],
            "token_endpoint_auth_method": "none",
            "application_type": "native",
        }))
        .await
        .unwrap();
        assert_eq!(ok.status(), 201);
        let ok: Value = ok.json().await.unwrap();
        assert_eq!(ok["token_endpoint_auth_method"], "client_secret_basic");
        let secret = ok["client_secret"].as_str().unwrap();
        assert!(auth.issued_secrets().iter().any(|s| s == secret));

        for bad in [
            json!({"redirect_uris": ["http://example.com:80/cb"]}),
            json!({"redirect_uris": ["http://127.0.0.1/cb"]}),
            json!({"redirect_uris": []}),
            json!({}),
        ] {
            let response = register(bad.clone()).await.unwrap();
            assert_eq!(response.status(), 400, "{bad}");
            let error: Value = response.json().await.unwrap();
            assert_eq!(error["error"], "invalid_redirect_uri", "{bad}");
        }
        let bad_type = register(json!({
            "redirect_uris": ["http://127.0.0.1:1/cb"],
            "application_type": "desktop",
        }))
        .await
        .unwrap();
        let error: Value = bad_type.json().await.unwrap();
        assert_eq!(error["error"], "invalid_client_metadata");

        assert_eq!(auth.counts().registrations, 1);
        assert_eq!(auth.registrations().len(), 6);
        assert_eq!(auth.registrations()[0]["application_type"], "native");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn code_flow_then_rotation_and_replay_revokes_the_family() {
        let auth = AuthServer::start(AsOptions::default()).await;
        let (client_id, tokens) = obtain_tokens(&auth, RESOURCE, "mcp:read offline_access").await;
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["expires_in"], 3600);
        assert_eq!(tokens["scope"], "mcp:read offline_access");
        let access = tokens["access_token"].as_str().unwrap();
        let old_refresh = tokens["refresh_token"].as_str().unwrap();
        assert!(access.starts_with("at_") && old_refresh.starts_with("rt_"));
        assert_eq!(
            auth.validate_access_token(access, RESOURCE),
            Ok(vec!["mcp:read".into(), "offline_access".into()])
        );
        assert_eq!(
            auth.validate_access_token(access, "http://127.0.0.1:2/mcp"),
            Err(TokenProblem::WrongResource)
        );

        let refresh = |token: String| {
            let client_id = client_id.clone();
            let auth = &auth;
            async move {
                token_request(
                    auth,
                    &[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", &token),
                        ("client_id", &client_id),
                        ("resource", RESOURCE),
                    ],
                )
                .await
            }
        };
        let (status, rotated) = refresh(old_refresh.to_owned()).await;
        assert_eq!(status, 200, "{rotated}");
        let new_refresh = rotated["refresh_token"].as_str().unwrap().to_owned();
        assert_ne!(new_refresh, old_refresh);
        assert_eq!(auth.current_refresh_tokens(), vec![new_refresh.clone()]);

        // Replaying the rotated-away token is treated as theft.
        let (status, error) = refresh(old_refresh.to_owned()).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let (status, error) = refresh(new_refresh).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert!(auth.current_refresh_tokens().is_empty());
        assert_eq!(
            auth.validate_access_token(access, RESOURCE),
            Err(TokenProblem::Revoked)
        );

        let counts = auth.counts();
        assert_eq!(
            (
                counts.code_exchanges,
                counts.refreshes,
                counts.refresh_failures
            ),
            (1, 1, 2)
        );
        let last = auth.last_token_params().unwrap();
        assert_eq!(last["grant_type"], "refresh_token");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn wrong_code_verifier_is_rejected_and_consumes_the_code() {
        let auth = AuthServer::start(AsOptions::default()).await;
        let client_id = register_public_client(&auth).await;
        let (verifier, challenge) = pkce();
        let code = authorize(&auth, &client_id, &challenge, RESOURCE, "mcp:read").await;
        let (wrong_verifier, _) = pkce();
        let exchange = |verifier: String| {
            let (code, client_id, auth) = (code.clone(), client_id.clone(), &auth);
            async move {
                token_request(
                    auth,
                    &[
                        ("grant_type", "authorization_code"),
                        ("code", &code),
                        ("redirect_uri", REDIRECT_URI),
                        ("code_verifier", &verifier),
                        ("client_id", &client_id),
                        ("resource", RESOURCE),
                    ],
                )
                .await
            }
        };
        let (status, error) = exchange(wrong_verifier).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        let (status, error) = exchange(verifier.clone()).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (400, Some("invalid_grant"))
        );
        assert_eq!(auth.counts().code_exchanges, 0);
        assert!(auth.issued_secrets().contains(&verifier));
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn confidential_clients_must_use_their_registered_method() {
        let auth = AuthServer::start(AsOptions::default()).await;
        auth.register_client(PreRegisteredClient {
            client_id: "pre:registered".into(),
            client_secret: Some("s3cret&more".into()),
            token_endpoint_auth_method: "client_secret_basic".into(),
            redirect_uris: vec![],
        });
        let revoke = |auth_header: Option<String>, form: Vec<(&'static str, &'static str)>| {
            let mut request = http().post(format!("{}/revoke", auth.issuer())).form(&form);
            if let Some(value) = auth_header {
                request = request.header(reqwest::header::AUTHORIZATION, value);
            }
            request.send()
        };
        // RFC 6749 section 2.3.1: id and secret are form-encoded before base64.
        let good = format!(
            "Basic {}",
            STANDARD.encode("pre%3Aregistered:s3cret%26more")
        );
        let response = revoke(Some(good), vec![("token", "whatever")])
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        let wrong = format!("Basic {}", STANDARD.encode("pre%3Aregistered:nope"));
        let response = revoke(Some(wrong), vec![("token", "whatever")])
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
        assert!(
            response
                .headers()
                .contains_key(reqwest::header::WWW_AUTHENTICATE)
        );

        let as_post = vec![
            ("token", "whatever"),
            ("client_id", "pre:registered"),
            ("client_secret", "s3cret&more"),
        ];
        let response = revoke(None, as_post).await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(auth.counts().revocations, 1);
    }
}
