//! `grants.list`, `grants.get`, `grants.revoke`.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::{GrantRef, GrantsList, RevokeParams};
use serde_json::Value;

use crate::broker::Broker;

pub async fn list(broker: &Arc<Broker>) -> Result<Value, RpcError> {
    super::to_value(GrantsList {
        grants: broker.grants_info().await?,
    })
}

pub async fn get(broker: &Arc<Broker>, p: GrantRef) -> Result<Value, RpcError> {
    let row = broker
        .find_grant(&p.grant, super::account(&p.account)?)
        .await?;
    super::to_value(broker.grant_info(&row).await?)
}

pub async fn revoke(broker: &Arc<Broker>, p: RevokeParams) -> Result<Value, RpcError> {
    let account = super::account(&p.account)?;
    super::to_value(
        broker
            .revoke(&p.grant, account, p.remote.unwrap_or(true))
            .await?,
    )
}
