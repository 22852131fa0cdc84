//! `server.headers`: the extra headers the config file gives for an MCP server, for
//! `mcp-auth proxy`. The daemon is the one reader of the config file, so a proxy sees
//! what `mcp-auth reload` made current.

use std::sync::Arc;

use mcp_authd_ipc::methods::{ServerHeadersParams, ServerHeadersResult};
use mcp_authd_ipc::{ErrorKind, RpcError};
use serde_json::Value;

use crate::broker::Broker;
use crate::oauth::discovery::normalize_server_url;

pub async fn apply(broker: &Arc<Broker>, p: ServerHeadersParams) -> Result<Value, RpcError> {
    let server = normalize_server_url(&p.server)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    let headers = broker
        .config()
        .server(&server, None)
        .map(|c| c.headers.clone())
        .unwrap_or_default();
    super::to_value(ServerHeadersResult { headers })
}
