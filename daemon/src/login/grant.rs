//! The last step of every login: the grant stored, its tokens in place.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::GrantInfo;

use crate::broker::{AccessToken, Broker, new_grant_row};
use crate::config::GrantKind;
use crate::oauth::discovery::Discovery;
use crate::oauth::dpop::DpopKey;
use crate::oauth::token::now;
use crate::store::db::STATE_ACTIVE;
use crate::store::{RegistrationRow, keys, new_id};

/// What a login obtained.
pub(super) struct Obtained {
    pub(super) kind: GrantKind,
    pub(super) tokens: crate::oauth::token::Tokens,
    /// The key the tokens are bound to (DPoP), if any.
    pub(super) dpop_key: Option<DpopKey>,
    /// The scopes asked for (the tokens' own, when the server said, win).
    pub(super) scopes: Vec<String>,
    /// The account logged in to (empty: the default one) and the `login_hint` it sent.
    pub(super) account_name: String,
    pub(super) login_hint: Option<String>,
}

/// Stores what a login obtained: the grant row (new or replacing the last login's), its
/// refresh token and DPoP key, and the access token in memory.
pub(super) async fn save_grant(
    broker: &Arc<Broker>,
    server_url: &str,
    discovery: &Discovery,
    registration: &RegistrationRow,
    obtained: Obtained,
) -> Result<GrantInfo, RpcError> {
    let Obtained {
        kind,
        tokens,
        dpop_key,
        scopes,
        account_name,
        login_hint,
    } = obtained;
    let metadata = &discovery.metadata;
    let existing = broker
        .db
        .grant_by_key(&discovery.resource, &metadata.issuer, &account_name)
        .await?;
    let grant_id = existing
        .as_ref()
        .map(|g| g.id.clone())
        .unwrap_or_else(|| new_id("g"));
    // A refresh of the grant in flight finishes before this login's tokens replace its
    // own, and none starts until they are in place.
    let _lock = broker.lock_grant(&grant_id).await;
    if let Some(key) = &dpop_key {
        tracing::info!(server = %server_url, grant = %grant_id, jkt = %key.thumbprint(), token_type = tokens.token_type.as_str(), "DPoP key made for the grant");
    }
    broker.save_dpop_key(&grant_id, dpop_key).await?;
    let refresh_key = keys::refresh_token(&grant_id);
    let stored = match &tokens.refresh_token {
        Some(rt) => broker.refresh_tokens.set(&refresh_key, rt).await,
        None => broker.refresh_tokens.delete(&refresh_key).await,
    };
    if let Err(e) = stored {
        tracing::warn!(server = %server_url, grant = %grant_id, "the login's refresh token is not stored yet: {e}");
    }
    let mut row = existing.unwrap_or_else(|| {
        new_grant_row(
            grant_id.clone(),
            server_url,
            &discovery.resource,
            &metadata.issuer,
            &registration.id,
            &account_name,
        )
    });
    row.server_url = server_url.to_string();
    row.registration_id = registration.id.clone();
    row.scopes = tokens.scopes.clone().unwrap_or(scopes).join(" ");
    row.grant_type = kind.as_str().into();
    row.state = STATE_ACTIVE.into();
    row.needs_login_reason = None;
    row.has_refresh_token = tokens.refresh_token.is_some();
    row.access_expires_at = Some(tokens.expires_at);
    // A new login may be another account: what this login's id_token says, or unknown.
    row.account = tokens.account.clone();
    row.login_hint = login_hint;
    row.updated_at = now();
    broker.db.upsert_grant(&row).await?;
    // Only this account's: the other accounts of the server keep their grants.
    for old in broker
        .db
        .grants_of_server(server_url, &account_name)
        .await?
    {
        if old.id != grant_id {
            tracing::info!(server = %server_url, grant = %old.id, issuer = %old.issuer, "the server moved to {}; forgetting the grant of its former authorization server", metadata.issuer);
            let lock = broker.lock_grant(&old.id).await;
            broker.forget_grant(&old, &lock).await?;
        }
    }
    broker.cache_access_token(&grant_id, AccessToken::from_tokens(&tokens));
    tracing::info!(server = %server_url, grant = %grant_id, account = %account_name, "logged in");
    broker.grant_info(&row).await
}
