//! `login.paste`: the authorization response a user pasted, for a `manual` login.

use mcp_authd_ipc::RpcError;
use mcp_authd_ipc::methods::{LoginPasteParams, LoginPasteResult};
use serde_json::Value;

use crate::broker::Broker;

pub fn apply(broker: &Broker, params: LoginPasteParams) -> Result<Value, RpcError> {
    let account = super::account(&params.account)?;
    crate::login::paste(broker, &params.server, account, &params.response)?;
    super::to_value(LoginPasteResult { accepted: true })
}
