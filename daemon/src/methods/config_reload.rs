//! `config.reload`, and SIGHUP: re-reads the config file (see `broker::reload`).

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use serde_json::Value;

use crate::broker::Broker;

pub async fn apply(broker: &Arc<Broker>) -> Result<Value, RpcError> {
    super::to_value(broker.reload_config()?)
}
