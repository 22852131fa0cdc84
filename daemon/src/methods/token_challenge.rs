//! `token.challenge`: a client reports a 401 or 403 and gets a token to retry with.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::ChallengeParams;
use serde_json::Value;

use super::login::send_pending;
use crate::broker::Broker;
use crate::peer::Peer;
use crate::reply::Notifier;
use crate::step_up::Caller;

pub async fn apply(
    broker: &Arc<Broker>,
    params: ChallengeParams,
    notifier: Notifier,
    peer: &Arc<Peer>,
) -> Result<Value, RpcError> {
    let account = super::account(&params.account)?;
    // `confirm_clients`: asked before the renewal when the grant is known, and in any case
    // for the grant the token is of (a login may have made a new one: `step_up` asks).
    let known = match broker.find_grant(&params.server, account).await {
        Ok(grant) if broker.confirms_clients() => {
            broker.confirm(&grant, peer, &notifier).await?;
            Some(grant.id)
        }
        _ => None,
    };
    let caller = Caller {
        peer,
        notifier: &notifier,
        confirmed: known.as_deref(),
    };
    // A token given to retry with is a hand-out like any other: the broker records it.
    let token = crate::step_up::handle(broker, &params, caller, |pending| {
        send_pending(&notifier, pending)
    })
    .await
    .map_err(|e| e.for_account(account))?;
    super::to_value(token)
}
