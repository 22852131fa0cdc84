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
    let grant = broker
        .find_grant(&p.server, account)
        .await
        .map_err(|e| e.for_account(account))?;
    // A proof is as good as the token for a request: the same programs may have it.
    if broker.confirms_clients() {
        broker.confirm(&grant, peer, notifier).await?;
    }
    let proof = broker.sign_dpop_proof(&grant, &p).await?;
    tracing::debug!(grant = %grant.id, pid = ?peer.pid, method = %p.method, "DPoP proof signed");
    super::to_value(proof)
}
