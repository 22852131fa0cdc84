//! `token.challenge`: a client reports a 401 or 403 and gets a token to retry with.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::ChallengeParams;
use serde_json::Value;

use super::login::send_pending;
use crate::broker::Broker;
use crate::peer::Peer;
use crate::reply::Notifier;

pub async fn apply(
    broker: &Arc<Broker>,
    params: ChallengeParams,
    notifier: Notifier,
    peer: &Arc<Peer>,
) -> Result<Value, RpcError> {
    let account = super::account(&params.account)?;
    let token = crate::step_up::handle(broker, &params, account, peer, &notifier, |pending| {
        send_pending(&notifier, pending)
    })
    .await?;
    super::to_value(token)
}
