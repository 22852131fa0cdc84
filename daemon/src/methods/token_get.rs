//! `token.get`: an access token for a server, refreshed when needed (or, for a server
//! configured with a grant without a browser, obtained at the first ask); every hand-out
//! is written to the audit log with the process it went to.

use std::sync::Arc;

use mcp_authd_ipc::methods::{LoginParams, TOKEN_GET, TokenGetParams};
use mcp_authd_ipc::{ErrorKind, Reply, Request, RpcError};
use serde::Deserialize;
use serde_json::Value;

use crate::broker::Broker;
use crate::peer::Peer;

pub async fn apply(
    broker: &Arc<Broker>,
    params: TokenGetParams,
    peer: &Arc<Peer>,
    notifier: &super::Notifier,
) -> Result<Value, RpcError> {
    let server = params.server.clone();
    let account = super::account(&params.account)?.map(str::to_string);
    let account = account.as_deref();
    // `confirm_clients`: the user's answer comes before any refresh, so the token handed
    // out is as fresh as asked however long the answer took.
    if broker.confirm.is_enabled()
        && let Ok(grant) = broker.find_grant(&server, account).await
    {
        crate::confirm::check(broker, &grant, peer, notifier).await?;
    }
    let result = match broker.token_get(params.clone()).await {
        Err(e)
            if e.kind() == Some(ErrorKind::AuthorizationRequired)
                && first_grant_without_browser(broker, &server, account).await =>
        {
            // Nothing to ask the user: run the configured grant, as a login would.
            let login = LoginParams {
                server: server.clone(),
                scopes: params.scopes.clone(),
                open_browser: Some(false),
                account: account.map(str::to_string),
                ..Default::default()
            };
            crate::login::login(broker, login, None, |_| {}).await?;
            if broker.confirm.is_enabled() {
                let grant = broker.find_grant(&server, account).await?;
                crate::confirm::check(broker, &grant, peer, notifier).await?;
            }
            broker
                .token_get(params)
                .await
                .map_err(|e| e.for_account(account))?
        }
        other => other.map_err(|e| e.for_account(account))?,
    };
    // The hand-out is counted for the audit log before the token leaves.
    broker
        .audit
        .record(&result.grant, &server, peer, crate::oauth::token::now());
    tracing::debug!(grant = %result.grant, pid = ?peer.pid, exe = ?peer.exe, "access token handed out");
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

/// The hot path of `token.get`, for the connection to answer inline: the reply line when
/// the grant and a good token are in memory and nothing needs a disk write, else `None`
/// (the request then goes the full way).
pub fn from_memory(broker: &Broker, request: &Request, peer: &Arc<Peer>) -> Option<Vec<u8>> {
    if request.method != TOKEN_GET {
        return None;
    }
    let params = TokenGetParams::deserialize(&request.params).ok()?;
    let now = crate::oauth::token::now();
    let result = broker.token_from_memory(&params, now)?;
    if !broker.confirm.allows_at_once(&result.grant, peer) {
        return None;
    }
    let line = serde_json::to_vec(&Reply::new(&request.id, &result)).ok()?;
    broker
        .audit
        .record(&result.grant, &params.server, peer, now);
    Some(line)
}
