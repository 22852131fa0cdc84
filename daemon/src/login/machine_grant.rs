//! Logins without a browser at the MCP server's authorization server: the grant a server's
//! config names (`client_credentials`, `jwt_bearer`, `enterprise`), and for `enterprise`
//! the daemon's own OpenID login at the IdP when no ID token is current.

use mcp_authd_ipc::methods::GrantInfo;
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::client::{callback_path, pre_registered};
use super::consent::Consent;
use super::errors::{discovery_error, login_failed};
use super::{Login, grant};
use crate::broker::server_error;
use crate::config::{EnterpriseConfig, GrantKind, Quirks, ServerConfig};
use crate::loopback::{LoopbackRedirect, RedirectHost};
use crate::machine::GrantError;
use crate::oauth::discovery::{AsMetadata, Discovery, ResourceMetadata};
use crate::oauth::pkce::random_token;

/// A server configured with a grant that needs no browser: the grant, run once now (and
/// again at each renewal by the broker).
pub(super) async fn machine_login(
    login: &Login<'_>,
    discovery: &Discovery,
    cfg: &ServerConfig,
    scopes: Vec<String>,
) -> Result<GrantInfo, RpcError> {
    let (broker, server_url) = (login.broker, login.server_url);
    let policy = broker.url_policy(server_url);
    if let Some(enterprise) = cfg.enterprise.as_ref().filter(|e| e.id_token.is_none())
        && cfg.grant == GrantKind::Enterprise
        && let Err(why) =
            crate::machine::idp_id_token(broker.machine_reach(), enterprise, &policy).await
    {
        tracing::info!(server = %server_url, "{why}; logging in at the enterprise IdP");
        idp_login(login, enterprise).await?;
    }
    let issuer = &discovery.metadata.issuer;
    // A client secret goes only to the authorization server it belongs to.
    broker
        .config()
        .client(server_url, issuer)
        .map_err(|why| login_failed(server_url, &why))?;
    let registration = pre_registered(broker, issuer, cfg).await?;
    let credentials = broker.credentials(&registration, issuer, Some(cfg)).await?;
    // Nothing to refresh: `offline_access` would only ask for a token that is dropped.
    let scopes: Vec<String> = scopes
        .into_iter()
        .filter(|s| s != "offline_access")
        .collect();
    let target = crate::machine::Target {
        policy: &policy,
        metadata: &discovery.metadata,
        resource: &discovery.resource,
        scopes: &scopes,
        omit_resource: cfg.quirks.omit_resource,
    };
    tracing::info!(server = %server_url, grant = cfg.grant.as_str(), "requesting tokens without a browser");
    let tokens = crate::machine::obtain(
        broker.machine_reach(),
        cfg.grant,
        cfg,
        &credentials,
        &target,
    )
    .await
    .map_err(|e| grant_failed(server_url, cfg.grant, e))?;
    grant::save_grant(
        broker,
        server_url,
        discovery,
        &registration,
        grant::Obtained {
            kind: cfg.grant,
            tokens,
            // Grants without a browser are granted again, as bearer grants.
            dpop_key: None,
            scopes,
            account_name: login.params.account.clone().unwrap_or_default(),
            login_hint: None,
        },
    )
    .await
}

/// A refused grant is not retried until the user asks again.
fn grant_failed(server_url: &str, grant: GrantKind, e: GrantError) -> RpcError {
    match e {
        GrantError::Server(e) => server_error(server_url, "cannot obtain an access token", &e),
        other => RpcError::new(
            ErrorKind::LoginFailed,
            format!(
                "the {} grant for {server_url} failed: {other}; it is not retried until asked again: fix the cause, then run: {}",
                grant.as_str(),
                mcp_authd_ipc::next_step::login_command(server_url, &[])
            ),
        )
        .with_server(server_url),
    }
}

/// The daemon's own OpenID login at an enterprise IdP (authorization code + PKCE in the
/// browser, scope `openid`, no `resource`): its ID token serves every server that trusts
/// the IdP, renewed with its refresh token.
async fn idp_login(login: &Login<'_>, enterprise: &EnterpriseConfig) -> Result<(), RpcError> {
    let (broker, server_url) = (login.broker, login.server_url);
    let issuer = enterprise.idp_issuer.as_deref().ok_or_else(|| {
        login_failed(
            server_url,
            "[enterprise] needs id_token = { … } or idp_issuer",
        )
    })?;
    let policy = broker.url_policy(server_url);
    // Its endpoints pass the transport policy here, as at discovery.
    let metadata =
        crate::oauth::discovery::fetch_as_metadata(broker.http(), &policy, issuer, false)
            .await
            .map_err(|e| discovery_error(server_url, e))?;
    let state = random_token();
    let redirect = LoopbackRedirect::bind(
        &RedirectHost::DEFAULT,
        0,
        &callback_path(&metadata.issuer),
        &state,
    )
    .await
    .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))?;
    let mut scopes = vec!["openid".to_string()];
    if metadata.supports_scope("offline_access") {
        scopes.push("offline_access".into());
    }
    let discovery = idp_discovery(server_url, metadata);
    // The IdP is not an MCP server's authorization server: no resource.
    let quirks = Quirks {
        omit_resource: true,
        ..Quirks::default()
    };
    let credentials = crate::machine::idp_client(enterprise);
    let consent = Consent::new(login, &policy, &discovery, &credentials, &scopes, &quirks);
    let open_browser = login.params.open_browser.unwrap_or(true);
    let tokens = consent
        .authorization_code(redirect, &state, false, open_browser)
        .await?;
    crate::machine::store_idp_tokens(broker.machine_reach(), issuer, &tokens)
        .await
        .map_err(|e| login_failed(server_url, &e.to_string()))?;
    tracing::info!(server = %server_url, idp = %issuer, "logged in at the enterprise IdP");
    Ok(())
}

/// The IdP's metadata in the shape the consent flows take; it is not an MCP server's
/// authorization server, so there is no resource and no PRM.
fn idp_discovery(server_url: &str, metadata: AsMetadata) -> Discovery {
    Discovery {
        server_url: server_url.to_string(),
        resource: String::new(),
        resource_metadata: ResourceMetadata {
            resource: String::new(),
            authorization_servers: Vec::new(),
            scopes_supported: None,
            ..Default::default()
        },
        challenge: None,
        metadata,
        legacy: false,
    }
}
