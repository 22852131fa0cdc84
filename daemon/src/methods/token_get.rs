//! `token.get`: an access token for a server, refreshed when needed (or, for a server
//! configured with a grant without a browser, obtained at the first ask); every hand-out
//! is written to the audit log with the process it went to (by the broker).

use std::sync::Arc;

use mcp_authd_ipc::methods::{LoginParams, TokenGetParams};
use mcp_authd_ipc::{ErrorKind, Reply, RequestId, RpcError};
use serde_json::Value;

use crate::broker::{Broker, Recipient};
use crate::peer::Peer;
use crate::reply::Notifier;

pub async fn apply(
    broker: &Arc<Broker>,
    params: TokenGetParams,
    peer: &Arc<Peer>,
    notifier: &Notifier,
) -> Result<Value, RpcError> {
    let account = super::account(&params.account)?;
    let to = Recipient {
        peer,
        asked_for: &params.server,
    };
    // `confirm_clients`: the user's answer comes before any refresh, so the token handed
    // out is as fresh as asked however long the answer took.
    if broker.confirms_clients()
        && let Ok(grant) = broker.find_grant(&params.server, account).await
    {
        broker.confirm(&grant, peer, notifier).await?;
    }
    let result = match broker.token_get(&params, to).await {
        Err(e)
            if e.kind() == Some(ErrorKind::AuthorizationRequired)
                && first_grant_without_browser(broker, &params.server, account).await =>
        {
            // Nothing to ask the user: run the configured grant, as a login would.
            let login = LoginParams {
                server: params.server.clone(),
                scopes: params.scopes.clone(),
                open_browser: Some(false),
                account: account.map(str::to_string),
                ..Default::default()
            };
            crate::login::login(broker, login, None, |_| {}).await?;
            if broker.confirms_clients() {
                let grant = broker.find_grant(&params.server, account).await?;
                broker.confirm(&grant, peer, notifier).await?;
            }
            broker
                .token_get(&params, to)
                .await
                .map_err(|e| e.for_account(account))?
        }
        other => other.map_err(|e| e.for_account(account))?,
    };
    super::to_value(result)
}

/// Whether `server` (by its URL) is configured with a grant that needs no browser and
/// has no grant yet. A grant that exists but needs a login (a refused assertion) is left
/// alone: such a grant is only tried again when a login asks.
async fn first_grant_without_browser(broker: &Broker, server: &str, account: Option<&str>) -> bool {
    let configured = broker
        .config()
        .server(server, None)
        .is_some_and(|c| c.grant != crate::config::GrantKind::AuthorizationCode);
    configured
        && matches!(
            broker.find_grant(server, account).await,
            Err(e) if e.kind() == Some(ErrorKind::NotFound)
        )
}

/// The hot path of `token.get`, for the connection to answer inline with the params it
/// parsed: the reply line when the grant and a good token are in memory and nothing needs
/// a disk write, else `None` (the request then goes the full way).
pub fn from_memory(
    broker: &Broker,
    id: &RequestId,
    params: &TokenGetParams,
    peer: &Arc<Peer>,
) -> Option<Vec<u8>> {
    let result = broker.token_from_memory(params, peer, crate::oauth::token::now())?;
    serde_json::to_vec(&Reply::new(id, &result)).ok()
}
