//! `token.get`: an access token for a server, refreshed when needed.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::TokenGetParams;
use serde_json::Value;

use crate::broker::Broker;

pub async fn apply(broker: &Arc<Broker>, params: TokenGetParams) -> Result<Value, RpcError> {
    super::to_value(broker.token_get(params).await?)
}
