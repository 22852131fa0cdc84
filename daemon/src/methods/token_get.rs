//! `token.get`: an access token for a server, refreshed when needed; every hand-out is
//! written to the audit log with the process it went to.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::TokenGetParams;
use serde_json::Value;

use crate::broker::Broker;
use crate::peer::Peer;

pub async fn apply(
    broker: &Arc<Broker>,
    params: TokenGetParams,
    peer: &Arc<Peer>,
) -> Result<Value, RpcError> {
    let server = params.server.clone();
    let result = broker.token_get(params).await?;
    // The hand-out is queued for the audit log before the token leaves.
    broker
        .audit
        .record(&result.grant, &server, peer, crate::oauth::token::now())
        .await;
    tracing::debug!(grant = %result.grant, pid = ?peer.pid, exe = ?peer.exe, "access token handed out");
    super::to_value(result)
}
