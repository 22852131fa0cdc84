//! The browser login: discovery, client registration, authorization code + PKCE through
//! the loopback redirect, code exchange. One login per server at a time; every caller that
//! asks meanwhile joins it.

use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::methods::{GrantInfo, LoginParams, LoginPending};
use mcp_authd_ipc::text::{MAX_QUOTED_CHARS, login_command, shell_command};
use mcp_authd_ipc::{ErrorKind, RpcError};
use tokio::sync::watch;
use url::Url;

use crate::broker::{AccessToken, Broker, LoginProgress, new_grant_row, server_error};
use crate::config::{GrantKind, ServerConfig};
use crate::loopback::{LoopbackError, LoopbackRedirect, RedirectHost};
use crate::oauth::OAuthError;
use crate::oauth::challenge::BearerChallenge;
use crate::oauth::discovery::{AsMetadata, Discovery, discover, normalize_server_url};
use crate::oauth::dpop::{self, DpopKey};
use crate::oauth::http::UrlPolicy;
use crate::oauth::pkce::{Pkce, random_token};
use crate::oauth::printable;
use crate::oauth::registration::{AuthMethod, ClientCredentials, register};
use crate::oauth::token::{DpopSigner, now, request_tokens};
use crate::secret::Secret;
use crate::store::db::STATE_ACTIVE;
use crate::store::{RegistrationRow, keys, new_id};

const CALLBACK_PATH: &str = "/callback";
const KIND_METADATA_DOCUMENT: &str = "metadata-document";

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
    let mut progress = {
        let mut logins = broker.logins.lock().unwrap_or_else(|e| e.into_inner());
        match logins.get(&server_url) {
            Some(rx) if !matches!(*rx.borrow(), LoginProgress::Done(_)) => rx.clone(),
            _ => {
                let (tx, rx) = watch::channel(LoginProgress::Starting);
                logins.insert(server_url.clone(), rx.clone());
                let (broker, server_url) = (broker.clone(), server_url.clone());
                tokio::spawn(async move {
                    let result = run(&broker, &server_url, p, challenge, &tx).await;
                    if let Err(e) = &result {
                        tracing::warn!(server = %server_url, "login failed: {}", e.message);
                    }
                    let _ = tx.send(LoginProgress::Done(Box::new(result)));
                    broker
                        .logins
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&server_url);
                });
                rx
            }
        }
    };
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

async fn run(
    broker: &Arc<Broker>,
    server_url: &str,
    p: LoginParams,
    challenge: Option<BearerChallenge>,
    progress: &watch::Sender<LoginProgress>,
) -> Result<GrantInfo, RpcError> {
    let policy = broker.url_policy(server_url);
    let config = broker.config();
    let assume_pkce_s256 = |issuer: &str| {
        config
            .server(server_url, Some(issuer))
            .is_some_and(|c| c.quirks.assume_pkce_s256)
    };
    let discovery = discover(
        &broker.http,
        &policy,
        server_url,
        challenge,
        &assume_pkce_s256,
    )
    .await
    .map_err(|e| discovery_error(server_url, e))?;
    if discovery.legacy {
        tracing::info!(server = %server_url, issuer = %discovery.metadata.issuer, "no protected resource metadata: 2025-03-26 discovery");
    }
    let metadata = &discovery.metadata;
    broker.db.save_as_metadata(metadata, now()).await?;
    let server_cfg = broker
        .config()
        .server(server_url, Some(&metadata.issuer))
        .cloned();
    let scopes = choose_scopes(p.scopes.clone(), server_cfg.as_ref(), &discovery);
    if let Some(cfg) = server_cfg
        .as_ref()
        .filter(|c| c.grant != GrantKind::AuthorizationCode)
    {
        return machine_login(broker, server_url, &discovery, cfg, scopes, &p, progress).await;
    }

    let client_cfg = broker
        .config()
        .client(server_url, &metadata.issuer)
        .map_err(|why| login_failed(server_url, &why))?
        .cloned();
    let state = random_token();
    let (registration, credentials, redirect) =
        client_for(broker, &policy, &discovery, client_cfg.as_ref(), &state).await?;
    let quirks = server_cfg
        .as_ref()
        .map(|c| c.quirks.clone())
        .unwrap_or_default();
    let asks_offline = scopes.iter().any(|s| s == "offline_access");
    // A `prompt` of the config's own wins over ours.
    let prompt_consent = asks_offline
        && metadata.wants_prompt_consent()
        && server_cfg.as_ref().is_none_or(ServerConfig::prompt_consent)
        && !quirks.authorization_params.contains_key("prompt");
    // A new key per login: the grant's tokens are bound to it (RFC 9449).
    let dpop_key = server_cfg
        .as_ref()
        .and_then(|c| c.dpop)
        .unwrap_or_else(|| dpop::offered(metadata.dpop_signing_alg_values_supported.as_deref()))
        .then(DpopKey::generate);
    let tokens = authorize_in_browser(
        broker,
        &Authorization {
            server_url,
            policy: &policy,
            metadata,
            resource: (!quirks.omit_resource).then_some(discovery.resource.as_str()),
            scopes: &scopes,
            authorization_params: &quirks.authorization_params,
            prompt_consent,
            // One client id at several authorization servers (a Client ID Metadata
            // Document) has one redirect path for all of them: only `iss` tells whose
            // response this is.
            iss_required: registration.kind == KIND_METADATA_DOCUMENT,
            dpop: dpop_key.as_ref().map(|key| DpopSigner {
                key,
                nonces: &broker.dpop_nonces,
            }),
        },
        &credentials,
        redirect,
        &state,
        &p,
        progress,
    )
    .await?;

    save_grant(
        broker,
        server_url,
        &discovery,
        &registration,
        Obtained {
            kind: GrantKind::AuthorizationCode,
            tokens,
            dpop_key,
            scopes,
        },
    )
    .await
}

/// What a browser authorization asks for, and of whom.
pub(crate) struct Authorization<'a> {
    /// For messages, progress and the next command to run.
    pub server_url: &'a str,
    /// The transport policy every endpoint of this login is checked against.
    pub policy: &'a UrlPolicy,
    pub metadata: &'a AsMetadata,
    /// The RFC 8707 resource; `None` to send none.
    pub resource: Option<&'a str>,
    pub scopes: &'a [String],
    pub authorization_params: &'a std::collections::BTreeMap<String, String>,
    /// Add `prompt=consent` (see [`AsMetadata::wants_prompt_consent`]).
    pub prompt_consent: bool,
    /// Refuse an answer without `iss` even from a server that does not promise RFC 9207.
    pub iss_required: bool,
    /// The grant's DPoP key, when its tokens are to be bound to one (RFC 9449).
    pub dpop: Option<DpopSigner<'a>>,
}

/// Authorization code + PKCE in the browser, the answer at the loopback `redirect`
/// (`state` and `iss` checked), the code redeemed: the tokens.
async fn authorize_in_browser(
    broker: &Arc<Broker>,
    a: &Authorization<'_>,
    credentials: &ClientCredentials,
    redirect: LoopbackRedirect,
    state: &Secret,
    p: &LoginParams,
    progress: &watch::Sender<LoginProgress>,
) -> Result<crate::oauth::token::Tokens, RpcError> {
    let server_url = a.server_url;
    let pkce = Pkce::new();
    let authorization_url = authorization_url(
        a,
        &credentials.client_id,
        &redirect.redirect_uri,
        state,
        &pkce,
    )?;

    let timeout = p
        .timeout_secs
        .unwrap_or(broker.config().login_timeout_secs)
        .max(1);
    let browser_opened = if p.open_browser.unwrap_or(true) {
        crate::browser::open(&authorization_url).await
    } else {
        false
    };
    tracing::info!(server = %server_url, browser_opened, "waiting up to {timeout} s for the browser login");
    let _ = progress.send(LoginProgress::Pending(LoginPending {
        server: server_url.to_string(),
        authorization_url: authorization_url.clone(),
        timeout_secs: timeout,
        browser_opened,
    }));

    let redirect_uri = redirect.redirect_uri.clone();
    let response = redirect
        .wait(Duration::from_secs(timeout))
        .await
        .map_err(|e| match e {
            LoopbackError::Timeout(_) => RpcError::new(
                ErrorKind::LoginTimeout,
                format!(
                    "{e}; run again with more time: {}",
                    shell_command(&[
                        "mcp-auth",
                        "login",
                        server_url,
                        "--timeout",
                        &timeout.saturating_mul(2).max(600).to_string(),
                    ])
                ),
            )
            .with_server(server_url),
            other => RpcError::new(ErrorKind::Internal, other.to_string()),
        })?;
    check_issuer(a.metadata, response.iss.as_deref(), a.iss_required)
        .map_err(|why| login_failed(server_url, &why))?;
    if let Some(error) = &response.error {
        let description = response
            .error_description
            .as_deref()
            .map(|d| format!(" ({})", crate::oauth::printable(d, 200)))
            .unwrap_or_default();
        return Err(login_failed(
            server_url,
            &format!(
                "the authorization server refused: {}{description}",
                crate::oauth::printable(error, 64)
            ),
        ));
    }
    let code = response
        .code
        .ok_or_else(|| login_failed(server_url, "the authorization response carried no code"))?;

    let mut form = vec![
        ("grant_type", "authorization_code".to_string()),
        ("code", code.expose().to_string()),
        ("redirect_uri", redirect_uri),
        ("code_verifier", pkce.verifier.expose().to_string()),
    ];
    if let Some(resource) = a.resource {
        form.push(("resource", resource.to_string()));
    }
    request_tokens(
        &broker.http,
        a.policy,
        &a.metadata.issuer,
        &a.metadata.token_endpoint,
        credentials,
        form,
        a.dpop,
    )
    .await
    .map_err(|e| match e {
        OAuthError::TokenError(_) => login_failed(server_url, &e.to_string()),
        other => server_error(server_url, "cannot redeem the authorization code", &other),
    })
}

/// A server configured with a grant that needs no browser: the grant, run once now (and
/// again at each renewal by the broker).
async fn machine_login(
    broker: &Arc<Broker>,
    server_url: &str,
    discovery: &Discovery,
    cfg: &ServerConfig,
    scopes: Vec<String>,
    p: &LoginParams,
    progress: &watch::Sender<LoginProgress>,
) -> Result<GrantInfo, RpcError> {
    let policy = broker.url_policy(server_url);
    if let Some(enterprise) = cfg.enterprise.as_ref().filter(|e| e.id_token.is_none())
        && cfg.grant == GrantKind::Enterprise
        && let Err(why) = crate::machine::idp_id_token(broker, enterprise, &policy).await
    {
        tracing::info!(server = %server_url, "{why}; logging in at the enterprise IdP");
        idp_login(broker, server_url, enterprise, p, progress).await?;
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
    let tokens = crate::machine::obtain(broker, cfg.grant, cfg, &credentials, &target)
        .await
        .map_err(|e| match e {
            crate::machine::GrantError::Server(e) => {
                server_error(server_url, "cannot obtain an access token", &e)
            }
            other => RpcError::new(
                ErrorKind::LoginFailed,
                format!(
                    "the {} grant for {server_url} failed: {other}; it is not retried until asked again: fix the cause, then run: mcp-auth login {server_url}",
                    cfg.grant.as_str()
                ),
            )
            .with_server(server_url),
        })?;
    save_grant(
        broker,
        server_url,
        discovery,
        &registration,
        Obtained {
            kind: cfg.grant,
            tokens,
            // Grants without a browser are granted again, as bearer grants.
            dpop_key: None,
            scopes,
        },
    )
    .await
}

/// The daemon's own OpenID login at an enterprise IdP (authorization code + PKCE in the
/// browser, scope `openid`, no `resource`): its ID token serves every server that trusts
/// the IdP, renewed with its refresh token.
async fn idp_login(
    broker: &Arc<Broker>,
    server_url: &str,
    enterprise: &crate::config::EnterpriseConfig,
    p: &LoginParams,
    progress: &watch::Sender<LoginProgress>,
) -> Result<(), RpcError> {
    let issuer = enterprise.idp_issuer.as_deref().ok_or_else(|| {
        login_failed(
            server_url,
            "[enterprise] needs id_token = { … } or idp_issuer",
        )
    })?;
    let policy = broker.url_policy(server_url);
    let metadata = crate::oauth::discovery::fetch_as_metadata(&broker.http, &policy, issuer, false)
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
    let tokens = authorize_in_browser(
        broker,
        &Authorization {
            server_url,
            policy: &policy,
            metadata: &metadata,
            resource: None,
            scopes: &scopes,
            authorization_params: &Default::default(),
            prompt_consent: scopes.iter().any(|s| s == "offline_access")
                && metadata.wants_prompt_consent(),
            iss_required: false,
            dpop: None,
        },
        &crate::machine::idp_client(enterprise),
        redirect,
        &state,
        p,
        progress,
    )
    .await?;
    crate::machine::store_idp_tokens(broker, issuer, &tokens)
        .await
        .map_err(|e| login_failed(server_url, &e.to_string()))?;
    tracing::info!(server = %server_url, idp = %issuer, "logged in at the enterprise IdP");
    Ok(())
}

/// What a login obtained.
struct Obtained {
    kind: GrantKind,
    tokens: crate::oauth::token::Tokens,
    /// The key the tokens are bound to (DPoP), if any.
    dpop_key: Option<DpopKey>,
    /// The scopes asked for (the tokens' own, when the server said, win).
    scopes: Vec<String>,
}

/// Stores what a login obtained: the grant row (new or replacing the last login's), its
/// refresh token and DPoP key, and the access token in memory.
async fn save_grant(
    broker: &Arc<Broker>,
    server_url: &str,
    discovery: &Discovery,
    registration: &RegistrationRow,
    obtained: Obtained,
) -> Result<GrantInfo, RpcError> {
    let Obtained {
        kind,
        tokens,
        dpop_key,
        scopes,
    } = obtained;
    let metadata = &discovery.metadata;
    let existing = broker
        .db
        .grant_by_key(&discovery.resource, &metadata.issuer)
        .await?;
    let grant_id = existing
        .as_ref()
        .map(|g| g.id.clone())
        .unwrap_or_else(|| new_id("g"));
    // A refresh of the grant in flight finishes before this login's tokens replace its
    // own, and none starts until they are in place.
    let _lock = broker.lock_grant(&grant_id).await;
    if let Some(key) = &dpop_key {
        tracing::info!(server = %server_url, grant = %grant_id, jkt = %key.thumbprint(), token_type = tokens.token_type.as_str(), "DPoP key made for the grant");
    }
    broker.save_dpop_key(&grant_id, dpop_key).await?;
    let refresh_key = keys::refresh_token(&grant_id);
    let stored = match &tokens.refresh_token {
        Some(rt) => broker.refresh_tokens.set(&refresh_key, rt).await,
        None => broker.refresh_tokens.delete(&refresh_key).await,
    };
    if let Err(e) = stored {
        tracing::warn!(server = %server_url, grant = %grant_id, "the login's refresh token is not stored yet: {e}");
    }
    let mut row = existing.unwrap_or_else(|| {
        new_grant_row(
            grant_id.clone(),
            server_url,
            &discovery.resource,
            &metadata.issuer,
            &registration.id,
        )
    });
    row.server_url = server_url.to_string();
    row.registration_id = registration.id.clone();
    row.scopes = tokens.scopes.clone().unwrap_or(scopes).join(" ");
    row.grant_type = kind.as_str().into();
    row.state = STATE_ACTIVE.into();
    row.needs_login_reason = None;
    row.has_refresh_token = tokens.refresh_token.is_some();
    row.access_expires_at = Some(tokens.expires_at);
    // A new login may be another account: what this login's id_token says, or unknown.
    row.account = tokens.account.clone();
    row.updated_at = now();
    broker.db.upsert_grant(&row).await?;
    for old in broker.db.grants_of_server(server_url).await? {
        if old.id != grant_id {
            tracing::info!(server = %server_url, grant = %old.id, issuer = %old.issuer, "the server moved to {}; forgetting the grant of its former authorization server", metadata.issuer);
            let lock = broker.lock_grant(&old.id).await;
            broker.forget_grant(&old, &lock).await?;
        }
    }
    broker.cache_access_token(&grant_id, AccessToken::from_tokens(&tokens));
    tracing::info!(server = %server_url, grant = %grant_id, "logged in");
    broker.grant_info(&row).await
}

/// Scopes as the MCP spec chooses them: explicit ones (caller, then config), else the
/// challenge's, else everything the PRM lists, else none; plus `offline_access` when the
/// AS advertises it (SEP-2207), so a refresh token is issued.
fn choose_scopes(
    requested: Option<Vec<String>>,
    cfg: Option<&ServerConfig>,
    d: &Discovery,
) -> Vec<String> {
    let mut scopes = requested
        .filter(|s| !s.is_empty())
        .or_else(|| cfg.and_then(|c| c.scopes.clone()))
        .or_else(|| {
            d.challenge
                .as_ref()
                .map(|c| c.scopes())
                .filter(|s| !s.is_empty())
        })
        .or_else(|| d.resource_metadata.scopes_supported.clone())
        .unwrap_or_default();
    if !scopes.is_empty()
        && d.metadata.supports_scope("offline_access")
        && !scopes.iter().any(|s| s == "offline_access")
    {
        scopes.push("offline_access".into());
    }
    scopes
}

/// The client to log in with and a listener on its redirect URI, in the order the MCP spec
/// gives: a pre-registered client from the config; else our Client ID Metadata Document
/// URL when one is configured and the AS supports them; else the dynamic registration
/// stored for this issuer (if its port is free); else a new dynamic registration.
///
/// The redirect path of a dynamic registration is its issuer's own ([`callback_path`]), so
/// a response the browser brings from another authorization server (a mix-up attack, RFC
/// 9700 §4.4) arrives at a path this login does not serve. `cfg` is the pre-registered
/// client already bound to this issuer ([`crate::config::Config::client`]).
async fn client_for(
    broker: &Broker,
    policy: &UrlPolicy,
    d: &Discovery,
    cfg: Option<&ServerConfig>,
    state: &Secret,
) -> Result<(RegistrationRow, ClientCredentials, LoopbackRedirect), RpcError> {
    let issuer = &d.metadata.issuer;
    let own_path = callback_path(issuer);
    if let Some(cfg) = cfg.filter(|c| c.client_id.is_some()) {
        let (host, port, path) = match &cfg.redirect_uri {
            Some(uri) => loopback_port_and_path(uri)?,
            None => (RedirectHost::DEFAULT, 0, CALLBACK_PATH.to_string()),
        };
        let redirect = LoopbackRedirect::bind(&host, port, &path, state)
            .await
            .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))?;
        let reg = pre_registered(broker, issuer, cfg).await?;
        let credentials = broker.credentials(&reg, issuer, Some(cfg)).await?;
        return Ok((reg, credentials, redirect));
    }

    let cimd = broker.config().client_metadata_url.clone();
    if cimd.is_some()
        && d.metadata.client_id_metadata_document_supported == Some(true)
        && d.metadata.authorization_response_iss_parameter_supported != Some(true)
    {
        tracing::info!(issuer = %issuer, "not using the client metadata document: the authorization server does not send `iss` (RFC 9207), which a client id shared by several servers needs against mix-ups");
    }
    if let Some(url) = &cimd
        && d.metadata.client_id_metadata_document_supported == Some(true)
        && d.metadata.authorization_response_iss_parameter_supported == Some(true)
    {
        let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, CALLBACK_PATH, state)
            .await
            .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))?;
        let reg = match broker
            .db
            .find_registration(issuer, KIND_METADATA_DOCUMENT, Some(url))
            .await?
        {
            Some(r) => r,
            None => {
                let r = RegistrationRow {
                    id: new_id("r"),
                    issuer: issuer.clone(),
                    kind: KIND_METADATA_DOCUMENT.into(),
                    client_id: url.clone(),
                    redirect_uri: None,
                    token_endpoint_auth_method: AuthMethod::None.as_str().into(),
                    has_client_secret: false,
                    created_at: now(),
                };
                broker.db.insert_registration(&r).await?;
                r
            }
        };
        let credentials = broker.credentials(&reg, issuer, None).await?;
        return Ok((reg, credentials, redirect));
    }

    if let Some(reg) = broker.db.find_registration(issuer, "dynamic", None).await? {
        let port = reg
            .redirect_uri
            .as_deref()
            .and_then(|u| loopback_port_and_path(u).ok());
        match port {
            // Registered before redirect paths were per issuer: replaced.
            Some((_, _, path)) if path != own_path => tracing::info!(
                "stored registration {} has the shared redirect path {path}; registering again with this server's own",
                reg.id
            ),
            Some((host, port, path)) => {
                match LoopbackRedirect::bind(&host, port, &path, state).await {
                    Ok(redirect) => match broker.credentials(&reg, issuer, None).await {
                        Ok(credentials) => return Ok((reg, credentials, redirect)),
                        Err(e) => tracing::warn!(
                            "stored registration {} is unusable ({}); registering again",
                            reg.id,
                            e.message
                        ),
                    },
                    Err(e) => tracing::info!("{e}; registering a new redirect URI"),
                }
            }
            None => {}
        }
    }

    let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, &own_path, state)
        .await
        .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string()))?;
    let registered = register(&broker.http, policy, &d.metadata, &redirect.redirect_uri)
        .await
        .map_err(|e| {
            RpcError::new(
                ErrorKind::RegistrationFailed,
                format!(
                    "{e}; configure a pre-registered client_id under [servers.\"{}\"] in the config file, then run: mcp-auth reload",
                    printable(&d.server_url, MAX_QUOTED_CHARS)
                ),
            )
            .with_server(&d.server_url)
        })?;
    let reg = RegistrationRow {
        id: new_id("r"),
        issuer: issuer.clone(),
        kind: "dynamic".into(),
        client_id: registered.credentials.client_id.clone(),
        redirect_uri: Some(registered.redirect_uri.clone()),
        token_endpoint_auth_method: registered.credentials.auth_method.as_str().into(),
        has_client_secret: registered.credentials.client_secret.is_some(),
        created_at: now(),
    };
    if let Some(secret) = &registered.credentials.client_secret {
        broker
            .secrets
            .set(&keys::client_secret(&reg.id), secret)
            .await?;
    }
    broker.db.insert_registration(&reg).await?;
    tracing::info!(issuer = %issuer, client_id = %reg.client_id, "registered a client");
    Ok((reg, registered.credentials, redirect))
}

/// The registration row of the client configured for a server (its `client_id`, or none
/// for a grant without client authentication), made on first use.
async fn pre_registered(
    broker: &Broker,
    issuer: &str,
    cfg: &ServerConfig,
) -> Result<RegistrationRow, RpcError> {
    let client_id = cfg.client_id.clone().unwrap_or_default();
    let method = AuthMethod::parse(cfg.auth_method())
        .map_err(|e| RpcError::new(ErrorKind::InvalidParams, format!("config file: {e}")))?;
    match broker
        .db
        .find_registration(issuer, "pre-registered", Some(&client_id))
        .await?
    {
        Some(r) if r.token_endpoint_auth_method == method.as_str() => Ok(r),
        _ => {
            let r = RegistrationRow {
                id: new_id("r"),
                issuer: issuer.to_string(),
                kind: "pre-registered".into(),
                client_id,
                redirect_uri: cfg.redirect_uri.clone(),
                token_endpoint_auth_method: method.as_str().into(),
                has_client_secret: cfg.client_secret.is_some(),
                created_at: now(),
            };
            broker.db.insert_registration(&r).await?;
            Ok(r)
        }
    }
}

/// The host (as written: `localhost` stays `localhost`), port and path of a loopback
/// redirect URI from the config or a stored registration.
fn loopback_port_and_path(uri: &str) -> Result<(RedirectHost, u16, String), RpcError> {
    let bad = || {
        RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "redirect_uri `{uri}` must be http://127.0.0.1:<port>/<path> (or http://localhost:<port>/<path>, http://[::1]:<port>/<path>)"
            ),
        )
    };
    let url = Url::parse(uri).map_err(|_| bad())?;
    if url.scheme() != "http" || !mcp_authd_ipc::transport::is_loopback(&url) {
        return Err(bad());
    }
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => RedirectHost::Ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => RedirectHost::Ip(ip.into()),
        _ => RedirectHost::Localhost,
    };
    Ok((host, url.port().unwrap_or(80), url.path().to_string()))
}

/// The redirect path of dynamic registrations at `issuer`: `/callback/` and 16 hex digits
/// of the issuer's SHA-256, so each authorization server has its own (RFC 9700 §4.4.2).
fn callback_path(issuer: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(issuer.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{CALLBACK_PATH}/{hex}")
}

/// Scopes a client asked for: each an RFC 6749 scope token.
fn check_requested_scopes(scopes: &[String]) -> Result<(), RpcError> {
    for scope in scopes {
        mcp_authd_ipc::text::check_scope(scope)
            .map_err(|e| RpcError::new(ErrorKind::InvalidParams, e.to_string()))?;
    }
    Ok(())
}

fn authorization_url(
    a: &Authorization<'_>,
    client_id: &str,
    redirect_uri: &str,
    state: &Secret,
    pkce: &Pkce,
) -> Result<String, RpcError> {
    let mut url = a
        .policy
        .check(
            "authorization endpoint",
            &a.metadata.authorization_endpoint,
            Some(&a.metadata.issuer),
        )
        .map_err(|e| discovery_error(a.server_url, e))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state.expose())
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(resource) = a.resource {
            q.append_pair("resource", resource);
        }
        if !a.scopes.is_empty() {
            q.append_pair("scope", &a.scopes.join(" "));
        }
        if a.prompt_consent {
            q.append_pair("prompt", "consent");
        }
        for (name, value) in a.authorization_params {
            q.append_pair(name, value);
        }
    }
    Ok(url.to_string())
}

/// RFC 9207 §2.4: compare `iss` exactly when present; require it when the AS advertises
/// it, or when `required` (a client id shared by several authorization servers).
fn check_issuer(metadata: &AsMetadata, iss: Option<&str>, required: bool) -> Result<(), String> {
    let expected = &metadata.issuer;
    match (
        iss,
        required
            || metadata
                .authorization_response_iss_parameter_supported
                .unwrap_or(false),
    ) {
        (Some(got), _) if got == expected => Ok(()),
        (Some(got), _) => Err(format!(
            "the authorization response came from issuer `{}`, not `{expected}` (possible mix-up attack); nothing was redeemed",
            crate::oauth::printable(got, 200)
        )),
        (None, true) => Err(format!(
            "the authorization response carries no `iss` parameter, which {expected} must send (it promises RFC 9207, or mcp-authd's client id is shared by several servers); nothing was redeemed"
        )),
        (None, false) => Ok(()),
    }
}

fn login_failed(server: &str, why: &str) -> RpcError {
    RpcError::new(
        ErrorKind::LoginFailed,
        format!(
            "login to {server} failed: {why}; run again once that is fixed: {}",
            login_command(server, &[])
        ),
    )
    .with_server(server)
}

fn discovery_error(server: &str, e: OAuthError) -> RpcError {
    let kind = match e {
        OAuthError::Untrusted(_) => ErrorKind::DiscoveryFailed,
        _ => ErrorKind::ServerError,
    };
    let command = login_command(server, &[]);
    let next = match kind {
        ErrorKind::DiscoveryFailed => format!(
            "check that {server} is the MCP endpoint itself; if it is, its operator must fix the metadata, then run: {command}"
        ),
        _ => format!("check the URL and the network, then retry: {command}"),
    };
    RpcError::new(
        kind,
        format!("cannot discover how to log in to {server}: {e}; {next}"),
    )
    .with_server(server)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::discovery::ResourceMetadata;

    fn discovery(iss_supported: Option<bool>) -> Discovery {
        Discovery {
            server_url: "https://h.example/mcp".into(),
            resource: "https://h.example/mcp".into(),
            resource_metadata: ResourceMetadata {
                resource: "https://h.example/mcp".into(),
                authorization_servers: vec!["https://as.example".into()],
                scopes_supported: None,
            },
            challenge: None,
            metadata: serde_json::from_value(serde_json::json!({
                "issuer": "https://as.example",
                "authorization_endpoint": "https://as.example/authorize",
                "token_endpoint": "https://as.example/token",
                "authorization_response_iss_parameter_supported": iss_supported,
            }))
            .unwrap(),
            legacy: false,
        }
    }

    /// Each authorization server has its own redirect path; the same one every time.
    #[test]
    fn callback_paths_are_per_issuer() {
        let a = callback_path("https://as-a.example");
        assert_eq!(a, callback_path("https://as-a.example"));
        assert_ne!(a, callback_path("https://as-b.example"));
        assert!(
            a.starts_with("/callback/") && a.len() == "/callback/".len() + 16,
            "{a}"
        );
    }

    /// With a client id shared by several servers (a Client ID Metadata Document) `iss` is
    /// required even from a server that does not promise it; a wrong one is always refused.
    #[test]
    fn iss_is_required_for_a_shared_client_id() {
        let d = discovery(None);
        let d = &d.metadata;
        assert!(check_issuer(d, None, false).is_ok());
        let e = check_issuer(d, None, true).unwrap_err();
        assert!(e.contains("no `iss`"), "{e}");
        assert!(check_issuer(d, Some("https://as.example"), true).is_ok());
        let e = check_issuer(d, Some("https://evil.example"), false).unwrap_err();
        assert!(e.contains("mix-up"), "{e}");
        assert!(check_issuer(&discovery(Some(true)).metadata, None, false).is_err());
    }
}
