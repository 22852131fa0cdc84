//! The daemon's shared state and its one owner: grants in memory, one refresh in flight
//! per grant, logins in progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::{
    GrantInfo, LoginPending, StatusResult, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::{ErrorKind, PROTOCOL_VERSION, RpcError};
use tokio::sync::{Notify, OwnedMutexGuard, watch};

use crate::challenge::StepUpLimiter;
use crate::config::{Config, GrantKind, Paths, ServerConfig};
use crate::oauth::OAuthError;
use crate::oauth::discovery::{AsMetadata, check_endpoints, normalize_server_url};
use crate::oauth::dpop::{DpopKey, Nonces};
use crate::oauth::http::{Http, UrlPolicy};
use crate::oauth::registration::{AuthMethod, ClientCredentials};
use crate::oauth::token::{DpopSigner, TokenType, Tokens, now, request_tokens};
use crate::secret::Secret;
use crate::store::db::{STATE_ACTIVE, STATE_NEEDS_LOGIN};
use crate::store::{Db, GrantRow, RegistrationRow, SecretStore, WriteBehind, keys};

/// How often, at most, `last_used_at` is written per grant: the hot path stays off disk.
const TOUCH_INTERVAL_SECS: i64 = 60;

pub struct Broker {
    pub db: Db,
    pub audit: crate::audit::AuditLog,
    pub secrets: Arc<SecretStore>,
    /// Refresh tokens, through the secret store: a rotated one the store did not take in
    /// time is kept here and written again (see `store::write_behind`).
    pub refresh_tokens: Arc<WriteBehind>,
    pub http: Http,
    /// Swapped whole by a reload (SIGHUP, `config.reload`); read through [`Broker::config`].
    config: std::sync::RwLock<Arc<Config>>,
    pub paths: Paths,
    pub socket: String,
    started: Instant,
    slots: Mutex<HashMap<String, Arc<GrantSlot>>>,
    /// By (server URL, account name): one login per account of a server at a time.
    pub(crate) logins: Mutex<HashMap<(String, String), watch::Receiver<LoginProgress>>>,
    /// `manual` logins waiting for a pasted authorization response, by server URL.
    pub(crate) pastes: Mutex<HashMap<String, crate::loopback::Inbox>>,
    pub(crate) step_ups: StepUpLimiter,
    /// Wakes the background refresh when a grant gets a new token (a login).
    pub(crate) schedule_changed: tokio::sync::Notify,
    /// `confirm_clients`: which programs may have which grants' tokens.
    pub confirm: crate::confirm::Confirmations,
    refreshes: RefreshGate,
    /// The latest DPoP nonce each server origin asked for (RFC 9449 §8, §9).
    pub dpop_nonces: Nonces,
}

/// Refreshes in flight, and whether new ones may start: a stopping daemon starts none and
/// waits for those in flight, whose rotated refresh token must reach the store.
#[derive(Default)]
struct RefreshGate {
    /// (stopping, refreshes in flight)
    state: Mutex<(bool, usize)>,
    idle: Notify,
}

/// One refresh in flight; dropping it lets a stopping daemon go on.
struct InFlight<'a>(&'a RefreshGate);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        state.1 -= 1;
        if state.1 == 0 {
            self.0.idle.notify_waiters();
        }
    }
}

impl RefreshGate {
    fn enter(&self) -> Option<InFlight<'_>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if state.0 {
            return None;
        }
        state.1 += 1;
        Some(InFlight(self))
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
    }

    async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.state.lock().unwrap_or_else(|p| p.into_inner()).1 == 0 {
                return;
            }
            idle.await;
        }
    }
}

/// The grant's refresh lock, held: no refresh of it runs, none starts, until it is dropped.
/// `revoke`, `logout` and a login that replaces the grant's tokens hold it, so that a
/// refresh in flight cannot write a rotated token after them (or revoke the older one).
pub struct GrantLock {
    slot: Arc<GrantSlot>,
    _held: OwnedMutexGuard<()>,
}

/// A login as seen by the callers waiting on it.
#[derive(Clone)]
pub enum LoginProgress {
    Starting,
    Pending(LoginPending),
    Done(Box<Result<GrantInfo, RpcError>>),
}

/// In-memory state of one grant. Readers take the current token under a short lock and
/// never wait for a refresh while it is still good; `refreshing` makes refreshes
/// single-flight: whoever holds it refreshes, the others wait and take the result.
#[derive(Default)]
pub(crate) struct GrantSlot {
    access: Mutex<Option<AccessToken>>,
    refreshing: Arc<tokio::sync::Mutex<()>>,
    last_touch: AtomicI64,
    /// Set when the grant is revoked or logged out: a caller that queued behind its lock
    /// must not refresh it again.
    forgotten: AtomicBool,
    /// The grant's DPoP key once known: `Some(None)` for a bearer grant, so that its
    /// refreshes never wait for the secret store (its refresh token may be in memory only,
    /// see `refresh_tokens`); `None` until read or saved.
    dpop_key: Mutex<Option<Option<Arc<DpopKey>>>>,
}

impl GrantSlot {
    fn current(&self) -> Option<AccessToken> {
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, token: Option<AccessToken>) {
        *self.access.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// After its lock: refuses a grant forgotten while the caller waited.
    fn check_not_forgotten(&self, grant: &GrantRow) -> Result<(), RpcError> {
        if self.forgotten.load(Ordering::Acquire) {
            return Err(RpcError::authorization_required(
                &grant.server_url,
                &[],
                "the grant was revoked or logged out meanwhile",
            ));
        }
        Ok(())
    }
}

/// An access token, held in memory only.
#[derive(Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: i64,
    /// Unix seconds when the authorization server issued it.
    pub issued_at: i64,
    pub obtained: Instant,
    pub token_type: TokenType,
}

impl AccessToken {
    pub fn new(token: Secret, expires_at: i64) -> AccessToken {
        AccessToken {
            token,
            expires_at,
            issued_at: now(),
            obtained: Instant::now(),
            token_type: TokenType::Bearer,
        }
    }

    /// The access token of a token response, presented as the response said.
    pub fn from_tokens(tokens: &Tokens) -> AccessToken {
        AccessToken {
            token_type: tokens.token_type,
            ..AccessToken::new(tokens.access_token.clone(), tokens.expires_at)
        }
    }

    /// When the background refresh should replace it: at 75 % of its lifetime or 5 minutes
    /// before expiry, whichever is sooner — but not before half its lifetime, so a token
    /// shorter-lived than 10 minutes is not refreshed again as soon as it arrives.
    pub fn refresh_due_at(&self) -> i64 {
        let lifetime = self.lifetime();
        let due = (self.issued_at + lifetime * 3 / 4).min(self.expires_at - 300);
        due.max(self.issued_at + lifetime / 2)
    }

    /// [`Self::refresh_due_at`] as a wait on the monotonic clock, to the millisecond: the
    /// refresh of a short-lived token must land before callers stop taking it (see
    /// [`Self::serves`]), and whole seconds would move it by up to one. Never due within
    /// [`MIN_REFRESH_AGE`] of arriving, so a server issuing tokens of a second or less is
    /// not asked again and again.
    pub fn refresh_due_in(&self) -> std::time::Duration {
        let offset =
            std::time::Duration::from_secs((self.refresh_due_at() - self.issued_at).max(0) as u64)
                .max(MIN_REFRESH_AGE);
        offset.saturating_sub(self.obtained.elapsed())
    }

    fn lifetime(&self) -> i64 {
        (self.expires_at - self.issued_at).max(0)
    }

    /// Good for a caller that needs `min_valid` more seconds: fresh while at least
    /// `min(min_valid, half its lifetime)` is left. A token shorter-lived than twice what
    /// callers ask for (20 s tokens, the default 60 s) is thus handed out for the first
    /// half of its life, while the background refresh renews it at half-life, instead of
    /// being refreshed for every caller. Just-issued tokens serve anyway (below).
    fn serves(&self, min_valid: i64, now: i64) -> bool {
        self.expires_at - now >= min_valid.min(self.lifetime() / 2)
            || (self.expires_at > now && self.obtained.elapsed() < JUST_ISSUED)
    }
}

/// The earliest a token is renewed in the background after it arrived.
const MIN_REFRESH_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// A token the authorization server issued this recently is the best it will give: it is
/// handed out even when shorter-lived than asked, instead of refreshing again. This is what
/// makes every caller that queued behind a refresh share its result.
const JUST_ISSUED: std::time::Duration = std::time::Duration::from_secs(5);

impl Broker {
    pub fn new(
        db: Db,
        audit: crate::audit::AuditLog,
        secrets: Arc<SecretStore>,
        http: Http,
        config: Config,
        paths: Paths,
        socket: String,
    ) -> Broker {
        Broker {
            db,
            audit,
            refresh_tokens: WriteBehind::new(secrets.clone()),
            secrets,
            http,
            confirm: crate::confirm::Confirmations::new(&config),
            config: std::sync::RwLock::new(Arc::new(config)),
            paths,
            socket,
            started: Instant::now(),
            slots: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
            pastes: Mutex::new(HashMap::new()),
            step_ups: StepUpLimiter::default(),
            schedule_changed: tokio::sync::Notify::new(),
            refreshes: RefreshGate::default(),
            dpop_nonces: Nonces::default(),
        }
    }

    /// Takes a grant's refresh lock (waiting for a refresh in flight to finish).
    pub async fn lock_grant(&self, grant_id: &str) -> GrantLock {
        let slot = self.slot(grant_id);
        let held = slot.refreshing.clone().lock_owned().await;
        GrantLock { slot, _held: held }
    }

    /// Stopping: no refresh starts from now on; callers that need one get an error.
    pub fn stop_refreshing(&self) {
        self.refreshes.close();
    }

    /// Waits, up to `limit`, for the refreshes in flight and for their rotated refresh
    /// tokens to reach the secret store; says in the log which grants it could not save.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        if tokio::time::timeout_at(deadline, self.refreshes.drained())
            .await
            .is_err()
        {
            tracing::error!(
                "refreshes still in flight at the end of the stop's grace are abandoned; their grants may need a new login"
            );
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        for key in self.refresh_tokens.flush(left).await {
            tracing::error!(
                "the secret store never took {key}; the grant will need a new login (run: mcp-auth doctor)"
            );
        }
    }

    /// The config in force; a reload swaps it whole, so keep the `Arc` for one decision.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a reloaded config in force (see `methods::config_reload`).
    pub fn replace_config(&self, config: Config) {
        self.confirm.configure(&config);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    fn slot(&self, grant_id: &str) -> Arc<GrantSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(grant_id.to_string()).or_default().clone()
    }

    fn forget_slot(&self, grant_id: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(grant_id);
    }

    /// Puts a fresh access token in memory (after a login).
    pub fn cache_access_token(&self, grant_id: &str, token: AccessToken) {
        self.slot(grant_id).set(Some(token));
        self.schedule_changed.notify_one();
    }

    /// A grant's DPoP key: from memory, else from the secret store; `None` for a grant
    /// whose tokens are not DPoP-bound.
    pub async fn dpop_key(&self, grant_id: &str) -> Result<Option<Arc<DpopKey>>, RpcError> {
        let slot = self.slot(grant_id);
        if let Some(known) = slot
            .dpop_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(known);
        }
        let key = match self.secrets.get(&keys::dpop_key(grant_id)).await? {
            Some(stored) => Some(Arc::new(DpopKey::from_secret(&stored).map_err(|e| {
                RpcError::new(ErrorKind::SecretStore, format!("grant {grant_id}: {e}"))
            })?)),
            None => None,
        };
        *slot.dpop_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(key)
    }

    /// Stores a login's DPoP key (or, with `None`, removes the one an earlier login left).
    pub async fn save_dpop_key(
        &self,
        grant_id: &str,
        key: Option<DpopKey>,
    ) -> Result<(), RpcError> {
        let name = keys::dpop_key(grant_id);
        let key = match key {
            Some(key) => {
                self.secrets.set(&name, &key.to_secret()).await?;
                Some(Arc::new(key))
            }
            None => {
                self.secrets.delete(&name).await?;
                None
            }
        };
        *self
            .slot(grant_id)
            .dpop_key
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(())
    }

    /// The cached access token of a grant, if any (for display and revocation).
    pub fn cached_access_token(&self, grant_id: &str) -> Option<AccessToken> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(grant_id)
            .cloned()?;
        slot.current()
    }

    /// `token.get`: a cached token valid long enough, else one refresh shared by every
    /// concurrent caller.
    pub async fn token_get(&self, p: TokenGetParams) -> Result<TokenGetResult, RpcError> {
        let min_valid =
            p.min_valid_secs
                .unwrap_or(mcp_authd_ipc::methods::DEFAULT_MIN_VALID_SECS) as i64;
        let key = lookup_key(&p.server);
        // Tokens travel only over TLS or loopback (a URL never given to `login` included).
        if key.starts_with("http://") {
            self.check_server_url(&key)?;
        }
        for scope in p.scopes.iter().flatten() {
            mcp_authd_ipc::text::check_scope(scope)
                .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
        }
        let account = p.account.as_deref();
        let Some(grant) = self.db.find_grant_as(&p.server, &key, account).await? else {
            let why = self.not_logged_in(&key, account).await?;
            return Err(RpcError::authorization_required(
                &key,
                p.scopes.as_deref().unwrap_or(&[]),
                &why,
            ));
        };
        if grant.server_url != key && grant.server_url.starts_with("http://") {
            self.check_server_url(&grant.server_url)?;
        }
        if let Some(wanted) = &p.scopes {
            let granted = grant.scope_list();
            let missing: Vec<&String> = wanted.iter().filter(|s| !granted.contains(s)).collect();
            if !missing.is_empty() {
                let mut union = granted.clone();
                union.extend(missing.iter().map(|s| s.to_string()));
                let why = format!(
                    "the grant lacks scope {}",
                    missing
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                return Err(RpcError::authorization_required(
                    &grant.server_url,
                    &union,
                    &why,
                ));
            }
        }
        if grant.state == STATE_NEEDS_LOGIN {
            let why = grant
                .needs_login_reason
                .clone()
                .unwrap_or_else(|| "the grant needs a new login".into());
            return Err(RpcError::authorization_required(
                &grant.server_url,
                &[],
                &why,
            ));
        }

        let slot = self.slot(&grant.id);
        if let Some(t) = slot.current().filter(|t| t.serves(min_valid, now())) {
            return self.hand_out(&slot, grant, t, now()).await;
        }
        let refreshing = slot.refreshing.lock().await;
        slot.check_not_forgotten(&grant)?;
        let token = match slot.current().filter(|t| t.serves(min_valid, now())) {
            Some(t) => t,
            None => {
                let fresh = self.refresh(&grant).await?;
                slot.set(Some(fresh.clone()));
                fresh
            }
        };
        drop(refreshing);
        self.hand_out(&slot, grant, token, now()).await
    }

    /// `token.get` answered from memory alone, when it can be: the grant's lookup is
    /// remembered, the grant is active and has the scopes asked for, its token is good for
    /// `min_valid_secs`, and its last use need not be written yet. Otherwise `None`.
    pub fn token_from_memory(&self, p: &TokenGetParams, now: i64) -> Option<TokenGetResult> {
        let min_valid =
            p.min_valid_secs
                .unwrap_or(mcp_authd_ipc::methods::DEFAULT_MIN_VALID_SECS) as i64;
        let grant = self
            .db
            .remembered_grant(&p.server, p.account.as_deref())??;
        if grant.state != STATE_ACTIVE {
            return None;
        }
        let scopes = grant.scope_list();
        if let Some(wanted) = &p.scopes
            && !wanted.iter().all(|s| scopes.contains(s))
        {
            return None;
        }
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&grant.id)
            .cloned()?;
        if now - slot.last_touch.load(Ordering::Relaxed) >= TOUCH_INTERVAL_SECS {
            return None;
        }
        let token = slot.current().filter(|t| t.serves(min_valid, now))?;
        Some(token_result(grant.id.clone(), scopes, &token, now))
    }

    /// After a server answered 401 to a request carrying `rejected` (or no token): the
    /// grant's current token when it is not the rejected one, else a refresh
    /// (single-flight, like `token.get`).
    pub async fn renew_rejected(
        &self,
        grant: GrantRow,
        rejected: Option<&str>,
    ) -> Result<TokenGetResult, RpcError> {
        let slot = self.slot(&grant.id);
        let refreshing = slot.refreshing.lock().await;
        slot.check_not_forgotten(&grant)?;
        let now = now();
        let token = match slot.current() {
            // The caller sent no token, or one already replaced: the current one will do.
            Some(t) if t.expires_at > now && rejected != Some(t.token.expose()) => t,
            _ => {
                slot.set(None);
                let fresh = self.refresh(&grant).await?;
                slot.set(Some(fresh.clone()));
                fresh
            }
        };
        drop(refreshing);
        self.hand_out(&slot, grant, token, now).await
    }

    /// How long until the background refresh should renew this grant: now when no token
    /// is in memory (after a restart), else when its token is due.
    pub fn refresh_due_in(&self, grant_id: &str) -> std::time::Duration {
        self.cached_access_token(grant_id)
            .map_or(std::time::Duration::ZERO, |t| t.refresh_due_in())
    }

    /// The background refresh of one grant: skipped (`Ok(false)`) when a refresh is
    /// already running or the token is no longer due.
    pub async fn refresh_ahead(&self, grant: &GrantRow) -> Result<bool, RpcError> {
        let slot = self.slot(&grant.id);
        let Ok(_refreshing) = slot.refreshing.try_lock() else {
            return Ok(false);
        };
        if slot.forgotten.load(Ordering::Acquire) {
            return Ok(false);
        }
        if slot
            .current()
            .is_some_and(|t| !t.refresh_due_in().is_zero())
        {
            return Ok(false);
        }
        let fresh = self.refresh(grant).await?;
        slot.set(Some(fresh));
        Ok(true)
    }

    async fn hand_out(
        &self,
        slot: &GrantSlot,
        grant: GrantRow,
        token: AccessToken,
        now: i64,
    ) -> Result<TokenGetResult, RpcError> {
        if now - slot.last_touch.swap(now, Ordering::Relaxed) >= TOUCH_INTERVAL_SECS
            && let Err(e) = self.db.touch(&grant.id, now).await
        {
            tracing::warn!("cannot record the use of grant {}: {e}", grant.id);
        }
        Ok(token_result(
            grant.id.clone(),
            grant.scope_list(),
            &token,
            now,
        ))
    }

    /// Redeems the grant's refresh token. The rotated refresh token is stored before the
    /// new access token is returned; `invalid_grant` marks the grant as needing login.
    async fn refresh(&self, grant: &GrantRow) -> Result<AccessToken, RpcError> {
        let Some(_in_flight) = self.refreshes.enter() else {
            return Err(RpcError::new(
                ErrorKind::Internal,
                "mcp-authd is stopping and starts no refresh; retry when it is back (see: mcp-auth status)",
            )
            .with_server(&grant.server_url));
        };
        match GrantKind::parse(&grant.grant_type) {
            Some(GrantKind::AuthorizationCode) => {}
            Some(kind) => return self.grant_again(grant, kind).await,
            None => {
                return Err(RpcError::new(
                    ErrorKind::Internal,
                    format!(
                        "grant {} has the unknown grant type `{}` (a newer mcp-authd stored it?)",
                        grant.id, grant.grant_type
                    ),
                ));
            }
        }
        let key = keys::refresh_token(&grant.id);
        let Some(refresh_token) = self.refresh_tokens.get(&key).await? else {
            return Err(RpcError::authorization_required(
                &grant.server_url,
                &[],
                &format!(
                    "the access token expired and the authorization server gave no refresh token (why, and what may help: mcp-auth inspect {})",
                    grant.server_url
                ),
            ));
        };
        let (metadata, credentials, policy) = self.client_of(grant).await?;
        let quirks = self.quirks(grant);
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        if !quirks.omit_resource {
            form.push(("resource", grant.resource.clone()));
        }
        if quirks.refresh_scope && !grant.scopes.is_empty() {
            form.push(("scope", grant.scopes.clone()));
        }
        tracing::debug!(grant = %grant.id, "refreshing the access token");
        // A DPoP-bound grant proves possession at each refresh too (RFC 9449 §5).
        let dpop_key = self.dpop_key(&grant.id).await?;
        let dpop = dpop_key.as_deref().map(|key| DpopSigner {
            key,
            nonces: &self.dpop_nonces,
        });
        crate::crash::point("refresh:before_request");
        let interrupted = self.db.begin_refresh(&grant.id, now()).await?;
        let tokens = match request_tokens(
            &self.http,
            &policy,
            &grant.issuer,
            &metadata.token_endpoint,
            &credentials,
            form,
            dpop,
        )
        .await
        {
            Ok(t) => t,
            Err(e) if e.is_invalid_grant() => {
                let mut reason =
                    format!("the authorization server rejected the refresh token ({e})");
                if let Some(at) = interrupted {
                    reason.push_str(&format!(
                        "; an earlier refresh (unix time {at}) was interrupted — the daemon stopped or the network failed — after the server may have rotated the token"
                    ));
                }
                tracing::warn!(grant = %grant.id, "{reason}; the grant needs a new login");
                self.db.mark_needs_login(&grant.id, &reason, now()).await?;
                return Err(RpcError::authorization_required(
                    &grant.server_url,
                    &[],
                    &reason,
                ));
            }
            Err(e) => {
                return Err(server_error(
                    &grant.server_url,
                    "cannot refresh the access token",
                    &e,
                ));
            }
        };
        crate::crash::point("refresh:after_response");
        self.commit_refresh(grant, tokens).await
    }

    /// Renews a grant without a browser by running its grant again, with its inputs
    /// (assertion, ID token, key) read afresh. A refusal marks the grant as needing a
    /// login and is not retried; a network failure is retried like a failed refresh.
    async fn grant_again(
        &self,
        grant: &GrantRow,
        kind: GrantKind,
    ) -> Result<AccessToken, RpcError> {
        let config = self.config();
        let Some(cfg) = config
            .server(&grant.server_url, Some(&grant.issuer))
            .filter(|c| c.grant == kind)
        else {
            let reason = format!(
                "the config no longer says grant = \"{}\" for this server",
                kind.as_str()
            );
            self.db.mark_needs_login(&grant.id, &reason, now()).await?;
            return Err(RpcError::authorization_required(
                &grant.server_url,
                &[],
                &reason,
            ));
        };
        let (metadata, credentials, policy) = self.client_of(grant).await?;
        let scopes = grant.scope_list();
        let target = crate::machine::Target {
            policy: &policy,
            metadata: &metadata,
            resource: &grant.resource,
            scopes: &scopes,
            omit_resource: cfg.quirks.omit_resource,
        };
        tracing::debug!(grant = %grant.id, kind = kind.as_str(), "renewing the access token");
        match crate::machine::obtain(self, kind, cfg, &credentials, &target).await {
            Ok(tokens) => self.commit_refresh(grant, tokens).await,
            Err(crate::machine::GrantError::Server(e)) => Err(server_error(
                &grant.server_url,
                "cannot renew the access token",
                &e,
            )),
            Err(e) => {
                let reason = format!(
                    "the {} grant failed ({e}); it is not retried until asked again",
                    kind.as_str()
                );
                tracing::warn!(grant = %grant.id, "{reason}; the grant needs a new login");
                self.db.mark_needs_login(&grant.id, &reason, now()).await?;
                Err(RpcError::authorization_required(
                    &grant.server_url,
                    &[],
                    &reason,
                ))
            }
        }
    }

    async fn commit_refresh(
        &self,
        grant: &GrantRow,
        tokens: Tokens,
    ) -> Result<AccessToken, RpcError> {
        // The server has rotated the token: the new one is the grant now. If the store
        // does not take it in time it stays in memory, is used by the next refresh and is
        // written again until stored; failing here would lose it.
        if let Some(rotated) = &tokens.refresh_token
            && let Err(e) = self
                .refresh_tokens
                .set(&keys::refresh_token(&grant.id), rotated)
                .await
        {
            tracing::warn!(grant = %grant.id, "the rotated refresh token is not stored yet: {e}");
        }
        crate::crash::point("refresh:after_secret_store");
        let scopes = tokens
            .scopes
            .as_ref()
            .map(|s| s.join(" "))
            .unwrap_or_else(|| grant.scopes.clone());
        let now = now();
        self.db
            .record_refresh(
                &grant.id,
                tokens.expires_at,
                &scopes,
                tokens.account.as_deref(),
                grant.has_refresh_token || tokens.refresh_token.is_some(),
                now,
            )
            .await?;
        crate::crash::point("refresh:after_database");
        tracing::info!(grant = %grant.id, expires_in = tokens.expires_at - now, "access token refreshed");
        Ok(AccessToken::from_tokens(&tokens))
    }

    /// The identity-provider quirks configured for a grant's server or issuer.
    pub fn quirks(&self, grant: &GrantRow) -> crate::config::Quirks {
        self.config()
            .server(&grant.server_url, Some(&grant.issuer))
            .map(|c| c.quirks.clone())
            .unwrap_or_default()
    }

    /// The transport policy for one operation on `server_url`: its `allow_insecure_http`,
    /// read from the server's own `[servers."<url>"]` entry.
    pub fn url_policy(&self, server_url: &str) -> UrlPolicy {
        UrlPolicy::new(server_url, self.config().allow_insecure_http(server_url))
    }

    /// An MCP server URL a client gave (`login`, `token.challenge`, `token.get`): https or
    /// loopback, or plain http allowed for it; else `invalid_params` naming the setting.
    pub fn check_server_url(&self, server_url: &str) -> Result<(), RpcError> {
        self.url_policy(server_url)
            .check("MCP server URL", server_url, None)
            .map(drop)
            .map_err(|e| {
                RpcError::new(ErrorKind::InvalidParams, e.to_string()).with_server(server_url)
            })
    }

    /// The stored AS metadata and client credentials a grant was issued with, and the
    /// transport policy to use them under. The endpoints are checked again (the config
    /// may have changed since the login), and the registration must be the grant's
    /// issuer's: a client is never presented to another authorization server.
    pub async fn client_of(
        &self,
        grant: &GrantRow,
    ) -> Result<(AsMetadata, ClientCredentials, UrlPolicy), RpcError> {
        let metadata = self.db.as_metadata(&grant.issuer).await?.ok_or_else(|| {
            RpcError::authorization_required(
                &grant.server_url,
                &[],
                "the authorization server's metadata is missing",
            )
        })?;
        let policy = self.url_policy(&grant.server_url);
        check_endpoints(&policy, &metadata).map_err(|e| {
            RpcError::new(
                ErrorKind::DiscoveryFailed,
                format!(
                    "{e}; nothing was sent. Once that is fixed, run: {}",
                    mcp_authd_ipc::text::login_command(&grant.server_url, &[])
                ),
            )
            .with_server(&grant.server_url)
        })?;
        let registration = self
            .db
            .registration(&grant.registration_id)
            .await?
            .ok_or_else(|| {
                RpcError::authorization_required(
                    &grant.server_url,
                    &[],
                    "the client registration is missing",
                )
            })?;
        let cfg = self
            .config()
            .client(&grant.server_url, &grant.issuer)
            .map_err(|e| config_error(&grant.server_url, e))?
            .cloned();
        let credentials = self
            .credentials(&registration, &grant.issuer, cfg.as_ref())
            .await?;
        Ok((metadata, credentials, policy))
    }

    /// Client credentials of a registration for use at `issuer`: the secret from the config
    /// file for a pre-registered client (`cfg`, already bound to `issuer` by
    /// [`Config::client`]), else from the secret store. A registration stored for another
    /// issuer is refused: its client id and secret belong to that server alone.
    pub async fn credentials(
        &self,
        reg: &RegistrationRow,
        issuer: &str,
        cfg: Option<&ServerConfig>,
    ) -> Result<ClientCredentials, RpcError> {
        if reg.issuer != issuer {
            tracing::warn!(registration = %reg.id, "registration of {} offered for {issuer}; refused", reg.issuer);
            return Err(RpcError::new(
                ErrorKind::Internal,
                format!(
                    "stored registration {} belongs to the authorization server {}, not {issuer}; it is not used there (possible mix-up); run: mcp-auth doctor",
                    reg.id, reg.issuer
                ),
            ));
        }
        let auth_method = AuthMethod::parse(&reg.token_endpoint_auth_method).map_err(|e| {
            RpcError::new(
                ErrorKind::Internal,
                format!("stored registration {}: {e}", reg.id),
            )
        })?;
        let client_secret = if !reg.has_client_secret {
            None
        } else if reg.kind == "pre-registered" {
            cfg.filter(|c| c.client_id.as_deref() == Some(reg.client_id.as_str()))
                .and_then(|c| c.client_secret.clone())
        } else {
            self.secrets.get(&keys::client_secret(&reg.id)).await?
        };
        let signing_key = match (auth_method, cfg) {
            (AuthMethod::PrivateKeyJwt, Some(cfg)) if reg.kind == "pre-registered" => {
                Some(crate::machine::signing_key(self, cfg).await.map_err(|e| {
                    RpcError::new(
                        ErrorKind::ConfigInvalid,
                        format!("{e}; fix the config file, then run: mcp-auth reload"),
                    )
                })?)
            }
            (AuthMethod::PrivateKeyJwt, _) => {
                return Err(RpcError::new(
                    ErrorKind::ConfigInvalid,
                    format!(
                        "client {} authenticates with private_key_jwt, but no private_key is configured for it",
                        reg.client_id
                    ),
                ));
            }
            _ => None,
        };
        if !matches!(auth_method, AuthMethod::None | AuthMethod::PrivateKeyJwt)
            && client_secret.is_none()
        {
            return Err(RpcError::new(
                ErrorKind::SecretStore,
                format!(
                    "the client secret of {} is missing from the secret store",
                    reg.client_id
                ),
            ));
        }
        Ok(ClientCredentials {
            client_id: reg.client_id.clone(),
            client_secret,
            auth_method,
            signing_key,
            audience: reg.issuer.clone(),
        })
    }

    pub async fn grant_info(&self, g: &GrantRow) -> Result<GrantInfo, RpcError> {
        let reg = self.db.registration(&g.registration_id).await?;
        let access = self.cached_access_token(&g.id);
        let scopes = g.scope_list();
        // A grant without a browser renews by granting again: no refresh token is expected.
        let no_refresh_token = if g.has_refresh_token || g.grant_type != "authorization_code" {
            None
        } else {
            let metadata = self.db.as_metadata(&g.issuer).await?;
            let config = self.config();
            Some(crate::no_refresh::explain(&crate::no_refresh::Facts {
                server_url: &g.server_url,
                issuer: &g.issuer,
                scopes: &scopes,
                metadata: metadata.as_ref(),
                config: config.server(&g.server_url, Some(&g.issuer)),
                access_expires_at: access.as_ref().map(|a| a.expires_at),
                account_name: g.account_name(),
            }))
        };
        Ok(GrantInfo {
            id: g.id.clone(),
            server: g.server_url.clone(),
            resource: g.resource.clone(),
            issuer: g.issuer.clone(),
            client_id: reg
                .as_ref()
                .map(|r| r.client_id.clone())
                .unwrap_or_default(),
            registration: reg.map(|r| r.kind).unwrap_or_else(|| "missing".into()),
            scopes,
            state: g.state.clone(),
            needs_login_reason: g.needs_login_reason.clone(),
            has_refresh_token: g.has_refresh_token,
            access_token_expires_at: access.map(|a| a.expires_at),
            created_at: g.created_at,
            last_used_at: g.last_used_at,
            last_refresh_at: g.last_refresh_at,
            account: g.account.clone(),
            no_refresh_token,
            grant_type: g.grant_type.clone(),
            account_name: g.account_name().map(str::to_string),
        })
    }

    /// A grant by id, or the grant of `account` (none: the default account) for a server
    /// URL or resource.
    pub async fn find_grant(
        &self,
        grant: &str,
        account: Option<&str>,
    ) -> Result<GrantRow, RpcError> {
        let key = lookup_key(grant);
        match self.db.find_grant_as(grant, &key, account).await? {
            Some(row) => Ok(row),
            None => Err(RpcError::new(
                ErrorKind::NotFound,
                format!(
                    "no grant for `{}`{}; see the grants with: mcp-auth list",
                    crate::oauth::printable(grant, 300),
                    self.other_accounts(&key, account).await?
                ),
            )),
        }
    }

    /// Why `token.get` found no grant: not logged in at all, or not with this account —
    /// then the accounts that are logged in, and how to use one.
    async fn not_logged_in(&self, server: &str, account: Option<&str>) -> Result<String, RpcError> {
        let others = self.other_accounts(server, account).await?;
        Ok(match account {
            Some(name) => format!("not logged in to this server as account `{name}`{others}"),
            None if others.is_empty() => "not logged in to this server".into(),
            None => format!(
                "not logged in to this server without --account (the default account){others}"
            ),
        })
    }

    /// ` (logged in here as: work, personal; …)` when the server
    /// has grants of accounts other than `account`, else nothing.
    async fn other_accounts(
        &self,
        server: &str,
        account: Option<&str>,
    ) -> Result<String, RpcError> {
        let wanted = account.unwrap_or("");
        let names: Vec<String> = self
            .db
            .accounts_of_server(server)
            .await?
            .into_iter()
            .filter(|a| a != wanted)
            .map(|a| {
                if a.is_empty() {
                    "the default account (without --account)".to_string()
                } else {
                    a
                }
            })
            .collect();
        Ok(if names.is_empty() {
            String::new()
        } else {
            format!(
                " (logged in here as: {}; choose with --account NAME, or `account` in the request)",
                names.join(", ")
            )
        })
    }

    /// Removes a grant's secrets, row and memory, under its refresh lock. Its refresh token
    /// is gone from memory at once; the store's delete is retried until it is done.
    pub async fn forget_grant(&self, g: &GrantRow, lock: &GrantLock) -> Result<(), RpcError> {
        lock.slot.forgotten.store(true, Ordering::Release);
        lock.slot.set(None);
        self.forget_slot(&g.id);
        let deleted = self
            .refresh_tokens
            .delete(&keys::refresh_token(&g.id))
            .await;
        // A DPoP-bound grant's private key goes with it.
        self.secrets.delete(&keys::dpop_key(&g.id)).await?;
        self.db.delete_grant(&g.id).await?;
        deleted.map_err(|e| {
            RpcError::new(
                ErrorKind::SecretStore,
                format!("the grant is forgotten, but its refresh token is not yet deleted from the secret store: {e}; see: mcp-auth doctor"),
            )
        })
    }

    pub async fn status(&self) -> Result<StatusResult, RpcError> {
        Ok(StatusResult {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            socket: self.socket.clone(),
            data_dir: self.paths.data_dir.display().to_string(),
            config_file: self.paths.config_file.display().to_string(),
            database_schema: self.db.schema_version().await?,
            secret_store: {
                let mut store = self.secrets.status();
                store.refresh_tokens_not_stored = self
                    .refresh_tokens
                    .not_yet_stored()
                    .iter()
                    .filter_map(|key| keys::grant_of_refresh_token(key))
                    .map(str::to_string)
                    .collect();
                store
            },
            grants: self.db.count_grants().await? as u32,
        })
    }
}

fn token_result(grant: String, scopes: Vec<String>, t: &AccessToken, now: i64) -> TokenGetResult {
    TokenGetResult {
        access_token: t.token.expose().to_string(),
        token_type: t.token_type.as_str().into(),
        expires_at: t.expires_at,
        expires_in: t.expires_at - now,
        scopes,
        grant,
    }
}

pub fn new_grant_row(
    id: String,
    server_url: &str,
    resource: &str,
    issuer: &str,
    registration_id: &str,
    account_name: &str,
) -> GrantRow {
    let now = now();
    GrantRow {
        id,
        server_url: server_url.into(),
        resource: resource.into(),
        issuer: issuer.into(),
        registration_id: registration_id.into(),
        scopes: String::new(),
        state: STATE_ACTIVE.into(),
        needs_login_reason: None,
        has_refresh_token: false,
        access_expires_at: None,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        last_refresh_at: None,
        account: None,
        grant_type: crate::config::GrantKind::AuthorizationCode.as_str().into(),
        account_name: account_name.into(),
        login_hint: None,
    }
}

/// Grant ids pass through; URLs are normalized the way logins store them.
fn lookup_key(server_or_id: &str) -> String {
    normalize_server_url(server_or_id).unwrap_or_else(|_| server_or_id.trim().to_string())
}

/// The config names a client that may not be used here (see [`Config::client`]).
pub fn config_error(server: &str, why: String) -> RpcError {
    RpcError::new(ErrorKind::ConfigInvalid, why).with_server(server)
}

pub fn server_error(server: &str, what: &str, e: &OAuthError) -> RpcError {
    RpcError::new(
        ErrorKind::ServerError,
        format!("{what}: {e}; retry later, and check the network and the clock: mcp-auth doctor"),
    )
    .with_server(server)
}

impl From<crate::store::DbError> for RpcError {
    fn from(e: crate::store::DbError) -> Self {
        tracing::error!("{e}");
        RpcError::new(
            ErrorKind::Internal,
            format!("{e}; check the data directory, or run: mcp-auth status"),
        )
    }
}

impl From<crate::store::SecretStoreError> for RpcError {
    fn from(e: crate::store::SecretStoreError) -> Self {
        tracing::error!("{e}");
        RpcError::new(
            ErrorKind::SecretStore,
            format!("{e}; unlock the keychain and retry; see: mcp-auth doctor"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of `lifetime` seconds that arrived `age` ago, at unix time 1000 + age.
    fn token(lifetime: i64, age: std::time::Duration) -> (AccessToken, i64) {
        let mut t = AccessToken::new(Secret::new("t"), 0);
        t.issued_at = 1_000;
        t.expires_at = 1_000 + lifetime;
        t.obtained = Instant::now()
            .checked_sub(age)
            .expect("the clock is older than age");
        (t, 1_000 + age.as_secs() as i64)
    }

    #[test]
    fn a_short_token_serves_for_half_its_life_and_is_due_then() {
        let secs = std::time::Duration::from_secs;
        let (t, now) = token(20, secs(9));
        assert!(
            t.serves(60, now),
            "10+ s of 20 left: fresh for a 60 s caller"
        );
        assert!(!t.refresh_due_in().is_zero());
        assert!(t.refresh_due_in() <= secs(1), "{:?}", t.refresh_due_in());
        let (t, now) = token(20, secs(11));
        assert!(!t.serves(60, now), "9 s left is less than half");
        assert!(t.refresh_due_in().is_zero());
        assert!(t.serves(5, now), "a caller asking 5 s still takes it");

        let (t, now) = token(3600, secs(3000));
        assert!(
            t.serves(60, now),
            "an hour-long token serves until 60 s are left"
        );
        let (t, now) = token(3600, secs(3541));
        assert!(!t.serves(60, now));

        let (t, _) = token(0, secs(0));
        assert!(
            t.refresh_due_in() > std::time::Duration::from_millis(900),
            "never due right after arriving"
        );
    }
}
