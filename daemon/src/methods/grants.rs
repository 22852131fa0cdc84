//! `grants.list`, `grants.get`, `grants.revoke`.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::{GrantRef, GrantsList, RevokeParams, RevokeResult};
use serde_json::Value;

use crate::broker::Broker;
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
    let row = broker
        .find_grant(&p.grant, super::account(&p.account)?)
        .await?;
    super::to_value(broker.grant_info(&row).await?)
}

/// Revokes at the authorization server (RFC 7009) when asked and offered, then forgets the
/// grant locally whatever the server said: the user wants it gone from this machine.
/// Under the grant's refresh lock: a refresh in flight finishes first, so the newest
/// refresh token is the one revoked and none is stored after the grant is forgotten.
pub async fn revoke(broker: &Arc<Broker>, p: RevokeParams) -> Result<Value, RpcError> {
    let found = broker
        .find_grant(&p.grant, super::account(&p.account)?)
        .await?;
    let lock = broker.lock_grant(&found.id).await;
    // Read again under the lock: the refresh it waited for may have changed the row.
    let row = broker.find_grant(&found.id, None).await?;
    let info = broker.grant_info(&row).await?;
    let remote = if !p.remote.unwrap_or(true) {
        "skipped".to_string()
    } else {
        match revoke_remotely(broker, &row).await {
            Ok(outcome) => outcome,
            Err(why) => {
                tracing::warn!(grant = %row.id, "revocation at the authorization server failed: {why}");
                format!("failed: {why}")
            }
        }
    };
    broker.forget_grant(&row, &lock).await?;
    tracing::info!(grant = %row.id, remote = %remote, "grant revoked");
    super::to_value(RevokeResult {
        grant: info,
        remote,
    })
}

async fn revoke_remotely(broker: &Broker, row: &crate::store::GrantRow) -> Result<String, String> {
    let (metadata, credentials) = broker.client_of(row).await.map_err(|e| e.message)?;
    let Some(endpoint) = metadata.revocation_endpoint.as_deref() else {
        return Ok("not_supported".into());
    };
    if let Some(rt) = broker
        .refresh_tokens
        .get(&keys::refresh_token(&row.id))
        .await
        .map_err(|e| e.to_string())?
    {
        revoke_at_as(&broker.http, endpoint, &credentials, &rt, "refresh_token")
            .await
            .map_err(|e| e.to_string())?;
    }
    if let Some(at) = broker.cached_access_token(&row.id) {
        revoke_at_as(
            &broker.http,
            endpoint,
            &credentials,
            &at.token,
            "access_token",
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    Ok("revoked".into())
}
