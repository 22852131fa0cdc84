//! `clients.pending`, `clients.answer`, `clients.list`, `clients.forget`: the user's side
//! of `confirm_clients` (`mcp-auth approve`, `inspect`, `forget-client`).

use std::sync::Arc;

use mcp_authd_ipc::clients::{
    AnswerParams, ClientsResult, ForgetParams, ForgetResult, PendingList,
};
use mcp_authd_ipc::methods::GrantRef;
use mcp_authd_ipc::{ErrorKind, RpcError};
use serde_json::Value;

use crate::broker::Broker;

pub fn pending(broker: &Arc<Broker>) -> Result<Value, RpcError> {
    super::to_value(PendingList {
        requests: broker.pending_confirmations(),
    })
}

pub async fn answer(broker: &Arc<Broker>, p: AnswerParams) -> Result<Value, RpcError> {
    super::to_value(broker.answer_confirmation(p.id, p.answer).await?)
}

pub async fn list(broker: &Arc<Broker>, p: GrantRef) -> Result<Value, RpcError> {
    let grant = broker
        .find_grant(&p.grant, super::account(&p.account)?)
        .await?;
    super::to_value(ClientsResult {
        clients: broker.client_decisions(&grant.id),
        grant: grant.id,
    })
}

pub async fn forget(broker: &Arc<Broker>, p: ForgetParams) -> Result<Value, RpcError> {
    let grant = broker
        .find_grant(&p.grant, super::account(&p.account)?)
        .await?;
    match broker.forget_client(&grant.id, &p.program).await? {
        Some(forgotten) => super::to_value(ForgetResult {
            grant: grant.id,
            forgotten,
        }),
        None => Err(RpcError::new(
            ErrorKind::NotFound,
            format!(
                "grant {} has no decision for `{}`; see its programs: {}",
                grant.id,
                crate::oauth::printable(&p.program, 300),
                mcp_authd_ipc::next_step::inspect_command(&grant.id)
            ),
        )),
    }
}
