//! The browser login: discovery, client registration, authorization code + PKCE through
//! the loopback redirect, code exchange. One login per server at a time; every caller that
//! asks meanwhile joins it.

use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::methods::{GrantInfo, LoginFlow, LoginParams, LoginPending};
use mcp_authd_ipc::text::{MAX_QUOTED_CHARS, login_command, shell_command};
use mcp_authd_ipc::{ErrorKind, RpcError};
use url::Url;

use crate::broker::{
    AccessToken, Broker, Join, LoginKey, LoginProgress, Started, new_grant_row, server_error,
};
use crate::config::{GrantKind, Quirks, ServerConfig};
use crate::loopback::{LoopbackError, LoopbackRedirect, RedirectHost};
use crate::oauth::OAuthError;
use crate::oauth::challenge::BearerChallenge;
use crate::oauth::device::{self, Poll};
use crate::oauth::discovery::{Discovery, ResourceMetadata, discover, normalize_server_url};
use crate::oauth::dpop::{self, DpopKey};
use crate::oauth::http::UrlPolicy;
use crate::oauth::pkce::{Pkce, random_token};
use crate::oauth::printable;
use crate::oauth::registration::{AuthMethod, ClientCredentials, ClientMetadata, register};
use crate::oauth::token::{DpopSigner, now, request_tokens};
use crate::secret::Secret;
use crate::store::db::STATE_ACTIVE;
use crate::store::{RegistrationRow, keys, new_id};

const CALLBACK_PATH: &str = "/callback";
/// Longest `login_hint` sent (an email or user name; anything longer is a mistake).
const MAX_LOGIN_HINT_LEN: usize = 256;
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
    if let Some(hint) = &p.login_hint {
        check_login_hint(hint).map_err(|why| RpcError::new(ErrorKind::InvalidParams, why))?;
    }
    // One login per account of a server: a second account's login runs beside it.
    let key = LoginKey::new(&server_url, p.account.as_deref());
    let mut progress = match broker.logins.join_or_start(key, LoginProgress::Starting) {
        Join::Joined(progress) => progress,
        Join::Started(login) => {
            let progress = login.subscribe();
            let broker = broker.clone();
            tokio::spawn(async move {
                let result = run(&broker, &server_url, p, challenge, &login).await;
                if let Err(e) = &result {
                    tracing::warn!(server = %server_url, "login failed: {}", e.message);
                }
                login.finish(LoginProgress::Done(Box::new(result)));
            });
            progress
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
    progress: &Started<LoginProgress>,
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
    let account_name = p.account.clone().unwrap_or_default();
    let login_hint = match p.login_hint.clone() {
        Some(hint) => Some(hint),
        None => broker
            .db
            .grant_by_key(&discovery.resource, &metadata.issuer, &account_name)
            .await?
            .and_then(|g| g.login_hint)
            .or_else(|| p.account.as_deref().and_then(hint_of_account)),
    };

    let client_cfg = broker
        .config()
        .client(server_url, &metadata.issuer)
        .map_err(|why| login_failed(server_url, &why))?
        .cloned();
    let state = random_token();
    // A fixed redirect URI (the caller's, else the config's) for authorization servers
    // that accept only the one registered with them: used as given or the login fails.
    let fixed_redirect = p
        .redirect_uri
        .clone()
        .or_else(|| server_cfg.as_ref().and_then(|c| c.redirect_uri.clone()));
    let overrides = server_cfg.as_ref().and_then(|c| c.client_metadata.as_ref());
    let (registration, credentials, redirect) = client_for(
        broker,
        &policy,
        &discovery,
        client_cfg.as_ref(),
        Fixed {
            redirect_uri: fixed_redirect.as_deref(),
            client_metadata: overrides,
        },
        &state,
    )
    .await?;
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
    // The account's login hint goes with the authorization request's own parameters.
    let quirks = with_login_hint(&quirks, login_hint.as_deref());
    let timeout = p
        .timeout_secs
        .unwrap_or(broker.config().login_timeout_secs)
        .max(1);
    // A new key per login: the grant's tokens are bound to it (RFC 9449). By default only
    // where both ends take DPoP: an MCP server that takes only Bearer tokens (the MCP
    // TypeScript SDK's, say) refuses a DPoP-bound token even when its authorization server
    // offers DPoP.
    let dpop_key = server_cfg
        .as_ref()
        .and_then(|c| c.dpop)
        .unwrap_or_else(|| {
            discovery.resource_takes_dpop()
                && dpop::offered(metadata.dpop_signing_alg_values_supported.as_deref())
        })
        .then(DpopKey::generate);
    let consent = Consent {
        broker,
        policy: &policy,
        // One client id at several authorization servers (a Client ID Metadata Document)
        // has one redirect path for all of them: only `iss` tells whose response this is.
        iss_required: registration.kind == KIND_METADATA_DOCUMENT,
        prompt_consent,
        discovery: &discovery,
        credentials: &credentials,
        scopes: &scopes,
        quirks: &quirks,
        timeout,
        progress,
        account: p.account.clone(),
        dpop: dpop_key.as_ref().map(|key| DpopSigner {
            key,
            nonces: &broker.dpop_nonces,
        }),
    };
    let tokens = match choose_flow(p.flow, &discovery) {
        Chosen::Device => {
            // The registration is shared with the browser flow; its listener is not needed.
            drop(redirect);
            consent.device().await?
        }
        Chosen::NoDevice => {
            return Err(login_failed(
                server_url,
                &format!(
                    "{} offers no device login (its metadata has no device_authorization_endpoint); log in with `{}` instead",
                    metadata.issuer,
                    again_command(server_url, " --manual")
                ),
            ));
        }
        Chosen::Code {
            manual,
            open_browser,
        } => {
            let open_browser = open_browser && !manual && p.open_browser.unwrap_or(true);
            consent
                .authorization_code(redirect, &state, manual, open_browser)
                .await?
        }
    };

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
            account_name,
            login_hint,
        },
    )
    .await
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
    progress: &Started<LoginProgress>,
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
            account_name: p.account.clone().unwrap_or_default(),
            login_hint: None,
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
    progress: &Started<LoginProgress>,
) -> Result<(), RpcError> {
    let issuer = enterprise.idp_issuer.as_deref().ok_or_else(|| {
        login_failed(
            server_url,
            "[enterprise] needs id_token = { … } or idp_issuer",
        )
    })?;
    let policy = broker.url_policy(server_url);
    // Its endpoints pass the transport policy here, as at discovery.
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
    let prompt_consent =
        scopes.iter().any(|s| s == "offline_access") && metadata.wants_prompt_consent();
    // The IdP is not an MCP server's authorization server: no resource, no PRM.
    let discovery = Discovery {
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
    };
    let quirks = Quirks {
        omit_resource: true,
        ..Quirks::default()
    };
    let credentials = crate::machine::idp_client(enterprise);
    let timeout = p
        .timeout_secs
        .unwrap_or(broker.config().login_timeout_secs)
        .max(1);
    let consent = Consent {
        broker,
        policy: &policy,
        iss_required: false,
        prompt_consent,
        discovery: &discovery,
        credentials: &credentials,
        scopes: &scopes,
        quirks: &quirks,
        timeout,
        progress,
        account: p.account.clone(),
        dpop: None,
    };
    let open_browser = p.open_browser.unwrap_or(true);
    let tokens = consent
        .authorization_code(redirect, &state, false, open_browser)
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
    /// The account logged in to (empty: the default one) and the `login_hint` it sent.
    account_name: String,
    login_hint: Option<String>,
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
        account_name,
        login_hint,
    } = obtained;
    let metadata = &discovery.metadata;
    let existing = broker
        .db
        .grant_by_key(&discovery.resource, &metadata.issuer, &account_name)
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
            &account_name,
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
    row.login_hint = login_hint;
    row.updated_at = now();
    broker.db.upsert_grant(&row).await?;
    // Only this account's: the other accounts of the server keep their grants.
    for old in broker
        .db
        .grants_of_server(server_url, &account_name)
        .await?
    {
        if old.id != grant_id {
            tracing::info!(server = %server_url, grant = %old.id, issuer = %old.issuer, "the server moved to {}; forgetting the grant of its former authorization server", metadata.issuer);
            let lock = broker.lock_grant(&old.id).await;
            broker.forget_grant(&old, &lock).await?;
        }
    }
    broker.cache_access_token(&grant_id, AccessToken::from_tokens(&tokens));
    tracing::info!(server = %server_url, grant = %grant_id, account = %account_name, "logged in");
    broker.grant_info(&row).await
}

/// Which way `login` asks for consent, once the authorization server's metadata is known.
enum Chosen {
    Device,
    /// `device` asked for, and the server offers none.
    NoDevice,
    /// Authorization code + PKCE; `manual` takes a pasted response too.
    Code {
        manual: bool,
        open_browser: bool,
    },
}

fn choose_flow(flow: Option<LoginFlow>, d: &Discovery) -> Chosen {
    let device = d.metadata.device_authorization_endpoint.is_some();
    match flow.unwrap_or_default() {
        LoginFlow::Browser => Chosen::Code {
            manual: false,
            open_browser: true,
        },
        LoginFlow::Manual => Chosen::Code {
            manual: true,
            open_browser: false,
        },
        LoginFlow::Device if device => Chosen::Device,
        LoginFlow::Device => Chosen::NoDevice,
        LoginFlow::DeviceIfSupported if device => Chosen::Device,
        // No display to open a browser on: show the URL only.
        LoginFlow::DeviceIfSupported => Chosen::Code {
            manual: false,
            open_browser: false,
        },
    }
}

/// Everything a consent flow needs to end in tokens for the chosen client.
struct Consent<'a> {
    broker: &'a Arc<Broker>,
    policy: &'a UrlPolicy,
    /// The authorization response must carry `iss` (see [`check_issuer`]).
    iss_required: bool,
    /// Add `prompt=consent` (see [`AuthorizationRequest::prompt_consent`]).
    prompt_consent: bool,
    discovery: &'a Discovery,
    credentials: &'a ClientCredentials,
    scopes: &'a [String],
    quirks: &'a Quirks,
    timeout: u64,
    progress: &'a Started<LoginProgress>,
    /// The account being logged in to, for `login.pending` (absent: the default one).
    account: Option<String>,
    /// The grant's DPoP key, when its tokens are to be bound to one (RFC 9449).
    dpop: Option<DpopSigner<'a>>,
}

impl Consent<'_> {
    /// Authorization code + PKCE: the browser brings the response to the loopback
    /// redirect, or (`manual`) the user pastes it (`login.paste`); both go through the
    /// listener's state check, then the same `iss` check and code exchange.
    async fn authorization_code(
        &self,
        redirect: LoopbackRedirect,
        state: &Secret,
        manual: bool,
        open_browser: bool,
    ) -> Result<crate::oauth::token::Tokens, RpcError> {
        let (d, server_url, timeout) = (
            self.discovery,
            self.discovery.server_url.as_str(),
            self.timeout,
        );
        let pkce = Pkce::new();
        let authorization_url = authorization_url(
            d,
            AuthorizationRequest {
                client_id: &self.credentials.client_id,
                redirect_uri: &redirect.redirect_uri,
                state,
                pkce: &pkce,
                scopes: self.scopes,
                prompt_consent: self.prompt_consent,
            },
            self.quirks,
        )?;
        let browser_opened = if open_browser {
            crate::browser::open(&authorization_url).await
        } else {
            false
        };
        let _paste = manual.then(|| {
            let iss_promised = d
                .metadata
                .authorization_response_iss_parameter_supported
                .unwrap_or(false);
            let key = LoginKey::new(server_url, self.account.as_deref());
            self.broker.pastes.open(key, redirect.inbox(iss_promised))
        });
        tracing::info!(server = %server_url, browser_opened, manual, "waiting up to {timeout} s for the browser login");
        self.progress.report(LoginProgress::Pending(LoginPending {
            server: server_url.to_string(),
            authorization_url: authorization_url.clone(),
            timeout_secs: timeout,
            browser_opened,
            flow: Some(if manual {
                LoginFlow::Manual
            } else {
                LoginFlow::Browser
            }),
            user_code: None,
            verification_uri: None,
            verification_uri_complete: None,
            account: self.account.clone(),
        }));

        let redirect_uri = redirect.redirect_uri.clone();
        let again = if manual { " --manual" } else { "" };
        let response = redirect
            .wait(Duration::from_secs(timeout))
            .await
            .map_err(|e| match e {
                LoopbackError::Timeout(_) => RpcError::new(
                    ErrorKind::LoginTimeout,
                    format!(
                        "{e}; run again with more time: {}",
                        again_command(
                            server_url,
                            &format!("{again} --timeout {}", timeout.saturating_mul(2).max(600))
                        )
                    ),
                )
                .with_server(server_url),
                other => RpcError::new(ErrorKind::Internal, other.to_string()),
            })?;
        let failed = |why: &str| login_failed_again(server_url, why, again);
        check_issuer(d, response.iss.as_deref(), self.iss_required).map_err(|why| failed(&why))?;
        if let Some(error) = &response.error {
            let description = response
                .error_description
                .as_deref()
                .map(|d| format!(" ({})", crate::oauth::printable(d, 200)))
                .unwrap_or_default();
            return Err(failed(&format!(
                "the authorization server refused: {}{description}",
                crate::oauth::printable(error, 64)
            )));
        }
        let code = response
            .code
            .ok_or_else(|| failed("the authorization response carried no code"))?;

        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.expose().to_string()),
            ("redirect_uri", redirect_uri),
            ("code_verifier", pkce.verifier.expose().to_string()),
        ];
        if !self.quirks.omit_resource {
            form.push(("resource", d.resource.clone()));
        }
        request_tokens(
            &self.broker.http,
            self.policy,
            &d.metadata.issuer,
            &d.metadata.token_endpoint,
            self.credentials,
            form,
            self.dpop,
        )
        .await
        .map_err(|e| match e {
            OAuthError::TokenError(_) => failed(&e.to_string()),
            other => server_error(server_url, "cannot redeem the authorization code", &other),
        })
    }

    /// RFC 8628: a code for the user to enter on any device, then polling the token
    /// endpoint at the server's pace until the user approved, denied, or time ran out.
    async fn device(&self) -> Result<crate::oauth::token::Tokens, RpcError> {
        let d = self.discovery;
        let server_url = d.server_url.as_str();
        let Some(endpoint) = d.metadata.device_authorization_endpoint.as_deref() else {
            return Err(RpcError::new(
                ErrorKind::Internal,
                "no device authorization endpoint",
            ));
        };
        // The resource indicator goes with both requests, as on the browser path.
        let resource: Vec<(&'static str, String)> = if self.quirks.omit_resource {
            Vec::new()
        } else {
            vec![("resource", d.resource.clone())]
        };
        let mut form = resource.clone();
        if !self.scopes.is_empty() {
            form.push(("scope", self.scopes.join(" ")));
        }
        // Extra authorization parameters (an `audience`, say) apply here too; `prompt`
        // is about a browser page and has no meaning for a device login.
        let extra: Vec<(String, String)> = self
            .quirks
            .authorization_params
            .iter()
            .filter(|(name, _)| name.as_str() != "prompt")
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        let started = device::start(
            &self.broker.http,
            self.policy,
            &d.metadata.issuer,
            endpoint,
            self.credentials,
            form,
            &extra,
        )
        .await
        .map_err(|e| match e {
            OAuthError::TokenError(_) => login_failed(
                server_url,
                &format!("the device authorization endpoint answered {e}"),
            ),
            other => server_error(server_url, "cannot start the device login", &other),
        })?;
        let deadline_secs = self.timeout.min(started.expires_in.as_secs().max(1));
        tracing::info!(server = %server_url, interval = started.interval.as_secs(), "waiting up to {deadline_secs} s for the device login");
        self.progress.report(LoginProgress::Pending(LoginPending {
            server: server_url.to_string(),
            authorization_url: started
                .verification_uri_complete
                .clone()
                .unwrap_or_else(|| started.verification_uri.clone()),
            timeout_secs: deadline_secs,
            browser_opened: false,
            flow: Some(LoginFlow::Device),
            user_code: Some(started.user_code.clone()),
            verification_uri: Some(started.verification_uri.clone()),
            verification_uri_complete: started.verification_uri_complete.clone(),
            account: self.account.clone(),
        }));
        // The code's own end (plus a little, so the server's `expired_token` is heard),
        // or the login's timeout, whichever comes first.
        let code_ends = started.expires_in + CODE_EXPIRY_GRACE;
        let by_code = code_ends < Duration::from_secs(self.timeout);
        let deadline = tokio::time::Instant::now()
            + if by_code {
                code_ends
            } else {
                Duration::from_secs(self.timeout)
            };
        let again = again_command(server_url, " --device");
        let expired = |why: &str| {
            RpcError::new(
                ErrorKind::LoginTimeout,
                format!(
                    "the device code for {server_url} expired before the login was approved ({why}); run again for a new code: {again}"
                ),
            )
            .with_server(server_url)
        };
        let mut interval = started.interval;
        // Extra wait after a failed connection (RFC 8628 §3.5: back off exponentially).
        let mut backoff = Duration::ZERO;
        loop {
            let wait = interval + backoff;
            if tokio::time::Instant::now() + wait > deadline {
                if by_code {
                    return Err(expired("its expires_in passed"));
                }
                return Err(RpcError::new(
                    ErrorKind::LoginTimeout,
                    format!(
                        "the device login was not approved within {} s; run again with more time: {}",
                        self.timeout,
                        again_command(
                            server_url,
                            &format!(" --device --timeout {}", self.timeout.saturating_mul(2).max(600))
                        )
                    ),
                )
                .with_server(server_url));
            }
            tokio::time::sleep(wait).await;
            let polled = device::poll(
                &self.broker.http,
                self.policy,
                &d.metadata,
                self.credentials,
                &started.device_code,
                &resource,
                self.dpop,
            )
            .await;
            let polled = match polled {
                Ok(polled) => polled,
                Err(e @ OAuthError::Transport { .. }) => {
                    backoff = (backoff * 2).max(interval).min(MAX_POLL_BACKOFF);
                    tracing::warn!(server = %server_url, "polling for the device login failed ({e}); trying again in {} s", (interval + backoff).as_secs());
                    continue;
                }
                Err(e @ OAuthError::TokenError(_)) => {
                    return Err(login_failed_again(server_url, &e.to_string(), " --device"));
                }
                Err(other) => {
                    return Err(server_error(
                        server_url,
                        "cannot complete the device login",
                        &other,
                    ));
                }
            };
            backoff = Duration::ZERO;
            match polled {
                Poll::Granted(tokens) => return Ok(tokens),
                Poll::Pending => {}
                Poll::SlowDown => {
                    interval += Duration::from_secs(device::SLOW_DOWN_STEP_SECS);
                    tracing::info!(server = %server_url, "the authorization server asked to poll more slowly: every {} s now", interval.as_secs());
                }
                Poll::Denied => {
                    return Err(RpcError::new(
                        ErrorKind::LoginFailed,
                        format!(
                            "login to {server_url} failed: the device login was denied (access_denied); to try again, run: {again}"
                        ),
                    )
                    .with_server(server_url));
                }
                Poll::Expired => return Err(expired("expired_token")),
            }
        }
    }
}

/// How long after a device code's `expires_in` the daemon still polls, so that the
/// server's own `expired_token` (or a late approval) is heard despite clock differences.
const CODE_EXPIRY_GRACE: Duration = Duration::from_secs(5);
/// The longest extra wait between polls after failed connections.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);

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
        .pastes
        .find(&LoginKey::new(&server_url, account))
        .ok_or_else(|| {
            let mut command = vec!["mcp-auth", "login", &server_url, "--manual"];
            command.extend(account.iter().flat_map(|a| ["--account", a]));
            RpcError::new(
                ErrorKind::NotFound,
                format!(
                    "no manual login to {server_url} is waiting for a pasted response; start one: {}",
                    shell_command(&command)
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
    fixed: Fixed<'_>,
    state: &Secret,
) -> Result<(RegistrationRow, ClientCredentials, LoopbackRedirect), RpcError> {
    let issuer = &d.metadata.issuer;
    let own_path = callback_path(issuer);
    // A fixed redirect URI without a path of its own (`--callback-port` alone) gets one:
    // `/callback` for a client registered by hand, the issuer's own path for a dynamic
    // registration (the user's path, when given, wins).
    let fixed_static = fixed.redirect_uri.map(|uri| with_path(uri, CALLBACK_PATH));
    let fixed_dynamic = fixed.redirect_uri.map(|uri| with_path(uri, &own_path));
    // The fixed redirect URI's listener, or one on any free port.
    let bind_redirect = |fixed: Option<String>, path: String| async move {
        match fixed {
            Some(uri) => bind_fixed(&uri, state).await,
            None => LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, &path, state)
                .await
                .map_err(|e| RpcError::new(ErrorKind::Internal, e.to_string())),
        }
    };
    if let Some(cfg) = cfg.filter(|c| c.client_id.is_some()) {
        let fixed = fixed_static.clone().or_else(|| cfg.redirect_uri.clone());
        let redirect = bind_redirect(fixed, CALLBACK_PATH.to_string()).await?;
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
        let redirect = bind_redirect(fixed_static.clone(), CALLBACK_PATH.to_string()).await?;
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

    if let Some(reg) = broker.db.find_registration(issuer, "dynamic", None).await?
        // A registration for another redirect URI than the fixed one is not reused.
        && fixed_dynamic
            .as_deref()
            .is_none_or(|uri| reg.redirect_uri.as_deref() == Some(uri))
    {
        let port = reg
            .redirect_uri
            .as_deref()
            .and_then(|u| loopback_port_and_path(u).ok());
        match port {
            // Registered before redirect paths were per issuer: replaced (unless it is
            // the fixed redirect URI the user chose).
            Some((_, _, path)) if path != own_path && fixed_dynamic.is_none() => tracing::info!(
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

    let redirect = bind_redirect(fixed_dynamic.clone(), own_path.clone()).await?;
    let registered = register(
        &broker.http,
        policy,
        &d.metadata,
        &redirect.redirect_uri,
        fixed.client_metadata,
    )
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
                    "{e}: the redirect URI {} is fixed (--callback-port or redirect_uri in the config); stop what holds the port, or register another port with the authorization server and pass it",
                    printable(uri, MAX_QUOTED_CHARS)
                ),
            )
        })
}

/// What the user fixed about the client for one login: its redirect URI and what dynamic
/// registration says about it.
struct Fixed<'a> {
    /// `--callback-port` (with `--callback-host`/`--callback-path`), else the config's
    /// `redirect_uri`; may lack a path (see [`with_path`]).
    redirect_uri: Option<&'a str>,
    client_metadata: Option<&'a ClientMetadata>,
}

/// `uri` as given when it names a path (`http://127.0.0.1:8080/cb`, even `/`), else with
/// `path` appended (`http://127.0.0.1:8080`): the path the user chose always wins.
fn with_path(uri: &str, path: &str) -> String {
    let after_scheme = uri.split_once("://").map_or(uri, |(_, rest)| rest);
    if after_scheme.contains('/') {
        uri.to_string()
    } else {
        format!("{uri}{path}")
    }
}

/// The host (as written: `localhost` stays `localhost`), port and path of a loopback
/// redirect URI from the config or a stored registration.
fn loopback_port_and_path(uri: &str) -> Result<(RedirectHost, u16, String), RpcError> {
    let bad = || {
        RpcError::new(
            ErrorKind::InvalidParams,
            format!(
                "redirect_uri `{}` must be http://127.0.0.1:<port>/<path> (or http://localhost:<port>/<path>, http://[::1]:<port>/<path>)",
                printable(uri, MAX_QUOTED_CHARS)
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

/// What one authorization request asks for, beyond the discovered endpoints.
struct AuthorizationRequest<'a> {
    client_id: &'a str,
    redirect_uri: &'a str,
    state: &'a Secret,
    pkce: &'a Pkce,
    scopes: &'a [String],
    /// Add `prompt=consent` (see [`crate::oauth::discovery::AsMetadata::wants_prompt_consent`]).
    prompt_consent: bool,
}

fn authorization_url(
    d: &Discovery,
    r: AuthorizationRequest<'_>,
    quirks: &Quirks,
) -> Result<String, RpcError> {
    let AuthorizationRequest {
        client_id,
        redirect_uri,
        state,
        pkce,
        scopes,
        prompt_consent,
    } = r;
    // Checked by the transport policy at discovery (discovery::check_endpoints).
    let mut url = Url::parse(&d.metadata.authorization_endpoint)
        .map_err(|e| discovery_error(&d.server_url, OAuthError::Untrusted(e.to_string())))?;
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
        if prompt_consent {
            q.append_pair("prompt", "consent");
        }
        for (name, value) in &quirks.authorization_params {
            q.append_pair(name, value);
        }
    }
    Ok(url.to_string())
}

/// The quirks with the login's `login_hint` among the extra authorization parameters: the
/// user's hint (or the account's) replaces one the config file sets for every login.
fn with_login_hint(quirks: &Quirks, login_hint: Option<&str>) -> Quirks {
    let mut quirks = quirks.clone();
    if let Some(hint) = login_hint {
        quirks
            .authorization_params
            .insert("login_hint".to_string(), hint.to_string());
    }
    quirks
}

/// The `login_hint` an account name implies: the name itself when it looks like an email
/// (`jane@example.com`), since that is what identity providers pre-fill; else none (a
/// name like `work` means nothing to the authorization server).
fn hint_of_account(name: &str) -> Option<String> {
    let (user, domain) = name.split_once('@')?;
    (!user.is_empty() && domain.contains('.') && !domain.contains('@')).then(|| name.to_string())
}

/// A `login_hint` from the user: printable, at most [`MAX_LOGIN_HINT_LEN`] bytes.
fn check_login_hint(hint: &str) -> Result<(), String> {
    if hint.trim().is_empty() {
        return Err("`login_hint` is empty; omit it to send none".into());
    }
    if hint.len() > MAX_LOGIN_HINT_LEN {
        return Err(format!(
            "`login_hint` is longer than {MAX_LOGIN_HINT_LEN} bytes"
        ));
    }
    if hint.chars().any(char::is_control) {
        return Err("`login_hint` holds a control character".into());
    }
    Ok(())
}

/// RFC 9207 §2.4: compare `iss` exactly when present; require it when the AS advertises
/// it, or when `required` (a client id shared by several authorization servers).
fn check_issuer(d: &Discovery, iss: Option<&str>, required: bool) -> Result<(), String> {
    let expected = &d.metadata.issuer;
    match (
        iss,
        required
            || d.metadata
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
    login_failed_again(server, why, "")
}

/// As [`login_failed`], naming the flag (`" --manual"`) to run the same login again with.
fn login_failed_again(server: &str, why: &str, flag: &str) -> RpcError {
    RpcError::new(
        ErrorKind::LoginFailed,
        format!(
            "login to {server} failed: {why}; run again once that is fixed: {}",
            again_command(server, flag)
        ),
    )
    .with_server(server)
}

/// `mcp-auth login <server>` with `flags` (e.g. `" --device --timeout 600"`), built by
/// the one command builder.
fn again_command(server: &str, flags: &str) -> String {
    let mut args = vec!["mcp-auth", "login", server];
    args.extend(flags.split_whitespace());
    shell_command(&args)
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
                ..Default::default()
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
        assert!(check_issuer(&d, None, false).is_ok());
        let e = check_issuer(&d, None, true).unwrap_err();
        assert!(e.contains("no `iss`"), "{e}");
        assert!(check_issuer(&d, Some("https://as.example"), true).is_ok());
        let e = check_issuer(&d, Some("https://evil.example"), false).unwrap_err();
        assert!(e.contains("mix-up"), "{e}");
        assert!(check_issuer(&discovery(Some(true)), None, false).is_err());
    }

    /// `--callback-port` alone leaves the path to the daemon: a dynamic registration keeps
    /// its issuer's own; a path the user gave (even `/`) is used as is.
    #[test]
    fn a_fixed_redirect_uri_without_a_path_gets_the_issuers_own() {
        let own = callback_path("https://as-a.example");
        for (given, want) in [
            (
                "http://127.0.0.1:8080",
                format!("http://127.0.0.1:8080{own}"),
            ),
            ("http://[::1]:8080", format!("http://[::1]:8080{own}")),
            (
                "http://localhost:8080/cb",
                "http://localhost:8080/cb".into(),
            ),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/".into()),
        ] {
            assert_eq!(with_path(given, &own), want, "{given}");
        }
        let (_, port, path) =
            loopback_port_and_path(&with_path("http://127.0.0.1:8080", &own)).unwrap();
        assert_eq!((port, path), (8080, own));
    }

    #[test]
    fn only_an_email_like_account_name_is_a_login_hint() {
        assert_eq!(
            hint_of_account("jane@corp.example").as_deref(),
            Some("jane@corp.example")
        );
        for not_a_hint in ["work", "@corp.example", "jane@corp", "a@b@c.example"] {
            assert_eq!(hint_of_account(not_a_hint), None, "{not_a_hint}");
        }
    }

    #[test]
    fn a_login_hint_is_printable_and_short() {
        assert!(check_login_hint("jane@corp.example").is_ok());
        assert!(check_login_hint("Jane Doe").is_ok());
        for bad in ["", "  ", "a\nb", &"x".repeat(MAX_LOGIN_HINT_LEN + 1)] {
            assert!(check_login_hint(bad).is_err(), "{bad:?}");
        }
    }
}
