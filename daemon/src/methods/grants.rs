//! `grants.list`, `grants.get`, `grants.revoke`.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::{GrantRef, GrantsList, RevokeParams, RevokeResult, TokenRevocation};
use serde_json::Value;

use crate::broker::Broker;
use crate::oauth::OAuthError;
use crate::oauth::token::revoke as revoke_at_as;
use crate::store::keys;

pub async fn list(broker: &Arc<Broker>) -> Result<Value, RpcError> {
    let mut grants = Vec::new();
    for row in broker.db.list_grants().await? {
        grants.push(broker.grant_info(&row).await?);
    }
    super::to_value(GrantsList { grants })
}

pub async fn get(broker: &Arc<Broker>, p: GrantRef) -> Result<Value, RpcError> {
    let row = broker.find_grant(&p.grant).await?;
    super::to_value(broker.grant_info(&row).await?)
}

/// Revokes at the authorization server (RFC 7009) when asked and offered, then forgets the
/// grant locally whatever the server said: the user wants it gone from this machine.
pub async fn revoke(broker: &Arc<Broker>, p: RevokeParams) -> Result<Value, RpcError> {
    let row = broker.find_grant(&p.grant).await?;
    let info = broker.grant_info(&row).await?;
    let (remote, tokens) = if !p.remote.unwrap_or(true) {
        ("skipped".to_string(), Vec::new())
    } else {
        match revoke_remotely(broker, &row).await {
            Ok(Some(tokens)) => (summary(&tokens), tokens),
            Ok(None) => ("not_supported".to_string(), Vec::new()),
            Err(why) => {
                tracing::warn!(grant = %row.id, "revocation at the authorization server failed: {why}");
                (format!("failed: {why}"), Vec::new())
            }
        }
    };
    broker.forget_grant(&row).await?;
    tracing::info!(grant = %row.id, remote = %remote, "grant revoked");
    super::to_value(RevokeResult {
        grant: info,
        remote,
        tokens,
    })
}

const REVOKED: &str = "revoked";
const NOT_SUPPORTED: &str = "not_supported";
const NOT_HELD: &str = "not_held";
const FAILED: &str = "failed";

/// The one-word `remote` of a revocation that reached the server: a failure of either
/// token is a failure; a token type the server does not revoke is not.
fn summary(tokens: &[TokenRevocation]) -> String {
    let failed: Vec<String> = tokens
        .iter()
        .filter(|t| t.outcome == FAILED)
        .map(|t| format!("{}: {}", t.token, t.detail.as_deref().unwrap_or("")))
        .collect();
    if !failed.is_empty() {
        format!("failed: {}", failed.join("; "))
    } else if tokens.iter().any(|t| t.outcome == REVOKED) {
        REVOKED.into()
    } else {
        "nothing_to_revoke".into()
    }
}

/// The refresh token first (RFC 7009 §2.1: most servers then end the whole grant), then
/// the access token in memory. `None`: the server has no revocation endpoint.
async fn revoke_remotely(
    broker: &Broker,
    row: &crate::store::GrantRow,
) -> Result<Option<Vec<TokenRevocation>>, String> {
    let (metadata, credentials) = broker.client_of(row).await.map_err(|e| e.message)?;
    let Some(endpoint) = metadata.revocation_endpoint.as_deref() else {
        return Ok(None);
    };
    let refresh_token = broker
        .secrets
        .get(&keys::refresh_token(&row.id))
        .await
        .map_err(|e| e.to_string())?;
    let access_token = broker.cached_access_token(&row.id).map(|a| a.token);
    let mut tokens = Vec::new();
    for (token, kind) in [
        (refresh_token, "refresh_token"),
        (access_token, "access_token"),
    ] {
        let (outcome, detail) = match token {
            None => (NOT_HELD, None),
            Some(token) => {
                match revoke_at_as(&broker.http, endpoint, &credentials, &token, kind).await {
                    Ok(()) => (REVOKED, None),
                    Err(OAuthError::TokenError(e)) if e.error == "unsupported_token_type" => {
                        (NOT_SUPPORTED, Some(e.to_string()))
                    }
                    Err(OAuthError::TokenError(e)) => (FAILED, Some(e.to_string())),
                    Err(e) => (FAILED, Some(e.to_string())),
                }
            }
        };
        tokens.push(TokenRevocation {
            token: kind.into(),
            outcome: outcome.into(),
            detail,
        });
    }
    Ok(Some(tokens))
}
