//! `grants.audit`: the recent token hand-outs of a grant (never a token).

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::audit::{AuditParams, AuditResult};
use serde_json::Value;

use crate::broker::Broker;

/// Hand-outs returned when the caller does not say.
const DEFAULT_LIMIT: u32 = 20;

pub async fn list(broker: &Arc<Broker>, p: AuditParams) -> Result<Value, RpcError> {
    let grant = broker.find_grant(&p.grant, None).await?;
    let hand_outs = broker
        .hand_outs(&grant.id, p.limit.unwrap_or(DEFAULT_LIMIT).min(1000))
        .await?;
    super::to_value(AuditResult {
        grant: grant.id,
        hand_outs,
    })
}
