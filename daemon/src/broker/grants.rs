//! Grants as callers see them: `token.get` from memory or through one refresh (one
//! freshness check for both), the hand-out (last use and audit record in one place),
//! lookups, what a grant looks like to `grants.get`, and forgetting one.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use mcp_authd_ipc::methods::{GrantInfo, TokenGetParams, TokenGetReply, TokenGetResult};
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::tokens::{AccessToken, GrantSlot, token_result};
use super::{Broker, GrantLock};
use crate::config::GrantKind;
use crate::oauth::discovery::normalize_server_url;
use crate::oauth::dpop::DpopKey;
use crate::oauth::token::{Tokens, now};
use crate::peer::Peer;
use crate::store::db::{GrantState, GrantType, RegistrationKind};
use crate::store::{GrantRow, keys};

/// How often, at most, `last_used_at` is written per grant: the hot path stays off disk.
const TOUCH_INTERVAL_SECS: i64 = 60;

/// What a login obtained, to be stored as a grant by [`Broker::save_login`].
pub struct NewLogin<'a> {
    /// The MCP server URL logged in to, its resource and authorization server.
    pub server_url: &'a str,
    pub resource: &'a str,
    pub issuer: &'a str,
    /// The client registration the tokens were issued to.
    pub registration_id: &'a str,
    pub obtained: Obtained,
}

/// What a login obtained.
pub struct Obtained {
    /// How the tokens were obtained (a browser login, or a grant without one).
    pub kind: GrantKind,
    pub tokens: Tokens,
    /// The key the tokens are bound to (DPoP), if any.
    pub dpop_key: Option<DpopKey>,
    /// The scopes asked for (the tokens' own, when the server said, win).
    pub scopes: Vec<String>,
    /// The account logged in to (empty: the default one) and the `login_hint` it sent.
    pub account_name: String,
    pub login_hint: Option<String>,
}

/// Who a token is handed to, as the audit log records it: the process, and the server
/// (or grant id) it asked for, as it wrote it.
#[derive(Clone, Copy)]
pub struct Recipient<'a> {
    pub peer: &'a Arc<Peer>,
    pub asked_for: &'a str,
}

/// What a `token.get` asks of a grant and its token: the one check of scopes and
/// freshness, shared by the memory-only answer and the full way, so that both hand out
/// the same tokens.
pub(crate) struct Ask<'a> {
    scopes: Option<&'a [String]>,
    min_valid: i64,
}

impl<'a> Ask<'a> {
    pub(crate) fn of(p: &'a TokenGetParams) -> Ask<'a> {
        Ask {
            scopes: p.scopes.as_deref(),
            min_valid: p
                .min_valid_secs
                .unwrap_or(mcp_authd_ipc::methods::DEFAULT_MIN_VALID_SECS)
                as i64,
        }
    }

    /// The scopes asked for that `granted`, the grant's scopes as stored (separated by
    /// spaces), lacks: none, the grant will do. No list is made, for the hot path.
    pub(crate) fn lacking<'g>(&self, granted: &'g str) -> impl Iterator<Item = &'a String> + 'g
    where
        'a: 'g,
    {
        self.scopes
            .into_iter()
            .flatten()
            .filter(move |s| !granted.split_ascii_whitespace().any(|g| g == s.as_str()))
    }

    /// Whether `token` is fresh enough at `now` (see [`AccessToken::serves`]).
    pub(crate) fn served_by(&self, token: &AccessToken, now: i64) -> bool {
        token.serves(self.min_valid, now)
    }
}

impl Broker {
    /// `token.get`: a cached token valid long enough, else one refresh shared by every
    /// concurrent caller; the hand-out is recorded for `to`.
    pub async fn token_get(
        &self,
        p: &TokenGetParams,
        to: Recipient<'_>,
    ) -> Result<TokenGetResult, RpcError> {
        let ask = Ask::of(p);
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
        let granted = grant.scope_list();
        let missing: Vec<&String> = ask.lacking(&grant.scopes).collect();
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
        if grant.state == GrantState::NeedsLogin {
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
        if let Some(t) = slot.current().filter(|t| ask.served_by(t, now())) {
            return self.hand_out(&slot, grant, t, now(), to).await;
        }
        let refreshing = slot.refreshing.lock().await;
        slot.check_not_forgotten(&grant)?;
        let token = match slot.current().filter(|t| ask.served_by(t, now())) {
            Some(t) => t,
            None => {
                let fresh = self.refresh(&grant).await?;
                slot.set(Some(fresh.clone()));
                fresh
            }
        };
        drop(refreshing);
        self.hand_out(&slot, grant, token, now(), to).await
    }

    /// `token.get` answered from memory alone, when it can be: the grant's lookup is
    /// remembered, the grant is active and has the scopes asked for, its token is good for
    /// `min_valid_secs`, its last use need not be written yet and `confirm_clients` lets
    /// the caller have it without asking. Otherwise `None`, with nothing recorded.
    /// `reply` writes the answer from the token where it lies, under its slot's lock: the
    /// hot path copies neither the token nor the grant's words.
    pub fn token_from_memory<R>(
        &self,
        p: &TokenGetParams,
        peer: &Arc<Peer>,
        now: i64,
        reply: impl FnOnce(&TokenGetReply<'_>) -> R,
    ) -> Option<R> {
        let ask = Ask::of(p);
        let grant = self
            .db
            .remembered_grant(&p.server, p.account.as_deref())??;
        if grant.state != GrantState::Active || ask.lacking(&grant.scopes).next().is_some() {
            return None;
        }
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&grant.id)
            .cloned()?;
        if now - slot.last_touch.load(Ordering::Relaxed) >= TOUCH_INTERVAL_SECS
            || !self.confirm.allows_at_once(&grant.id, peer)
        {
            return None;
        }
        let access = slot.access.lock().unwrap_or_else(|p| p.into_inner());
        let token = access.as_ref().filter(|t| ask.served_by(t, now))?;
        let to = Recipient {
            peer,
            asked_for: &p.server,
        };
        Some(self.handed_out(&grant.id, to, now, || {
            reply(&TokenGetReply {
                access_token: token.token.expose(),
                token_type: &token.token_type,
                expires_at: token.expires_at,
                expires_in: token.expires_at - now,
                scopes: &grant.scopes,
                grant: &grant.id,
            })
        }))
    }

    /// After a server answered 401 to a request carrying `rejected` (or no token): the
    /// grant's current token when it is not the rejected one, else a refresh
    /// (single-flight, like `token.get`); the hand-out is recorded for `to`.
    pub async fn renew_rejected(
        &self,
        grant: GrantRow,
        rejected: Option<&str>,
        to: Recipient<'_>,
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
        self.hand_out(&slot, grant, token, now, to).await
    }

    /// How long until the background refresh should renew this grant: now when no token
    /// is in memory (after a restart), else when its token is due.
    pub fn refresh_due_in(&self, grant_id: &str) -> std::time::Duration {
        self.cached_access_token(grant_id)
            .map_or(std::time::Duration::ZERO, |t| t.refresh_due_in())
    }

    /// A token leaves the daemon by the full way: its grant's last use is written (at most
    /// once a [`TOUCH_INTERVAL_SECS`]), then [`Self::handed_out`]. The memory-only answer
    /// of `token.get` goes only when no write is due, straight to [`Self::handed_out`].
    async fn hand_out(
        &self,
        slot: &GrantSlot,
        grant: GrantRow,
        token: AccessToken,
        now: i64,
        to: Recipient<'_>,
    ) -> Result<TokenGetResult, RpcError> {
        if now - slot.last_touch.swap(now, Ordering::Relaxed) >= TOUCH_INTERVAL_SECS
            && let Err(e) = self.db.touch(&grant.id, now).await
        {
            tracing::warn!("cannot record the use of grant {}: {e}", grant.id);
        }
        tracing::debug!(grant = %grant.id, pid = ?to.peer.pid, exe = ?to.peer.exe, "access token handed out");
        Ok(self.handed_out(&grant.id, to, now, || {
            token_result(grant.id.clone(), grant.scope_list(), &token, now)
        }))
    }

    /// Every token that leaves the daemon, by either way, passes here: the hand-out is
    /// counted for the audit log before `reply` makes the answer.
    fn handed_out<R>(
        &self,
        grant_id: &str,
        to: Recipient<'_>,
        now: i64,
        reply: impl FnOnce() -> R,
    ) -> R {
        self.audit.record(grant_id, to.asked_for, to.peer, now);
        reply()
    }

    /// Every grant, as stored.
    pub async fn grants(&self) -> Result<Vec<GrantRow>, crate::store::DbError> {
        self.db.list_grants().await
    }

    /// Every grant, as `grants.list` shows it.
    pub async fn grants_info(&self) -> Result<Vec<GrantInfo>, RpcError> {
        let mut grants = Vec::new();
        for row in self.db.list_grants().await? {
            grants.push(self.grant_info(&row).await?);
        }
        Ok(grants)
    }

    /// Every grant of one account (`""`: the default one) logged in through `server_url`,
    /// newest first.
    pub async fn grants_of_server(
        &self,
        server_url: &str,
        account_name: &str,
    ) -> Result<Vec<GrantRow>, RpcError> {
        Ok(self.db.grants_of_server(server_url, account_name).await?)
    }

    /// The grant of one account (`""`: the default one) for a resource at an issuer.
    pub async fn grant_by_key(
        &self,
        resource: &str,
        issuer: &str,
        account_name: &str,
    ) -> Result<Option<GrantRow>, RpcError> {
        Ok(self.db.grant_by_key(resource, issuer, account_name).await?)
    }

    /// Stores what a login obtained: the grant row (new or replacing the last login's),
    /// its refresh token and DPoP key, and the access token in memory; the grants of the
    /// account's former authorization server for this server are forgotten.
    pub async fn save_login(&self, login: NewLogin<'_>) -> Result<GrantInfo, RpcError> {
        let NewLogin {
            server_url,
            resource,
            issuer,
            registration_id,
            obtained:
                Obtained {
                    kind,
                    tokens,
                    dpop_key,
                    scopes,
                    account_name,
                    login_hint,
                },
        } = login;
        let existing = self
            .db
            .grant_by_key(resource, issuer, &account_name)
            .await?;
        let grant_id = existing
            .as_ref()
            .map(|g| g.id.clone())
            .unwrap_or_else(|| crate::store::new_id("g"));
        // A refresh of the grant in flight finishes before this login's tokens replace its
        // own, and none starts until they are in place.
        let _lock = self.lock_grant(&grant_id).await;
        if let Some(key) = &dpop_key {
            tracing::info!(server = %server_url, grant = %grant_id, jkt = %key.thumbprint(), token_type = tokens.token_type.as_str(), "DPoP key made for the grant");
        }
        self.save_dpop_key(&grant_id, dpop_key).await?;
        let refresh_key = keys::refresh_token(&grant_id);
        let stored = match &tokens.refresh_token {
            Some(rt) => self.refresh_tokens.set(&refresh_key, rt).await,
            None => self.refresh_tokens.delete(&refresh_key).await,
        };
        if let Err(e) = stored {
            tracing::warn!(server = %server_url, grant = %grant_id, "the login's refresh token is not stored yet: {e}");
        }
        let mut row = existing.unwrap_or_else(|| {
            new_grant_row(
                grant_id.clone(),
                server_url,
                resource,
                issuer,
                registration_id,
                &account_name,
            )
        });
        row.server_url = server_url.to_string();
        row.registration_id = registration_id.to_string();
        row.scopes = tokens.scopes.clone().unwrap_or(scopes).join(" ");
        row.grant_type = kind.grant_type();
        row.state = GrantState::Active;
        row.needs_login_reason = None;
        row.has_refresh_token = tokens.refresh_token.is_some();
        row.access_expires_at = Some(tokens.expires_at);
        // A new login may be another account: what this login's id_token says, or unknown.
        row.account = tokens.account.clone();
        row.login_hint = login_hint;
        row.updated_at = now();
        self.db.upsert_grant(&row).await?;
        // Only this account's: the other accounts of the server keep their grants.
        for old in self.db.grants_of_server(server_url, &account_name).await? {
            if old.id != grant_id {
                tracing::info!(server = %server_url, grant = %old.id, issuer = %old.issuer, "the server moved to {issuer}; forgetting the grant of its former authorization server");
                let lock = self.lock_grant(&old.id).await;
                self.forget_grant(&old, &lock).await?;
            }
        }
        self.cache_access_token(&grant_id, AccessToken::from_tokens(&tokens));
        tracing::info!(server = %server_url, grant = %grant_id, account = %account_name, "logged in");
        self.grant_info(&row).await
    }

    pub async fn grant_info(&self, g: &GrantRow) -> Result<GrantInfo, RpcError> {
        let reg = self.db.registration(&g.registration_id).await?;
        let access = self.cached_access_token(&g.id);
        let scopes = g.scope_list();
        // A grant without a browser renews by granting again: no refresh token is expected.
        let no_refresh_token =
            if g.has_refresh_token || g.grant_type != GrantType::AuthorizationCode {
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
            registration: reg.map_or(RegistrationKind::Missing, |r| r.kind),
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
                    "no grant for `{}`{}; see the grants with: {}",
                    crate::oauth::printable(grant, 300),
                    self.other_accounts(&key, account).await?,
                    mcp_authd_ipc::next_step::LIST
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
                format!("the grant is forgotten, but its refresh token is not yet deleted from the secret store: {e}; see: {}", mcp_authd_ipc::next_step::DOCTOR),
            )
        })
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
        state: GrantState::Active,
        needs_login_reason: None,
        has_refresh_token: false,
        access_expires_at: None,
        created_at: now,
        updated_at: now,
        last_used_at: None,
        last_refresh_at: None,
        account: None,
        grant_type: GrantType::AuthorizationCode,
        account_name: account_name.into(),
        login_hint: None,
    }
}

/// Grant ids pass through; URLs are normalized the way logins store them.
fn lookup_key(server_or_id: &str) -> String {
    normalize_server_url(server_or_id).unwrap_or_else(|_| server_or_id.trim().to_string())
}
