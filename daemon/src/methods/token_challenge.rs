//! `token.challenge`: a client reports a 401 or 403 and gets a token to retry with.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::ChallengeParams;
use serde_json::Value;

use super::Notifier;
use super::login::send_pending;
use crate::broker::Broker;
use crate::peer::Peer;

pub async fn apply(
    broker: &Arc<Broker>,
    params: ChallengeParams,
    notifier: Notifier,
    peer: &Arc<Peer>,
) -> Result<Value, RpcError> {
    let server = params.server.clone();
    let account = super::account(&params.account)?.map(str::to_string);
    let account = account.as_deref();
    // `confirm_clients`: asked before the renewal when the grant is known, and in any case
    // for the grant the token is of (a login may have made a new one).
    let known = match broker.find_grant(&server, account).await {
        Ok(grant) if broker.confirm.is_enabled() => {
            crate::confirm::check(broker, &grant, peer, &notifier).await?;
            Some(grant.id)
        }
        _ => None,
    };
    let token =
        crate::challenge::handle(broker, params, |pending| send_pending(&notifier, pending))
            .await
            .map_err(|e| e.for_account(account))?;
    if broker.confirm.is_enabled() && known.as_deref() != Some(token.grant.as_str()) {
        let grant = broker.find_grant(&token.grant, None).await?;
        crate::confirm::check(broker, &grant, peer, &notifier).await?;
    }
    // A token given to retry with is a hand-out like any other.
    broker
        .audit
        .record(&token.grant, &server, peer, crate::oauth::token::now());
    super::to_value(token)
}
