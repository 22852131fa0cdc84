//! The user's consent, ending in tokens: authorization code + PKCE through the browser and
//! the loopback redirect, or pasted back (`manual`); the device flow is in `device.rs`.

use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::methods::{LoginFlow, LoginParams, LoginPending};
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::Login;
use super::authorize::{AuthorizationRequest, authorization_url, check_issuer};
use super::errors::{again_command, login_failed, login_failed_again};
use crate::broker::{Broker, LoginKey, LoginProgress, Started, server_error};
use crate::config::Quirks;
use crate::loopback::{AuthorizationResponse, LoopbackError, LoopbackRedirect};
use crate::oauth::OAuthError;
use crate::oauth::discovery::{AsMetadata, Discovery};
use crate::oauth::http::UrlPolicy;
use crate::oauth::pkce::Pkce;
use crate::oauth::registration::ClientCredentials;
use crate::oauth::token::{DpopSigner, Tokens, request_tokens};
use crate::secret::Secret;

/// Everything a consent flow needs to end in tokens for the chosen client.
pub(super) struct Consent<'a> {
    pub(super) broker: &'a Arc<Broker>,
    pub(super) policy: &'a UrlPolicy,
    /// The authorization response must carry `iss` (see [`check_issuer`]).
    pub(super) iss_required: bool,
    /// Add `prompt=consent` (see [`AuthorizationRequest::prompt_consent`]).
    pub(super) prompt_consent: bool,
    pub(super) discovery: &'a Discovery,
    pub(super) credentials: &'a ClientCredentials,
    pub(super) scopes: &'a [String],
    pub(super) quirks: &'a Quirks,
    pub(super) timeout: u64,
    pub(super) progress: &'a Started<LoginProgress>,
    /// The account being logged in to, for `login.pending` (absent: the default one).
    pub(super) account: Option<String>,
    /// The grant's DPoP key, when its tokens are to be bound to one (RFC 9449).
    pub(super) dpop: Option<DpopSigner<'a>>,
}

/// `prompt=consent` where `offline_access` is asked of a server that wants it for a
/// refresh token ([`AsMetadata::wants_prompt_consent`]); a `prompt` of the config's own
/// wins over ours.
pub(super) fn prompt_consent(scopes: &[String], metadata: &AsMetadata, quirks: &Quirks) -> bool {
    scopes.iter().any(|s| s == "offline_access")
        && metadata.wants_prompt_consent()
        && !quirks.authorization_params.contains_key("prompt")
}

impl<'a> Consent<'a> {
    /// The consent `login` asks of its user for `credentials`' client at `discovery`'s
    /// authorization server: no `iss` required beyond what the server promises, bearer
    /// tokens (set `iss_required` and `dpop` to change that).
    pub(super) fn new(
        login: &Login<'a>,
        policy: &'a UrlPolicy,
        discovery: &'a Discovery,
        credentials: &'a ClientCredentials,
        scopes: &'a [String],
        quirks: &'a Quirks,
    ) -> Consent<'a> {
        Consent {
            broker: login.broker,
            policy,
            iss_required: false,
            prompt_consent: prompt_consent(scopes, &discovery.metadata, quirks),
            discovery,
            credentials,
            scopes,
            quirks,
            timeout: login.timeout_secs(),
            progress: login.progress,
            account: login.params.account.clone(),
            dpop: None,
        }
    }

    /// Tokens by the flow the caller asked for and the server offers: device, browser, or
    /// pasted back. The redirect listener serves the code flows.
    pub(super) async fn obtain_tokens(
        &self,
        p: &LoginParams,
        redirect: LoopbackRedirect,
        state: &Secret,
    ) -> Result<Tokens, RpcError> {
        match choose_flow(p.flow, self.discovery) {
            Flow::Device => {
                // The registration is shared with the browser flow; its listener is not needed.
                drop(redirect);
                self.device().await
            }
            Flow::NoDevice => {
                let server_url = self.discovery.server_url.as_str();
                Err(login_failed(
                    server_url,
                    &format!(
                        "{} offers no device login (its metadata has no device_authorization_endpoint); log in with `{}` instead",
                        self.discovery.metadata.issuer,
                        again_command(server_url, " --manual")
                    ),
                ))
            }
            Flow::Code {
                manual,
                open_browser,
            } => {
                let open_browser = open_browser && !manual && p.open_browser.unwrap_or(true);
                self.authorization_code(redirect, state, manual, open_browser)
                    .await
            }
        }
    }

    /// Authorization code + PKCE: the browser brings the response to the loopback
    /// redirect, or (`manual`) the user pastes it (`login.paste`); both go through the
    /// listener's state check, then the same `iss` check and code exchange.
    pub(super) async fn authorization_code(
        &self,
        redirect: LoopbackRedirect,
        state: &Secret,
        manual: bool,
        open_browser: bool,
    ) -> Result<Tokens, RpcError> {
        let d = self.discovery;
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
            let key = LoginKey::new(&d.server_url, self.account.as_deref());
            self.broker.pastes().open(key, redirect.inbox(iss_promised))
        });
        self.report_waiting(authorization_url, browser_opened, manual);
        let redirect_uri = redirect.redirect_uri.clone();
        let again = if manual { " --manual" } else { "" };
        let response = self.wait_for_response(redirect, again).await?;
        let code = self.code_of(response, again)?;
        self.redeem(&code, redirect_uri, &pkce, again).await
    }

    /// Tells the callers where the browser login waits.
    fn report_waiting(&self, authorization_url: String, browser_opened: bool, manual: bool) {
        let (server_url, timeout) = (self.discovery.server_url.as_str(), self.timeout);
        tracing::info!(server = %server_url, browser_opened, manual, "waiting up to {timeout} s for the browser login");
        self.progress.report(LoginProgress::Pending(LoginPending {
            server: server_url.to_string(),
            authorization_url,
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
    }

    /// The authorization response, from the browser or pasted, within the login's time.
    async fn wait_for_response(
        &self,
        redirect: LoopbackRedirect,
        again: &str,
    ) -> Result<AuthorizationResponse, RpcError> {
        let (server_url, timeout) = (self.discovery.server_url.as_str(), self.timeout);
        redirect
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
            })
    }

    /// The code of an authorization response from the right issuer that granted one.
    fn code_of(&self, response: AuthorizationResponse, again: &str) -> Result<Secret, RpcError> {
        let d = self.discovery;
        let failed = |why: &str| login_failed_again(&d.server_url, why, again);
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
        response
            .code
            .ok_or_else(|| failed("the authorization response carried no code"))
    }

    /// The code exchange (RFC 6749 §4.1.3 with the PKCE verifier).
    async fn redeem(
        &self,
        code: &Secret,
        redirect_uri: String,
        pkce: &Pkce,
        again: &str,
    ) -> Result<Tokens, RpcError> {
        let d = self.discovery;
        let server_url = d.server_url.as_str();
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
            self.broker.http(),
            self.policy,
            &d.metadata.issuer,
            &d.metadata.token_endpoint,
            self.credentials,
            form,
            self.dpop,
        )
        .await
        .map_err(|e| match e {
            OAuthError::TokenError(_) => login_failed_again(server_url, &e.to_string(), again),
            other => server_error(server_url, "cannot redeem the authorization code", &other),
        })
    }
}

/// Which way `login` asks for consent, once the authorization server's metadata is known.
#[derive(Debug, PartialEq)]
enum Flow {
    Device,
    /// `device` asked for, and the server offers none.
    NoDevice,
    /// Authorization code + PKCE; `manual` takes a pasted response too.
    Code {
        manual: bool,
        open_browser: bool,
    },
}

fn choose_flow(flow: Option<LoginFlow>, d: &Discovery) -> Flow {
    let device = d.metadata.device_authorization_endpoint.is_some();
    match flow.unwrap_or_default() {
        LoginFlow::Browser => Flow::Code {
            manual: false,
            open_browser: true,
        },
        LoginFlow::Manual => Flow::Code {
            manual: true,
            open_browser: false,
        },
        LoginFlow::Device if device => Flow::Device,
        LoginFlow::Device => Flow::NoDevice,
        LoginFlow::DeviceIfSupported if device => Flow::Device,
        // No display to open a browser on: show the URL only.
        LoginFlow::DeviceIfSupported => Flow::Code {
            manual: false,
            open_browser: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::login::authorize::tests::discovery_with;

    #[test]
    fn the_flow_follows_the_request_and_the_servers_offer() {
        let plain = discovery_with(serde_json::json!({}));
        let device = discovery_with(serde_json::json!({
            "device_authorization_endpoint": "https://as.example/device",
        }));
        let code = |manual, open_browser| Flow::Code {
            manual,
            open_browser,
        };
        for (asked, d, want) in [
            (None, &device, code(false, true)),
            (Some(LoginFlow::Browser), &device, code(false, true)),
            (Some(LoginFlow::Manual), &plain, code(true, false)),
            (Some(LoginFlow::Device), &device, Flow::Device),
            (Some(LoginFlow::Device), &plain, Flow::NoDevice),
            (Some(LoginFlow::DeviceIfSupported), &device, Flow::Device),
            (
                Some(LoginFlow::DeviceIfSupported),
                &plain,
                code(false, false),
            ),
        ] {
            assert_eq!(choose_flow(asked, d), want, "{asked:?}");
        }
    }

    /// `prompt=consent` only with `offline_access`, only where the server wants it, and
    /// never over the config's own `prompt`.
    #[test]
    fn prompt_consent_needs_offline_access_and_an_openid_server() {
        let oidc = discovery_with(serde_json::json!({
            "id_token_signing_alg_values_supported": ["RS256"],
        }))
        .metadata;
        let plain = discovery_with(serde_json::json!({})).metadata;
        let offline = vec!["read".to_string(), "offline_access".to_string()];
        let online = vec!["read".to_string()];
        let none = Quirks::default();
        assert!(prompt_consent(&offline, &oidc, &none));
        assert!(!prompt_consent(&online, &oidc, &none));
        assert!(!prompt_consent(&offline, &plain, &none));
        let mut own = Quirks::default();
        own.authorization_params
            .insert("prompt".into(), "select_account".into());
        assert!(!prompt_consent(&offline, &oidc, &own));
    }
}
