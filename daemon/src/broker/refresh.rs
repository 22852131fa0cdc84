//! Renewing a grant's access token: single flight per grant (the slot's lock), the
//! rotated refresh token stored before the new access token is handed out, and a gate
//! that lets a stopping daemon start no refresh and wait for those in flight.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use mcp_authd_ipc::{ErrorKind, RpcError};
use tokio::sync::Notify;

use super::tokens::AccessToken;
use super::{Broker, server_error};
use crate::config::GrantKind;
use crate::oauth::token::{DpopSigner, Tokens, now, request_tokens};
use crate::store::{GrantRow, keys};

/// Refreshes in flight, and whether new ones may start: a stopping daemon starts none and
/// waits for those in flight, whose rotated refresh token must reach the store.
#[derive(Default)]
pub(super) struct RefreshGate {
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

    pub(super) fn close(&self) {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 = true;
    }

    pub(super) async fn drained(&self) {
        loop {
            let idle = self.idle.notified();
            if self.state.lock().unwrap_or_else(|p| p.into_inner()).1 == 0 {
                return;
            }
            idle.await;
        }
    }
}

impl Broker {
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

    /// Redeems the grant's refresh token. The rotated refresh token is stored before the
    /// new access token is returned; `invalid_grant` marks the grant as needing login.
    pub(super) async fn refresh(&self, grant: &GrantRow) -> Result<AccessToken, RpcError> {
        let Some(_in_flight) = self.refreshes.enter() else {
            return Err(RpcError::new(
                ErrorKind::Internal,
                format!(
                    "mcp-authd is stopping and starts no refresh; retry when it is back (see: {})",
                    mcp_authd_ipc::next_step::STATUS
                ),
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
                    "the access token expired and the authorization server gave no refresh token (why, and what may help: {})",
                    mcp_authd_ipc::next_step::inspect_command(&grant.server_url)
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
        match crate::machine::obtain(self.machine_reach(), kind, cfg, &credentials, &target).await {
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
}
