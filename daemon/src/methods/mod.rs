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

use mcp_authd_ipc::audit::AuditParams;
use mcp_authd_ipc::clients::{self as c, AnswerParams, ForgetParams};
use mcp_authd_ipc::methods::{
    self as m, ChallengeParams, DpopProofParams, GrantRef, LoginParams, LoginPasteParams,
    RevokeParams, SecretRef, SecretSetParams, ServerHeadersParams, TokenGetParams,
};
use mcp_authd_ipc::{ErrorKind, RpcError};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::broker::Broker;
use crate::peer::Peer;
use crate::reply::Notifier;

/// A request, parsed once where its line is read: the method with its typed params.
/// Nothing after the connection sees the raw JSON.
pub enum Command {
    Status,
    Doctor,
    ConfigReload,
    TokenGet(TokenGetParams),
    TokenChallenge(ChallengeParams),
    TokenDpopProof(DpopProofParams),
    Login(LoginParams),
    LoginPaste(LoginPasteParams),
    ServerHeaders(ServerHeadersParams),
    GrantsList,
    GrantsGet(GrantRef),
    GrantsRevoke(RevokeParams),
    SecretSet(SecretSetParams),
    SecretDelete(SecretRef),
    GrantsAudit(AuditParams),
    ClientsPending,
    ClientsAnswer(AnswerParams),
    ClientsList(GrantRef),
    ClientsForget(ForgetParams),
}

impl Command {
    /// The command a request names, with its params checked against the method's
    /// shape: `method_not_found` or `invalid_params` otherwise.
    pub fn parse(method: &str, params: Value) -> Result<Command, RpcError> {
        Ok(match method {
            m::STATUS => Command::Status,
            m::DOCTOR => Command::Doctor,
            m::CONFIG_RELOAD => Command::ConfigReload,
            m::TOKEN_GET => Command::TokenGet(parse(params)?),
            m::TOKEN_CHALLENGE => Command::TokenChallenge(parse(params)?),
            m::TOKEN_DPOP_PROOF => Command::TokenDpopProof(parse(params)?),
            m::LOGIN => Command::Login(parse(params)?),
            m::LOGIN_PASTE => Command::LoginPaste(parse(params)?),
            m::SERVER_HEADERS => Command::ServerHeaders(parse(params)?),
            m::GRANTS_LIST => Command::GrantsList,
            m::GRANTS_GET => Command::GrantsGet(parse(params)?),
            m::GRANTS_REVOKE => Command::GrantsRevoke(parse(params)?),
            m::SECRET_SET => Command::SecretSet(parse(params)?),
            m::SECRET_DELETE => Command::SecretDelete(parse(params)?),
            mcp_authd_ipc::audit::GRANTS_AUDIT => Command::GrantsAudit(parse(params)?),
            c::CLIENTS_PENDING => Command::ClientsPending,
            c::CLIENTS_ANSWER => Command::ClientsAnswer(parse(params)?),
            c::CLIENTS_LIST => Command::ClientsList(parse(params)?),
            c::CLIENTS_FORGET => Command::ClientsForget(parse(params)?),
            other => {
                return Err(RpcError::new(
                    ErrorKind::MethodNotFound,
                    format!(
                        "no method `{}`; see ipc-proto/PROTOCOL.md for the methods",
                        crate::oauth::printable(other, 64)
                    ),
                ));
            }
        })
    }

    /// The method's name, for the log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => m::STATUS,
            Command::Doctor => m::DOCTOR,
            Command::ConfigReload => m::CONFIG_RELOAD,
            Command::TokenGet(_) => m::TOKEN_GET,
            Command::TokenChallenge(_) => m::TOKEN_CHALLENGE,
            Command::TokenDpopProof(_) => m::TOKEN_DPOP_PROOF,
            Command::Login(_) => m::LOGIN,
            Command::LoginPaste(_) => m::LOGIN_PASTE,
            Command::ServerHeaders(_) => m::SERVER_HEADERS,
            Command::GrantsList => m::GRANTS_LIST,
            Command::GrantsGet(_) => m::GRANTS_GET,
            Command::GrantsRevoke(_) => m::GRANTS_REVOKE,
            Command::SecretSet(_) => m::SECRET_SET,
            Command::SecretDelete(_) => m::SECRET_DELETE,
            Command::GrantsAudit(_) => mcp_authd_ipc::audit::GRANTS_AUDIT,
            Command::ClientsPending => c::CLIENTS_PENDING,
            Command::ClientsAnswer(_) => c::CLIENTS_ANSWER,
            Command::ClientsList(_) => c::CLIENTS_LIST,
            Command::ClientsForget(_) => c::CLIENTS_FORGET,
        }
    }
}

/// Runs a command to its result (a request that may wait: the connection's memory-only
/// answer of `token.get` is [`token_get::from_memory`]).
pub async fn dispatch(
    broker: &Arc<Broker>,
    command: Command,
    notifier: Notifier,
    peer: &Arc<Peer>,
) -> Result<Value, RpcError> {
    match command {
        Command::Status => status::apply(broker).await,
        Command::Doctor => doctor::apply(broker).await,
        Command::ConfigReload => config_reload::apply(broker).await,
        Command::TokenGet(p) => token_get::apply(broker, p, peer, &notifier).await,
        Command::TokenChallenge(p) => token_challenge::apply(broker, p, notifier, peer).await,
        Command::TokenDpopProof(p) => token_dpop_proof::apply(broker, p, peer, &notifier).await,
        Command::Login(p) => login::apply(broker, p, notifier).await,
        Command::LoginPaste(p) => login_paste::apply(broker, p),
        Command::ServerHeaders(p) => server_headers::apply(broker, p).await,
        Command::GrantsList => grants::list(broker).await,
        Command::GrantsGet(p) => grants::get(broker, p).await,
        Command::GrantsRevoke(p) => grants::revoke(broker, p).await,
        Command::SecretSet(p) => secret::set(broker, p).await,
        Command::SecretDelete(p) => secret::delete(broker, p).await,
        Command::GrantsAudit(p) => audit::list(broker, p).await,
        Command::ClientsPending => clients::pending(broker),
        Command::ClientsAnswer(p) => clients::answer(broker, p).await,
        Command::ClientsList(p) => clients::list(broker, p).await,
        Command::ClientsForget(p) => clients::forget(broker, p).await,
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
