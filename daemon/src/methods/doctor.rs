//! `doctor`: what only the daemon can check (see `broker::doctor`).

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use serde_json::Value;

use crate::broker::Broker;

pub async fn apply(broker: &Arc<Broker>) -> Result<Value, RpcError> {
    super::to_value(broker.doctor().await?)
}
