//! One module per protocol method; this file routes a request to it.

mod audit;
mod clients;
mod config_reload;
mod doctor;
mod grants;
mod login;
mod login_paste;
mod secret;
mod server_headers;
mod status;
mod token_challenge;
mod token_dpop_proof;
pub(crate) mod token_get;

use std::sync::Arc;

use mcp_authd_ipc::clients as c;
use mcp_authd_ipc::methods as m;
use mcp_authd_ipc::{ErrorKind, Request, RpcError};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::broker::Broker;
use crate::connection::Outgoing;
use crate::peer::Peer;

pub use config_reload::reload as reload_config;

/// Where a method sends notifications for its caller's connection.
pub type Notifier = mpsc::Sender<Outgoing>;

pub async fn dispatch(
    broker: &Arc<Broker>,
    request: Request,
    notifier: Notifier,
    peer: &Arc<Peer>,
) -> Result<Value, RpcError> {
    let params = request.params;
    match request.method.as_str() {
        m::STATUS => status::apply(broker).await,
        m::DOCTOR => doctor::apply(broker).await,
        m::CONFIG_RELOAD => config_reload::apply(broker).await,
        m::TOKEN_GET => token_get::apply(broker, parse(params)?, peer, &notifier).await,
        m::TOKEN_CHALLENGE => token_challenge::apply(broker, parse(params)?, notifier, peer).await,
        m::TOKEN_DPOP_PROOF => {
            token_dpop_proof::apply(broker, parse(params)?, peer, &notifier).await
        }
        m::LOGIN => login::apply(broker, parse(params)?, notifier).await,
        m::LOGIN_PASTE => login_paste::apply(broker, parse(params)?),
        m::SERVER_HEADERS => server_headers::apply(broker, parse(params)?).await,
        m::GRANTS_LIST => grants::list(broker).await,
        m::GRANTS_GET => grants::get(broker, parse(params)?).await,
        m::GRANTS_REVOKE => grants::revoke(broker, parse(params)?).await,
        m::SECRET_SET => secret::set(broker, parse(params)?).await,
        m::SECRET_DELETE => secret::delete(broker, parse(params)?).await,
        mcp_authd_ipc::audit::GRANTS_AUDIT => audit::list(broker, parse(params)?).await,
        c::CLIENTS_PENDING => clients::pending(broker),
        c::CLIENTS_ANSWER => clients::answer(broker, parse(params)?).await,
        c::CLIENTS_LIST => clients::list(broker, parse(params)?).await,
        c::CLIENTS_FORGET => clients::forget(broker, parse(params)?).await,
        other => Err(RpcError::new(
            ErrorKind::MethodNotFound,
            format!(
                "no method `{}`; see ipc-proto/PROTOCOL.md for the methods",
                crate::oauth::printable(other, 64)
            ),
        )),
    }
}

fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    let params = if params.is_null() {
        Value::Object(Default::default())
    } else {
        params
    };
    serde_json::from_value(params)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, format!("invalid params: {e}")))
}

/// A request's `account`, checked: `None` is the default account.
pub(crate) fn account(account: &Option<String>) -> Result<Option<&str>, RpcError> {
    match account.as_deref() {
        None => Ok(None),
        Some(name) => mcp_authd_ipc::methods::check_account_name(name)
            .map(|()| Some(name))
            .map_err(|why| RpcError::new(ErrorKind::InvalidParams, format!("`account`: {why}"))),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, RpcError> {
    serde_json::to_value(v).map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))
}
