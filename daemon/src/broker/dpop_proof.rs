//! DPoP proofs (RFC 9449 §4, §7) signed with a DPoP-bound grant's key, which never
//! leaves the broker: any client can use the grant's tokens while the key stays here.

use mcp_authd_ipc::methods::{DpopProofParams, DpopProofResult};
use mcp_authd_ipc::{ErrorKind, RpcError};
use url::Url;

use super::Broker;
use crate::oauth::dpop;
use crate::store::GrantRow;

impl Broker {
    /// A proof for `p.method` at `p.url`, a URL of the grant's own server, with the
    /// nonce the server last asked for; `invalid_params` for a grant that is not
    /// DPoP-bound or a URL elsewhere.
    pub async fn sign_dpop_proof(
        &self,
        grant: &GrantRow,
        p: &DpopProofParams,
    ) -> Result<DpopProofResult, RpcError> {
        let Some(key) = self.dpop_key(&grant.id).await? else {
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
        let nonce = self.dpop_nonce_for(&p.url, p.nonce.as_deref());
        let proof = key
            .proof(
                &p.method,
                &p.url,
                ath.as_deref(),
                nonce.as_deref(),
                crate::oauth::token::now(),
            )
            .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
        Ok(DpopProofResult {
            proof,
            grant: grant.id.clone(),
        })
    }
}
