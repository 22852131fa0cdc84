//! `token.challenge`: a client reports a 401 or 403 and gets a token to retry with.

use std::sync::Arc;

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::ChallengeParams;
use serde_json::Value;

use super::Notifier;
use super::login::send_pending;
use crate::broker::Broker;

pub async fn apply(
    broker: &Arc<Broker>,
    params: ChallengeParams,
    notifier: Notifier,
) -> Result<Value, RpcError> {
    let token =
        crate::challenge::handle(broker, params, |pending| send_pending(&notifier, pending))
            .await?;
    super::to_value(token)
}
