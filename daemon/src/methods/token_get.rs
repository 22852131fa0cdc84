//! `token.get`: an access token for a server, refreshed when needed (or, for a server
//! configured with a grant without a browser, obtained at the first ask: see
//! `hand_out`); every hand-out is written to the audit log with the process it went to
//! (by the broker).

use std::sync::Arc;

use mcp_authd_ipc::methods::TokenGetParams;
use mcp_authd_ipc::{Reply, RequestId, RpcError};
use serde_json::Value;

use crate::broker::Broker;
use crate::peer::Peer;
use crate::reply::Notifier;

pub async fn apply(
    broker: &Arc<Broker>,
    params: TokenGetParams,
    peer: &Arc<Peer>,
    notifier: &Notifier,
) -> Result<Value, RpcError> {
    let account = super::account(&params.account)?;
    super::to_value(crate::hand_out::token(broker, &params, account, peer, notifier).await?)
}

/// The hot path of `token.get`, for the connection to answer inline with the params it
/// parsed: the reply line when the grant and a good token are in memory and nothing needs
/// a disk write, else `None` (the request then goes the full way).
pub fn from_memory(
    broker: &Broker,
    id: &RequestId,
    params: &TokenGetParams,
    peer: &Arc<Peer>,
) -> Option<Vec<u8>> {
    broker
        .token_from_memory(params, peer, crate::oauth::token::now(), |result| {
            serde_json::to_vec(&Reply::new(id, result)).ok()
        })
        .flatten()
}
