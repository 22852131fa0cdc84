//! The server's state: clients, codes, token families and device grants, behind one lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use url::Url;

use super::request::{is_loopback, random_token, split_scope};
use super::{AsOptions, Counts, DevicePoll, TokenProblem};
use crate::jwt::VerifyingKey;

/// State shared between the HTTP handlers, [`super::AuthServer`] and the MCP server.
pub(crate) struct Shared {
    pub(super) issuer: String,
    pub(super) opts: AsOptions,
    pub(super) inner: Mutex<Inner>,
    /// Milliseconds `/token` waits before answering (a slow server).
    pub(super) token_delay_ms: std::sync::atomic::AtomicU64,
    /// Milliseconds `/token` waits after doing a refresh, before it answers.
    pub(super) token_reply_delay_ms: std::sync::atomic::AtomicU64,
    pub(super) dpop_nonce: String,
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
    pub(super) fn lock(&self) -> MutexGuard<'_, Inner> {
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
pub(super) enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// Registered with [`AuthServer::register_jwt_client`] only.
    PrivateKeyJwt,
}

impl AuthMethod {
    pub(super) const ALL: [&'static str; 3] = ["none", "client_secret_basic", "client_secret_post"];

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            _ => None,
        }
    }

    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

pub(super) struct Client {
    pub(super) secret: Option<String>,
    pub(super) method: AuthMethod,
    pub(super) redirect_uris: Vec<String>,
    /// The public key of a `private_key_jwt` client.
    pub(super) jwt_key: Option<VerifyingKey>,
}

impl Client {
    /// Exact string match (OAuth 2.1 section 2.3.1), except that a client
    /// without registered URIs accepts any loopback `http` URI.
    pub(super) fn accepts_redirect(&self, uri: &str) -> bool {
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
pub(super) struct PendingCode {
    pub(super) client_id: String,
    pub(super) redirect_uri: String,
    pub(super) code_challenge: String,
    pub(super) scope: Option<String>,
    pub(super) resource: String,
    /// Whether a refresh token may be issued for this code (see `strict_oidc`).
    pub(super) offline: bool,
    pub(super) issued_at: Instant,
    pub(super) state: CodeState,
    /// The request's OpenID Connect `login_hint`: the user this consent is for.
    pub(super) login_hint: Option<String>,
}

/// Codes are single use: the first redemption attempt consumes the code
/// whatever its outcome, and a second use revokes whatever the first one
/// produced (OAuth 2.1 section 4.1.3).
#[derive(Clone, Copy)]
pub(super) enum CodeState {
    Fresh,
    Consumed { family: Option<FamilyId> },
}

/// Index into `Inner::families`: one grant and every token derived from it.
pub(super) type FamilyId = usize;

pub(super) struct Family {
    pub(super) client_id: String,
    pub(super) scope: Option<String>,
    pub(super) resource: String,
    pub(super) revoked: bool,
    /// The DPoP key thumbprint the grant's tokens are bound to.
    pub(super) jkt: Option<String>,
    /// The user the grant is for: the `login_hint` of its authorization request (so two
    /// logins with different hints are two users), else the test account.
    pub(super) user: Option<String>,
}

pub(super) struct RefreshRecord {
    pub(super) family: FamilyId,
    /// Replaced by a newer token; presenting it again is a replay.
    pub(super) rotated: bool,
}

pub(super) struct AccessRecord {
    pub(super) family: FamilyId,
    pub(super) scope: Option<String>,
    pub(super) resource: String,
    pub(super) expires_at: Instant,
    pub(super) revoked: bool,
}

pub(super) struct Inner {
    pub(super) access_token_ttl: Duration,
    pub(super) clients: HashMap<String, Client>,
    pub(super) codes: HashMap<String, PendingCode>,
    pub(super) families: Vec<Family>,
    pub(super) refresh_tokens: HashMap<String, RefreshRecord>,
    pub(super) access_tokens: HashMap<String, AccessRecord>,
    pub(super) counts: Counts,
    pub(super) secrets: Vec<String>,
    pub(super) registrations: Vec<Value>,
    pub(super) last_authorize: Option<BTreeMap<String, String>>,
    pub(super) last_token: Option<BTreeMap<String, String>>,
    pub(super) revoked: Vec<String>,
    pub(super) newest_refresh_token: Option<String>,
    /// What each revocation request presented, in order: `refresh_token`,
    /// `access_token` or `unknown`.
    pub(super) revoked_kinds: Vec<&'static str>,
    /// When each successful refresh happened.
    pub(super) refresh_times: Vec<Instant>,
    pub(super) assertions_seen: Vec<String>,
    pub(super) reject_assertions: bool,
    /// `jti`s of client assertions already used (RFC 7523 §3).
    pub(super) used_jtis: BTreeSet<String>,
    /// Every DPoP proof `jti` seen (token endpoint and MCP server): none may come twice.
    pub(super) dpop_jtis: HashSet<String>,
    pub(super) device_codes: HashMap<String, DeviceGrant>,
    pub(super) device_polls: Vec<DevicePoll>,
    pub(super) last_device: Option<BTreeMap<String, String>>,
}

/// An issued device code (RFC 8628 §3.2) and what the user did about it.
pub(super) struct DeviceGrant {
    pub(super) client_id: String,
    pub(super) user_code: String,
    pub(super) scope: Option<String>,
    pub(super) resource: String,
    // Tokio's clock, as the client's: with a paused clock, the interval a client keeps is
    // measured in the time it waited.
    pub(super) expires_at: tokio::time::Instant,
    /// The interval the client must keep, lengthened by each `slow_down`.
    pub(super) interval: Duration,
    pub(super) last_poll: Option<tokio::time::Instant>,
    pub(super) decision: DeviceDecision,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum DeviceDecision {
    Pending,
    Approved,
    Denied,
    /// Tokens were issued: the code is spent.
    Redeemed,
}

impl Inner {
    pub(super) fn new(access_token_ttl: Duration) -> Self {
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

    pub(super) fn remember_secret(&mut self, secret: &str) {
        if !self.secrets.iter().any(|s| s == secret) {
            self.secrets.push(secret.to_owned());
        }
    }

    /// Generates a secret value and records it in the leak-check list.
    pub(super) fn new_secret(&mut self, prefix: &str) -> String {
        let value = random_token(prefix);
        self.remember_secret(&value);
        value
    }

    pub(super) fn new_family(
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
    pub(super) fn user_of(&self, access_token: &str) -> Option<Option<String>> {
        let record = self.access_tokens.get(access_token)?;
        Some(self.families[record.family].user.clone())
    }

    pub(super) fn revoke_family(&mut self, family: FamilyId) {
        if let Some(f) = self.families.get_mut(family) {
            f.revoked = true;
        }
    }

    /// Issues an access token (and a refresh token if asked) for `family`
    /// and returns the RFC 6749 section 5.1 response body.
    pub(super) fn issue(
        &mut self,
        family: FamilyId,
        scope: Option<String>,
        with_refresh: bool,
    ) -> Value {
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
