//! `token.dpop_proof`: a DPoP proof (RFC 9449 §4, §7) signed with a DPoP-bound grant's
//! key, so any client can use the grant's tokens while the key stays in the daemon.

use std::sync::Arc;

use mcp_authd_ipc::methods::{DpopProofParams, DpopProofResult};
use mcp_authd_ipc::{ErrorKind, RpcError};
use serde_json::Value;
use url::Url;

use crate::broker::Broker;
use crate::oauth::dpop;
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
        crate::confirm::check(broker, &grant, peer, notifier).await?;
    }
    let Some(key) = broker.dpop_key(&grant.id).await? else {
        return Err(RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "the grant for {} is not DPoP-bound: send its token as a Bearer token, without a proof",
                grant.server_url
            ),
        ));
    };
    // Proofs only for the grant's own server: its tokens go nowhere else.
    let origin = |u: &str| Url::parse(u).ok().map(|u| u.origin());
    let at_server = origin(&p.url).is_some_and(|o| {
        Some(&o) == origin(&grant.server_url).as_ref()
            || Some(&o) == origin(&grant.resource).as_ref()
    });
    if !at_server {
        return Err(RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "a proof for `{}` was asked of the grant for {}: proofs are signed only for URLs at that server",
                crate::oauth::printable(&p.url, 200),
                grant.server_url
            ),
        )
        .with_server(&grant.server_url));
    }
    let ath = match (&p.access_token, &p.ath) {
        (Some(token), _) => Some(dpop::ath(token)),
        (None, Some(ath)) => Some(ath.clone()),
        (None, None) => None,
    };
    let nonce = broker.dpop_nonce_for(&p.url, p.nonce.as_deref());
    let proof = key
        .proof(
            &p.method,
            &p.url,
            ath.as_deref(),
            nonce.as_deref(),
            crate::oauth::token::now(),
        )
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    tracing::debug!(grant = %grant.id, pid = ?peer.pid, method = %p.method, "DPoP proof signed");
    super::to_value(DpopProofResult {
        proof,
        grant: grant.id,
    })
}
