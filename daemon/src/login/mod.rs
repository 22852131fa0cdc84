//! The browser login, as named steps: discovery → client → consent (browser, paste-back or
//! device) → code exchange → grant. One login per account of a server at a time; every
//! caller that asks meanwhile joins it (see [`crate::broker::Logins`]).

use std::sync::Arc;

use mcp_authd_ipc::methods::{GrantInfo, LoginParams, LoginPending};
use mcp_authd_ipc::next_step::login_command_with;
use mcp_authd_ipc::{ErrorKind, RpcError};
use tokio::sync::watch;

use crate::broker::{Broker, Join, LoginKey, LoginProgress, Started};
use crate::config::{GrantKind, ServerConfig};
use crate::oauth::discovery::{Discovery, discover, normalize_server_url};
use crate::oauth::dpop::{self, DpopKey};
use crate::oauth::pkce::random_token;
use crate::oauth::token::DpopSigner;
use crate::oauth::www_authenticate::BearerChallenge;
use crate::store::db::RegistrationKind;

mod authorize;
mod client;
mod consent;
mod device;
mod errors;
mod grant;
mod machine_grant;

use authorize::{check_login_hint, check_requested_scopes, choose_scopes, hint_of_account};
use consent::Consent;
use errors::discovery_error;

/// Runs (or joins) the login for `p.server`; `on_pending` gets the authorization URL as
/// soon as it is known.
/// `challenge` is the 401/403 challenge that made a client ask for the login, if any: its
/// `resource_metadata` and `scope` steer discovery instead of a new probe.
pub async fn login(
    broker: &Arc<Broker>,
    p: LoginParams,
    challenge: Option<BearerChallenge>,
    on_pending: impl Fn(&LoginPending),
) -> Result<GrantInfo, RpcError> {
    let server_url = normalize_server_url(&p.server)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    broker.check_server_url(&server_url)?;
    if let Some(scopes) = &p.scopes {
        check_requested_scopes(scopes)?;
    }
    if let Some(hint) = &p.login_hint {
        check_login_hint(hint).map_err(|why| RpcError::new(ErrorKind::InvalidParams, why))?;
    }
    // One login per account of a server: a second account's login runs beside it.
    let key = LoginKey::new(&server_url, p.account.as_deref());
    let progress = match broker.logins().join_or_start(key, LoginProgress::Starting) {
        Join::Joined(progress) => progress,
        Join::Started(started) => {
            let progress = started.subscribe();
            let broker = broker.clone();
            tokio::spawn(async move {
                let login = Login {
                    broker: &broker,
                    server_url: &server_url,
                    params: &p,
                    progress: &started,
                };
                let result = run(&login, challenge).await;
                if let Err(e) = &result {
                    tracing::warn!(server = %server_url, "login failed: {}", e.message);
                }
                started.finish(LoginProgress::Done(Box::new(result)));
            });
            progress
        }
    };
    outcome(progress, on_pending).await
}

/// Follows a login to its result, showing each pending step to the caller.
async fn outcome(
    mut progress: watch::Receiver<LoginProgress>,
    on_pending: impl Fn(&LoginPending),
) -> Result<GrantInfo, RpcError> {
    loop {
        let current = progress.borrow_and_update().clone();
        match current {
            LoginProgress::Pending(pending) => on_pending(&pending),
            LoginProgress::Done(result) => return *result,
            LoginProgress::Starting => {}
        }
        if progress.changed().await.is_err() {
            let last = progress.borrow().clone();
            return match last {
                LoginProgress::Done(result) => *result,
                _ => Err(RpcError::new(
                    ErrorKind::Internal,
                    "the login task ended without a result",
                )),
            };
        }
    }
}

/// One login as its steps see it: what the caller asked for, and where to report.
struct Login<'a> {
    broker: &'a Arc<Broker>,
    /// Normalized.
    server_url: &'a str,
    params: &'a LoginParams,
    progress: &'a Started<LoginProgress>,
}

impl Login<'_> {
    /// How long the user has for the consent: the caller's, else the config's.
    fn timeout_secs(&self) -> u64 {
        self.params
            .timeout_secs
            .unwrap_or(self.broker.config().login_timeout_secs)
            .max(1)
    }
}

/// The login's steps: discovery → client → consent → code exchange → grant (or, for a
/// server configured with a grant without a browser, that grant).
async fn run(login: &Login<'_>, challenge: Option<BearerChallenge>) -> Result<GrantInfo, RpcError> {
    let (broker, server_url, p) = (login.broker, login.server_url, login.params);
    let policy = broker.url_policy(server_url);
    let discovery = discover_server(login, &policy, challenge).await?;
    let metadata = &discovery.metadata;
    let server_cfg = broker
        .config()
        .server(server_url, Some(&metadata.issuer))
        .cloned();
    let scopes = choose_scopes(p.scopes.clone(), server_cfg.as_ref(), &discovery);
    if let Some(cfg) = server_cfg
        .as_ref()
        .filter(|c| c.grant != GrantKind::AuthorizationCode)
    {
        return machine_grant::machine_login(login, &discovery, cfg, scopes).await;
    }
    let account_name = p.account.clone().unwrap_or_default();
    let login_hint = login_hint(login, &discovery, &account_name).await?;

    let state = random_token();
    let (registration, credentials, redirect) =
        client::client_for(login, &policy, &discovery, server_cfg.as_ref(), &state).await?;
    let quirks = server_cfg
        .as_ref()
        .map(|c| c.quirks.clone())
        .unwrap_or_default();
    // The account's login hint goes with the authorization request's own parameters.
    let quirks = authorize::with_login_hint(&quirks, login_hint.as_deref());
    let dpop_key = dpop_key(server_cfg.as_ref(), &discovery);
    let mut consent = Consent::new(login, &policy, &discovery, &credentials, &scopes, &quirks);
    // One client id at several authorization servers (a Client ID Metadata Document) has
    // one redirect path for all of them: only `iss` tells whose response this is.
    consent.iss_required = registration.kind == RegistrationKind::MetadataDocument;
    consent.prompt_consent &= server_cfg.as_ref().is_none_or(ServerConfig::prompt_consent);
    consent.dpop = dpop_key.as_ref().map(|key| DpopSigner {
        key,
        nonces: broker.dpop_nonces(),
    });
    let tokens = consent.obtain_tokens(p, redirect, &state).await?;

    grant::save_grant(
        broker,
        server_url,
        &discovery,
        &registration,
        grant::Obtained {
            kind: GrantKind::AuthorizationCode,
            tokens,
            dpop_key,
            scopes,
            account_name,
            login_hint,
        },
    )
    .await
}

/// Discovery (RFC 9728, RFC 8414; the 2025-03-26 fallback), its AS metadata stored.
async fn discover_server(
    login: &Login<'_>,
    policy: &crate::oauth::http::UrlPolicy,
    challenge: Option<BearerChallenge>,
) -> Result<Discovery, RpcError> {
    let (broker, server_url) = (login.broker, login.server_url);
    let config = broker.config();
    let assume_pkce_s256 = |issuer: &str| {
        config
            .server(server_url, Some(issuer))
            .is_some_and(|c| c.quirks.assume_pkce_s256)
    };
    let discovery = discover(
        broker.http(),
        policy,
        server_url,
        challenge,
        &assume_pkce_s256,
    )
    .await
    .map_err(|e| discovery_error(server_url, e))?;
    if discovery.legacy {
        tracing::info!(server = %server_url, issuer = %discovery.metadata.issuer, "no protected resource metadata: 2025-03-26 discovery");
    }
    broker.save_as_metadata(&discovery.metadata).await?;
    Ok(discovery)
}

/// The `login_hint` to send: the caller's, else the one the account's grant was made
/// with, else the account name when it looks like an email.
async fn login_hint(
    login: &Login<'_>,
    discovery: &Discovery,
    account_name: &str,
) -> Result<Option<String>, RpcError> {
    let p = login.params;
    Ok(match p.login_hint.clone() {
        Some(hint) => Some(hint),
        None => login
            .broker
            .grant_by_key(
                &discovery.resource,
                &discovery.metadata.issuer,
                account_name,
            )
            .await?
            .and_then(|g| g.login_hint)
            .or_else(|| p.account.as_deref().and_then(hint_of_account)),
    })
}

/// A new key per login: the grant's tokens are bound to it (RFC 9449). By default only
/// where both ends take DPoP: an MCP server that takes only Bearer tokens (the MCP
/// TypeScript SDK's, say) refuses a DPoP-bound token even when its authorization server
/// offers DPoP.
fn dpop_key(cfg: Option<&ServerConfig>, discovery: &Discovery) -> Option<DpopKey> {
    cfg.and_then(|c| c.dpop)
        .unwrap_or_else(|| {
            discovery.resource_takes_dpop()
                && dpop::offered(
                    discovery
                        .metadata
                        .dpop_signing_alg_values_supported
                        .as_deref(),
                )
        })
        .then(DpopKey::generate)
}

/// `login.paste`: hands what the user pasted to the `manual` login waiting for `server`
/// (`account`'s login of it; none: the default account's).
pub fn paste(
    broker: &Broker,
    server: &str,
    account: Option<&str>,
    pasted: &str,
) -> Result<(), RpcError> {
    let server_url = normalize_server_url(server)
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    let inbox = broker
        .pastes()
        .find(&LoginKey::new(&server_url, account))
        .ok_or_else(|| {
            RpcError::new(
                ErrorKind::NotFound,
                format!(
                    "no manual login to {server_url} is waiting for a pasted response; start one: {}",
                    login_command_with(&server_url, account, &[], &["--manual"])
                ),
            )
            .with_server(&server_url)
        })?;
    inbox.deliver_pasted(pasted).map_err(|e| {
        RpcError::new(
            ErrorKind::InvalidParams,
            format!("{e}; the login is still waiting: paste the URL your browser ended on"),
        )
        .with_server(&server_url)
    })
}
