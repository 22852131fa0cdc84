//! `token.dpop_proof`: a DPoP proof (RFC 9449 §4, §7) signed with a DPoP-bound grant's
//! key, so any client can use the grant's tokens while the key stays in the daemon.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::DpopProofParams;
use serde_json::Value;

use crate::broker::Broker;
use crate::peer::Peer;

pub async fn apply(
    broker: &Arc<Broker>,
    p: DpopProofParams,
    peer: &Arc<Peer>,
    notifier: &crate::reply::Notifier,
) -> Result<Value, RpcError> {
    let account = super::account(&p.account)?;
    super::to_value(crate::hand_out::dpop_proof(broker, &p, account, peer, notifier).await?)
}
