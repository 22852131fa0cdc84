//! The device flow (RFC 8628): a code for the user to enter on any device, then polling
//! the token endpoint at the server's pace until the user approved, denied, or time ran
//! out.

use std::time::Duration;

use mcp_authd_ipc::methods::{LoginFlow, LoginPending};
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::consent::Consent;
use super::errors::{again_command, login_failed, login_failed_again};
use crate::broker::{LoginProgress, server_error};
use crate::oauth::OAuthError;
use crate::oauth::device::{self, DeviceAuthorization, Poll};
use crate::oauth::token::Tokens;

/// How long after a device code's `expires_in` the daemon still polls, so that the
/// server's own `expired_token` (or a late approval) is heard despite clock differences.
const CODE_EXPIRY_GRACE: Duration = Duration::from_secs(5);
/// The longest extra wait between polls after failed connections.
const MAX_POLL_BACKOFF: Duration = Duration::from_secs(60);

/// When polling stops: the code's own end (plus a little, so the server's `expired_token`
/// is heard), or the login's timeout, whichever comes first.
struct Deadline {
    at: tokio::time::Instant,
    /// The code's end comes first.
    by_code: bool,
}

impl Deadline {
    fn new(code_expires_in: Duration, timeout_secs: u64) -> Deadline {
        let code_ends = code_expires_in + CODE_EXPIRY_GRACE;
        let by_code = code_ends < Duration::from_secs(timeout_secs);
        let at = tokio::time::Instant::now()
            + if by_code {
                code_ends
            } else {
                Duration::from_secs(timeout_secs)
            };
        Deadline { at, by_code }
    }
}

impl Consent<'_> {
    /// RFC 8628: the device code, shown to the callers, then polled until it ends.
    pub(super) async fn device(&self) -> Result<Tokens, RpcError> {
        let resource = self.resource_param();
        let started = self.start_device(&resource).await?;
        let deadline_secs = self.timeout.min(started.expires_in.as_secs().max(1));
        tracing::info!(server = %self.discovery.server_url, interval = started.interval.as_secs(), "waiting up to {deadline_secs} s for the device login");
        self.report_device_code(&started, deadline_secs);
        self.poll_device(&started, &resource).await
    }

    /// The resource indicator, which goes with both requests, as on the browser path.
    fn resource_param(&self) -> Vec<(&'static str, String)> {
        if self.quirks.omit_resource {
            Vec::new()
        } else {
            vec![("resource", self.discovery.resource.clone())]
        }
    }

    /// The device authorization request: the codes, the page, the pace.
    async fn start_device(
        &self,
        resource: &[(&'static str, String)],
    ) -> Result<DeviceAuthorization, RpcError> {
        let d = self.discovery;
        let server_url = d.server_url.as_str();
        let Some(endpoint) = d.metadata.device_authorization_endpoint.as_deref() else {
            return Err(RpcError::new(
                ErrorKind::Internal,
                "no device authorization endpoint",
            ));
        };
        let mut form = resource.to_vec();
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
        device::start(
            self.broker.http(),
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
        })
    }

    /// Tells the callers the code to enter and where.
    fn report_device_code(&self, started: &DeviceAuthorization, deadline_secs: u64) {
        self.progress.report(LoginProgress::Pending(LoginPending {
            server: self.discovery.server_url.clone(),
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
    }

    /// Polls the token endpoint at the server's interval (slower when it asks, backing off
    /// after failed connections) until the user decided or the deadline passed.
    async fn poll_device(
        &self,
        started: &DeviceAuthorization,
        resource: &[(&'static str, String)],
    ) -> Result<Tokens, RpcError> {
        let d = self.discovery;
        let server_url = d.server_url.as_str();
        let deadline = Deadline::new(started.expires_in, self.timeout);
        let mut interval = started.interval;
        // Extra wait after a failed connection (RFC 8628 §3.5: back off exponentially).
        let mut backoff = Duration::ZERO;
        loop {
            let wait = interval + backoff;
            if tokio::time::Instant::now() + wait > deadline.at {
                return Err(self.device_timed_out(deadline.by_code));
            }
            tokio::time::sleep(wait).await;
            let polled = device::poll(
                self.broker.http(),
                self.policy,
                &d.metadata,
                self.credentials,
                &started.device_code,
                resource,
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
                Poll::Denied => return Err(self.device_denied()),
                Poll::Expired => return Err(self.device_code_expired("expired_token")),
            }
        }
    }

    /// The deadline passed: the code's end, or the login's timeout.
    fn device_timed_out(&self, by_code: bool) -> RpcError {
        if by_code {
            return self.device_code_expired("its expires_in passed");
        }
        let server_url = self.discovery.server_url.as_str();
        RpcError::new(
            ErrorKind::LoginTimeout,
            format!(
                "the device login was not approved within {} s; run again with more time: {}",
                self.timeout,
                again_command(
                    server_url,
                    &format!(
                        " --device --timeout {}",
                        self.timeout.saturating_mul(2).max(600)
                    )
                )
            ),
        )
        .with_server(server_url)
    }

    /// The user said no (`access_denied`).
    fn device_denied(&self) -> RpcError {
        let server_url = self.discovery.server_url.as_str();
        RpcError::new(
            ErrorKind::LoginFailed,
            format!(
                "login to {server_url} failed: the device login was denied (access_denied); to try again, run: {}",
                again_command(server_url, " --device")
            ),
        )
        .with_server(server_url)
    }

    /// The device code ended before the user approved.
    fn device_code_expired(&self, why: &str) -> RpcError {
        let server_url = self.discovery.server_url.as_str();
        RpcError::new(
            ErrorKind::LoginTimeout,
            format!(
                "the device code for {server_url} expired before the login was approved ({why}); run again for a new code: {}",
                again_command(server_url, " --device")
            ),
        )
        .with_server(server_url)
    }
}
