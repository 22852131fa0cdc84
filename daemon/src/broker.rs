//! The daemon's shared state and its one owner: grants in memory, one refresh in flight
//! per grant, logins in progress.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use mcp_authd_ipc::methods::{
    GrantInfo, LoginPending, StatusResult, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::{ErrorKind, PROTOCOL_VERSION, RpcError};
use tokio::sync::watch;

use crate::challenge::StepUpLimiter;
use crate::config::{Config, Paths, ServerConfig};
use crate::oauth::OAuthError;
use crate::oauth::discovery::normalize_server_url;
use crate::oauth::dpop::{DpopKey, Nonces};
use crate::oauth::http::Http;
use crate::oauth::registration::{AuthMethod, ClientCredentials};
use crate::oauth::token::{DpopSigner, TokenType, Tokens, now, request_tokens_with_dpop};
use crate::secret::Secret;
use crate::store::db::{STATE_ACTIVE, STATE_NEEDS_LOGIN};
use crate::store::{Db, GrantRow, RegistrationRow, SecretStore, keys};

/// How often, at most, `last_used_at` is written per grant: the hot path stays off disk.
const TOUCH_INTERVAL_SECS: i64 = 60;

pub struct Broker {
    pub db: Db,
    pub audit: crate::audit::AuditLog,
    pub secrets: Arc<SecretStore>,
    pub http: Http,
    /// Swapped whole by a reload (SIGHUP, `config.reload`); read through [`Broker::config`].
    config: std::sync::RwLock<Arc<Config>>,
    pub paths: Paths,
    pub socket: String,
    started: Instant,
    slots: Mutex<HashMap<String, Arc<GrantSlot>>>,
    pub(crate) logins: Mutex<HashMap<String, watch::Receiver<LoginProgress>>>,
    pub(crate) step_ups: StepUpLimiter,
    /// Wakes the background refresh when a grant gets a new token (a login).
    pub(crate) schedule_changed: tokio::sync::Notify,
    /// `confirm_clients`: which programs may have which grants' tokens.
    pub confirm: crate::confirm::Confirmations,
    /// The latest DPoP nonce each server origin asked for (RFC 9449 §8, §9).
    pub dpop_nonces: Nonces,
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
    refreshing: tokio::sync::Mutex<()>,
    last_touch: AtomicI64,
    /// The grant's DPoP key once read from the secret store (DPoP-bound grants only).
    dpop_key: Mutex<Option<Arc<DpopKey>>>,
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
        let lifetime = (self.expires_at - self.issued_at).max(0);
        let due = (self.issued_at + lifetime * 3 / 4).min(self.expires_at - 300);
        due.max(self.issued_at + lifetime / 2)
    }

    /// Good for a caller that needs `min_valid` more seconds.
    fn serves(&self, min_valid: i64, now: i64) -> bool {
        self.expires_at - now >= min_valid
            || (self.expires_at > now && self.obtained.elapsed() < JUST_ISSUED)
    }
}

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
            secrets,
            http,
            confirm: crate::confirm::Confirmations::new(&config),
            config: std::sync::RwLock::new(Arc::new(config)),
            paths,
            socket,
            started: Instant::now(),
            slots: Mutex::new(HashMap::new()),
            logins: Mutex::new(HashMap::new()),
            step_ups: StepUpLimiter::default(),
            schedule_changed: tokio::sync::Notify::new(),
            dpop_nonces: Nonces::default(),
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
        if let Some(key) = slot
            .dpop_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(Some(key));
        }
        let Some(stored) = self.secrets.get(&keys::dpop_key(grant_id)).await? else {
            return Ok(None);
        };
        let key = Arc::new(DpopKey::from_secret(&stored).map_err(|e| {
            RpcError::new(ErrorKind::SecretStore, format!("grant {grant_id}: {e}"))
        })?);
        *slot.dpop_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(Some(key))
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
            .unwrap_or_else(|p| p.into_inner()) = key;
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
        let Some(grant) = self.db.find_grant_as(&p.server, &key).await? else {
            return Err(RpcError::authorization_required(
                &key,
                p.scopes.as_deref().unwrap_or(&[]),
                "not logged in to this server",
            ));
        };
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
        let grant = self.db.remembered_grant(&p.server)??;
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

    /// When the background refresh should next renew this grant: now when no token is in
    /// memory (after a restart), else its token's due time.
    pub fn refresh_due_at(&self, grant_id: &str) -> i64 {
        self.cached_access_token(grant_id)
            .map(|t| t.refresh_due_at())
            .unwrap_or_else(now)
    }

    /// The background refresh of one grant: skipped (`Ok(false)`) when a refresh is
    /// already running or the token is no longer due.
    pub async fn refresh_ahead(&self, grant: &GrantRow) -> Result<bool, RpcError> {
        let slot = self.slot(&grant.id);
        let Ok(_refreshing) = slot.refreshing.try_lock() else {
            return Ok(false);
        };
        if slot.current().is_some_and(|t| t.refresh_due_at() > now()) {
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
        let key = keys::refresh_token(&grant.id);
        let Some(refresh_token) = self.secrets.get(&key).await? else {
            return Err(RpcError::authorization_required(
                &grant.server_url,
                &[],
                "the access token expired and the authorization server gave no refresh token",
            ));
        };
        let (metadata, credentials) = self.client_of(grant).await?;
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
        let tokens = match request_tokens_with_dpop(
            &self.http,
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

    async fn commit_refresh(
        &self,
        grant: &GrantRow,
        tokens: Tokens,
    ) -> Result<AccessToken, RpcError> {
        if let Some(rotated) = &tokens.refresh_token {
            self.secrets
                .set(&keys::refresh_token(&grant.id), rotated)
                .await?;
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

    /// The stored AS metadata and client credentials a grant was issued with.
    pub async fn client_of(
        &self,
        grant: &GrantRow,
    ) -> Result<(crate::oauth::discovery::AsMetadata, ClientCredentials), RpcError> {
        let metadata = self.db.as_metadata(&grant.issuer).await?.ok_or_else(|| {
            RpcError::authorization_required(
                &grant.server_url,
                &[],
                "the authorization server's metadata is missing",
            )
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
        let credentials = self
            .credentials(
                &registration,
                self.config().server(&grant.server_url, Some(&grant.issuer)),
            )
            .await?;
        Ok((metadata, credentials))
    }

    /// Client credentials of a registration: the secret from the config file for a
    /// pre-registered client, else from the secret store.
    pub async fn credentials(
        &self,
        reg: &RegistrationRow,
        cfg: Option<&ServerConfig>,
    ) -> Result<ClientCredentials, RpcError> {
        let auth_method = AuthMethod::parse(&reg.token_endpoint_auth_method).map_err(|e| {
            RpcError::new(
                ErrorKind::Internal,
                format!("stored registration {}: {e}", reg.id),
            )
        })?;
        let client_secret = if !reg.has_client_secret {
            None
        } else if reg.kind == "pre-registered" {
            cfg.and_then(|c| c.client_secret.clone())
        } else {
            self.secrets.get(&keys::client_secret(&reg.id)).await?
        };
        if auth_method != AuthMethod::None && client_secret.is_none() {
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
        })
    }

    pub async fn grant_info(&self, g: &GrantRow) -> Result<GrantInfo, RpcError> {
        let reg = self.db.registration(&g.registration_id).await?;
        let access = self.cached_access_token(&g.id);
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
            scopes: g.scope_list(),
            state: g.state.clone(),
            needs_login_reason: g.needs_login_reason.clone(),
            has_refresh_token: g.has_refresh_token,
            access_token_expires_at: access.map(|a| a.expires_at),
            created_at: g.created_at,
            last_used_at: g.last_used_at,
            last_refresh_at: g.last_refresh_at,
            account: g.account.clone(),
        })
    }

    pub async fn find_grant(&self, grant: &str) -> Result<GrantRow, RpcError> {
        self.db
            .find_grant_as(grant, &lookup_key(grant))
            .await?
            .ok_or_else(|| {
                RpcError::new(
                    ErrorKind::NotFound,
                    format!("no grant for `{grant}`; see the grants with: mcp-auth list"),
                )
            })
    }

    /// Removes a grant's secrets, row and memory.
    pub async fn forget_grant(&self, g: &GrantRow) -> Result<(), RpcError> {
        self.secrets.delete(&keys::refresh_token(&g.id)).await?;
        self.secrets.delete(&keys::dpop_key(&g.id)).await?;
        self.db.delete_grant(&g.id).await?;
        self.forget_slot(&g.id);
        Ok(())
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
            secret_store: self.secrets.status(),
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
    }
}

/// Grant ids pass through; URLs are normalized the way logins store them.
fn lookup_key(server_or_id: &str) -> String {
    normalize_server_url(server_or_id).unwrap_or_else(|_| server_or_id.trim().to_string())
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
