//! `login`: a browser login; the URL goes to the caller as a `login.pending` notification.

use std::sync::Arc;

use mcp_authd_ipc::methods::{LOGIN_PENDING, LoginParams, LoginPending};
use mcp_authd_ipc::{Notification, RpcError};
use serde_json::Value;

use crate::broker::Broker;
use crate::reply::{Notifier, Outgoing};

pub async fn apply(
    broker: &Arc<Broker>,
    params: LoginParams,
    notifier: Notifier,
) -> Result<Value, RpcError> {
    let account = super::account(&params.account)?.map(str::to_string);
    let grant = crate::login::login(broker, params, None, |pending| {
        send_pending(&notifier, pending)
    })
    .await
    .map_err(|e| e.for_account(account.as_deref()))?;
    super::to_value(grant)
}

/// Tells the caller where the browser login is waiting.
pub fn send_pending(notifier: &Notifier, pending: &LoginPending) {
    if let Ok(params) = serde_json::to_value(pending) {
        let _ = notifier.try_send(Outgoing::Notification(Notification::new(
            LOGIN_PENDING,
            params,
        )));
    }
}
