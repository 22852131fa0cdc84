//! The browser login: discovery, client registration, authorization code + PKCE through
//! the loopback redirect, code exchange. One login per server at a time; every caller that
//! asks meanwhile joins it.

use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::methods::{GrantInfo, LoginParams, LoginPending};
use mcp_authd_ipc::{ErrorKind, RpcError};
use tokio::sync::watch;
use url::Url;

use crate::broker::{AccessToken, Broker, LoginProgress, new_grant_row, server_error};
use crate::config::{Quirks, ServerConfig};
use crate::loopback::{LoopbackError, LoopbackRedirect, RedirectHost};
use crate::oauth::OAuthError;
use crate::oauth::challenge::BearerChallenge;
use crate::oauth::discovery::{Discovery, discover, normalize_server_url};
use crate::oauth::pkce::{Pkce, random_token};
use crate::oauth::registration::{AuthMethod, ClientCredentials, register};
use crate::oauth::token::{now, request_tokens};
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
    let discovery = discover(&broker.http, server_url, challenge)
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

    let state = random_token();
    // A fixed redirect URI (the caller's, else the config's) for authorization servers
    // that accept only the one registered with them: used as given or the login fails.
    let fixed_redirect = p
        .redirect_uri
        .clone()
        .or_else(|| server_cfg.as_ref().and_then(|c| c.redirect_uri.clone()));
    let (registration, credentials, redirect) = client_for(
        broker,
        &discovery,
        server_cfg.as_ref(),
        fixed_redirect.as_deref(),
        &state,
    )
    .await?;
    let pkce = Pkce::new();
    let quirks = server_cfg
        .as_ref()
        .map(|c| c.quirks.clone())
        .unwrap_or_default();
    let authorization_url = authorization_url(
        &discovery,
        &credentials.client_id,
        &redirect.redirect_uri,
        &state,
        &pkce,
        &scopes,
        &quirks,
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
                    "{e}; run again with more time: mcp-auth login {server_url} --timeout {}",
                    timeout.saturating_mul(2).max(600)
                ),
            )
            .with_server(server_url),
            other => RpcError::new(ErrorKind::Internal, other.to_string()),
        })?;
    check_issuer(&discovery, response.iss.as_deref())
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
    if !quirks.omit_resource {
        form.push(("resource", discovery.resource.clone()));
    }
    let tokens = request_tokens(&broker.http, &metadata.token_endpoint, &credentials, form)
        .await
        .map_err(|e| match e {
            OAuthError::TokenError(_) => login_failed(server_url, &e.to_string()),
            other => server_error(server_url, "cannot redeem the authorization code", &other),
        })?;

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
    broker.cache_access_token(
        &grant_id,
        AccessToken::new(tokens.access_token, tokens.expires_at),
    );
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
async fn client_for(
    broker: &Broker,
    d: &Discovery,
    cfg: Option<&ServerConfig>,
    fixed_redirect: Option<&str>,
    state: &Secret,
) -> Result<(RegistrationRow, ClientCredentials, LoopbackRedirect), RpcError> {
    let issuer = &d.metadata.issuer;
    // The fixed redirect URI's listener, or one on any free port.
    let bind_redirect = || async {
        match fixed_redirect {
            Some(uri) => bind_fixed(uri, state).await,
            None => LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, CALLBACK_PATH, state)
                .await
                .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string())),
        }
    };
    if let Some((cfg, client_id)) = cfg.and_then(|c| c.client_id.as_ref().map(|id| (c, id))) {
        let redirect = bind_redirect().await?;
        let method = match &cfg.token_endpoint_auth_method {
            Some(m) => AuthMethod::parse(m).map_err(|e| {
                RpcError::new(ErrorKind::InvalidParams, format!("config file: {e}"))
            })?,
            None if cfg.client_secret.is_some() => AuthMethod::ClientSecretBasic,
            None => AuthMethod::None,
        };
        let reg = match broker
            .db
            .find_registration(issuer, "pre-registered", Some(client_id))
            .await?
        {
            Some(r) if r.token_endpoint_auth_method == method.as_str() => r,
            _ => {
                let r = RegistrationRow {
                    id: new_id("r"),
                    issuer: issuer.clone(),
                    kind: "pre-registered".into(),
                    client_id: client_id.clone(),
                    redirect_uri: cfg.redirect_uri.clone(),
                    token_endpoint_auth_method: method.as_str().into(),
                    has_client_secret: cfg.client_secret.is_some(),
                    created_at: now(),
                };
                broker.db.insert_registration(&r).await?;
                r
            }
        };
        let credentials = broker.credentials(&reg, Some(cfg)).await?;
        return Ok((reg, credentials, redirect));
    }

    if let Some(url) = &broker.config().client_metadata_url
        && d.metadata.client_id_metadata_document_supported == Some(true)
    {
        let redirect = bind_redirect().await?;
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
        let credentials = broker.credentials(&reg, None).await?;
        return Ok((reg, credentials, redirect));
    }

    if let Some(reg) = broker.db.find_registration(issuer, "dynamic", None).await?
        // A registration for another redirect URI than the fixed one is not reused.
        && fixed_redirect.is_none_or(|uri| reg.redirect_uri.as_deref() == Some(uri))
    {
        let port = reg
            .redirect_uri
            .as_deref()
            .and_then(|u| loopback_port_and_path(u).ok());
        if let Some((host, port, path)) = port {
            match LoopbackRedirect::bind(&host, port, &path, state).await {
                Ok(redirect) => match broker.credentials(&reg, None).await {
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
    }

    let redirect = bind_redirect().await?;
    let overrides = cfg.and_then(|c| c.client_metadata.as_ref());
    let registered = register(&broker.http, &d.metadata, &redirect.redirect_uri, overrides)
        .await
        .map_err(|e| {
            RpcError::new(
                ErrorKind::RegistrationFailed,
                format!(
                    "{e}; configure a pre-registered client_id under [servers.\"{}\"] in the config file, then run: mcp-auth reload",
                    d.server_url
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

/// Listens on exactly `uri` (from `--callback-port`/`--callback-host` or the config): an
/// authorization server that knows only this URI would refuse any other, so a port in
/// use is an error, never a quiet move to another port.
async fn bind_fixed(uri: &str, state: &Secret) -> Result<LoopbackRedirect, RpcError> {
    let (host, port, path) = loopback_port_and_path(uri)?;
    LoopbackRedirect::bind(&host, port, &path, state)
        .await
        .map_err(|e| {
            RpcError::new(
                ErrorKind::InvalidParams,
                format!(
                    "{e}: the redirect URI {uri} is fixed (--callback-port or redirect_uri in the config); stop what holds the port, or register another port with the authorization server and pass it"
                ),
            )
        })
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
    if url.scheme() != "http" || !crate::oauth::http::is_loopback(&url) {
        return Err(bad());
    }
    let host = match url.host() {
        Some(url::Host::Ipv4(ip)) => RedirectHost::Ip(ip.into()),
        Some(url::Host::Ipv6(ip)) => RedirectHost::Ip(ip.into()),
        _ => RedirectHost::Localhost,
    };
    Ok((host, url.port().unwrap_or(80), url.path().to_string()))
}

fn authorization_url(
    d: &Discovery,
    client_id: &str,
    redirect_uri: &str,
    state: &Secret,
    pkce: &Pkce,
    scopes: &[String],
    quirks: &Quirks,
) -> Result<String, RpcError> {
    let mut url = crate::oauth::http::require_secure(
        "authorization endpoint",
        &d.metadata.authorization_endpoint,
    )
    .map_err(|e| discovery_error(&d.server_url, e))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code")
            .append_pair("client_id", client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("state", state.expose())
            .append_pair("code_challenge", &pkce.challenge)
            .append_pair("code_challenge_method", "S256");
        if !quirks.omit_resource {
            q.append_pair("resource", &d.resource);
        }
        if !scopes.is_empty() {
            q.append_pair("scope", &scopes.join(" "));
        }
        for (name, value) in &quirks.authorization_params {
            q.append_pair(name, value);
        }
    }
    Ok(url.to_string())
}

/// RFC 9207 §2.4: compare `iss` exactly when present; require it when the AS advertises it.
fn check_issuer(d: &Discovery, iss: Option<&str>) -> Result<(), String> {
    let expected = &d.metadata.issuer;
    match (
        iss,
        d.metadata
            .authorization_response_iss_parameter_supported
            .unwrap_or(false),
    ) {
        (Some(got), _) if got == expected => Ok(()),
        (Some(got), _) => Err(format!(
            "the authorization response came from issuer `{}`, not `{expected}` (possible mix-up attack); nothing was redeemed",
            crate::oauth::printable(got, 200)
        )),
        (None, true) => Err(format!(
            "{expected} promises an `iss` parameter in its authorization response but sent none; nothing was redeemed"
        )),
        (None, false) => Ok(()),
    }
}

fn login_failed(server: &str, why: &str) -> RpcError {
    RpcError::new(
        ErrorKind::LoginFailed,
        format!(
            "login to {server} failed: {why}; run again once that is fixed: mcp-auth login {server}"
        ),
    )
    .with_server(server)
}

fn discovery_error(server: &str, e: OAuthError) -> RpcError {
    let kind = match e {
        OAuthError::Untrusted(_) => ErrorKind::DiscoveryFailed,
        _ => ErrorKind::ServerError,
    };
    let next = match kind {
        ErrorKind::DiscoveryFailed => format!(
            "check that {server} is the MCP endpoint itself; if it is, its operator must fix the metadata, then run: mcp-auth login {server}"
        ),
        _ => format!("check the URL and the network, then retry: mcp-auth login {server}"),
    };
    RpcError::new(
        kind,
        format!("cannot discover how to log in to {server}: {e}; {next}"),
    )
    .with_server(server)
}
