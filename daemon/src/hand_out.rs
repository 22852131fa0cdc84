//! A grant's token, or a DPoP proof signed with its key, handed to a caller over the
//! socket: `confirm_clients` first, then the broker. A server configured with a grant
//! that needs no browser gets its first grant here, as a `login` would make it.
//!
//! Between the protocol methods and the broker (and `login`, which a first grant runs):
//! each method is one call here, and neither the broker nor `login` needs to know who
//! asked over which connection.

use std::sync::Arc;

use mcp_authd_ipc::methods::TokenGetResult;
use mcp_authd_ipc::methods::{DpopProofParams, DpopProofResult, LoginParams, TokenGetParams};
use mcp_authd_ipc::{ErrorKind, RpcError};

use crate::broker::{Broker, Recipient};
use crate::config::GrantKind;
use crate::peer::Peer;
use crate::reply::Notifier;

/// `token.get` the full way (the connection answers from memory when it can): the
/// grant's access token for `peer`, refreshed when needed, or obtained now for a server
/// whose grant needs no browser and that has no grant yet.
pub async fn token(
    broker: &Arc<Broker>,
    params: &TokenGetParams,
    account: Option<&str>,
    peer: &Arc<Peer>,
    notifier: &Notifier,
) -> Result<TokenGetResult, RpcError> {
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
    match broker.token_get(params, to).await {
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
                .token_get(params, to)
                .await
                .map_err(|e| e.for_account(account))
        }
        other => other.map_err(|e| e.for_account(account)),
    }
}

/// Whether `server` (by its URL) is configured with a grant that needs no browser and
/// has no grant yet. A grant that exists but needs a login (a refused assertion) is left
/// alone: such a grant is only tried again when a login asks.
async fn first_grant_without_browser(broker: &Broker, server: &str, account: Option<&str>) -> bool {
    let configured = broker
        .config()
        .server(server, None)
        .is_some_and(|c| c.grant != GrantKind::AuthorizationCode);
    configured
        && matches!(
            broker.find_grant(server, account).await,
            Err(e) if e.kind() == Some(ErrorKind::NotFound)
        )
}

/// `token.dpop_proof`: a proof is as good as the token for a request, so the same
/// programs may have it (`confirm_clients`).
pub async fn dpop_proof(
    broker: &Broker,
    p: &DpopProofParams,
    account: Option<&str>,
    peer: &Peer,
    notifier: &Notifier,
) -> Result<DpopProofResult, RpcError> {
    let grant = broker
        .find_grant(&p.server, account)
        .await
        .map_err(|e| e.for_account(account))?;
    if broker.confirms_clients() {
        broker.confirm(&grant, peer, notifier).await?;
    }
    let proof = broker.sign_dpop_proof(&grant, p).await?;
    tracing::debug!(grant = %grant.id, pid = ?peer.pid, method = %p.method, "DPoP proof signed");
    Ok(proof)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::store::RegistrationRow;

    /// Only a configured grant without a browser, and only before the server has a grant,
    /// is run by `token.get` itself.
    #[tokio::test]
    async fn only_a_configured_grant_without_browser_and_no_grant_yet_is_run_at_the_first_ask() {
        let dir = tempfile::tempdir().unwrap();
        let config: Config = toml::from_str(
            r#"
            [servers."https://machine.example/mcp"]
            grant = "client_credentials"
            client_id = "c"
            [servers."https://browser.example/mcp"]
            client_id = "b"
            "#,
        )
        .unwrap();
        let (broker, db) = crate::broker::for_tests(dir.path(), config).await;
        let machine = "https://machine.example/mcp";
        assert!(first_grant_without_browser(&broker, machine, None).await);
        assert!(first_grant_without_browser(&broker, machine, Some("work")).await);
        assert!(!first_grant_without_browser(&broker, "https://browser.example/mcp", None).await);
        assert!(!first_grant_without_browser(&broker, "https://other.example/mcp", None).await);

        let issuer = "https://as.example";
        db.insert_registration(&RegistrationRow {
            id: "r-1".into(),
            issuer: issuer.into(),
            kind: "pre-registered".into(),
            client_id: "c".into(),
            redirect_uri: None,
            token_endpoint_auth_method: "none".into(),
            has_client_secret: false,
            created_at: 0,
        })
        .await
        .unwrap();
        let grant = crate::broker::new_grant_row("g-1".into(), machine, machine, issuer, "r-1", "");
        db.upsert_grant(&grant).await.unwrap();
        assert!(
            !first_grant_without_browser(&broker, machine, None).await,
            "a grant exists (it may need a login): left to a login"
        );
        assert!(first_grant_without_browser(&broker, machine, Some("work")).await);
    }
}
