//! RFC 8628 device authorization: the request that starts a device login, and what one
//! poll of the token endpoint can answer.

use std::time::Duration;

use serde::Deserialize;

use super::discovery::AsMetadata;
use super::http::{Http, UrlPolicy};
use super::registration::ClientCredentials;
use super::token::{DpopSigner, Tokens, post_authenticated, request_tokens};
use super::{OAuthError, printable};
use crate::secret::Secret;

/// The grant type of the token requests that poll (RFC 8628 §3.4).
pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:device_code";
/// RFC 8628 §3.2: the polling interval when the server names none.
const DEFAULT_INTERVAL_SECS: u64 = 5;
/// RFC 8628 §3.5: `slow_down` lengthens the interval by this much, for good.
pub const SLOW_DOWN_STEP_SECS: u64 = 5;
/// A hostile or broken server cannot stall a login with a huge interval.
const MAX_INTERVAL_SECS: u64 = 120;
/// Longest code lifetime believed.
const MAX_EXPIRES_IN_SECS: u64 = 3600;
/// User codes are short by design (§6.1); anything longer is not shown.
const MAX_USER_CODE_CHARS: usize = 64;

/// A started device login. `Debug` never shows the device code.
#[derive(Debug)]
pub struct DeviceAuthorization {
    pub device_code: Secret,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: Option<String>,
    pub expires_in: Duration,
    pub interval: Duration,
}

#[derive(Deserialize)]
struct Response {
    device_code: Secret,
    user_code: String,
    #[serde(default)]
    verification_uri: Option<String>,
    /// Google's early spelling, still served.
    #[serde(default)]
    verification_url: Option<String>,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    expires_in: serde_json::Number,
    #[serde(default)]
    interval: Option<serde_json::Number>,
}

/// RFC 8628 §3.1–3.2: asks for a device code, with client authentication as the
/// registration says, the caller's `form` (scope, resource) and `extra` parameters from
/// the config file.
pub async fn start(
    http: &Http,
    policy: &UrlPolicy,
    issuer: &str,
    endpoint: &str,
    client: &ClientCredentials,
    form: Vec<(&'static str, String)>,
    extra: &[(String, String)],
) -> Result<DeviceAuthorization, OAuthError> {
    let endpoint = policy.check("device authorization endpoint", endpoint, Some(issuer))?;
    let url = endpoint.to_string();
    let response = post_authenticated(http, endpoint, client, form, extra, None).await?;
    parse(&url, &response.bytes, policy, issuer)
}

/// Checks a device authorization response: a code to show that a terminal can show, a
/// verification page the user may safely open, a believable lifetime and interval.
/// The verification pages go through the transport policy as every URL the issuer names.
fn parse(
    url: &str,
    body: &[u8],
    policy: &UrlPolicy,
    issuer: &str,
) -> Result<DeviceAuthorization, OAuthError> {
    let bad = |detail: String| OAuthError::BadResponse {
        url: url.to_string(),
        detail,
    };
    let r: Response = serde_json::from_slice(body).map_err(|e| {
        bad(format!(
            "a device authorization response that is not the expected JSON ({e})"
        ))
    })?;
    if r.device_code.expose().is_empty() {
        return Err(bad("an empty device_code".into()));
    }
    if r.user_code.is_empty()
        || r.user_code.chars().count() > MAX_USER_CODE_CHARS
        || r.user_code.chars().any(char::is_control)
    {
        return Err(bad(format!(
            "a user_code that cannot be shown (`{}`)",
            printable(&r.user_code, MAX_USER_CODE_CHARS)
        )));
    }
    let verification_uri = r
        .verification_uri
        .or(r.verification_url)
        .ok_or_else(|| bad("no verification_uri (RFC 8628 §3.2 requires it)".into()))?;
    let verification_uri = policy
        .check("verification_uri", &verification_uri, Some(issuer))?
        .to_string();
    let verification_uri_complete = r.verification_uri_complete.and_then(|u| {
        policy
            .check("verification_uri_complete", &u, Some(issuer))
            .inspect_err(|e| tracing::warn!("ignoring the device login's {e}"))
            .ok()
            .map(|u| u.to_string())
    });
    let positive = |n: &serde_json::Number| {
        n.as_u64()
            .filter(|v| *v > 0)
            .or_else(|| n.as_f64().filter(|f| *f >= 1.0).map(|f| f as u64))
    };
    let expires_in = positive(&r.expires_in)
        .ok_or_else(|| bad(format!("a device code with expires_in = {}", r.expires_in)))?
        .min(MAX_EXPIRES_IN_SECS);
    let interval = r
        .interval
        .as_ref()
        .and_then(positive)
        .unwrap_or(DEFAULT_INTERVAL_SECS)
        .clamp(1, MAX_INTERVAL_SECS);
    Ok(DeviceAuthorization {
        device_code: r.device_code,
        user_code: r.user_code,
        verification_uri,
        verification_uri_complete,
        expires_in: Duration::from_secs(expires_in),
        interval: Duration::from_secs(interval),
    })
}

/// What one poll of the token endpoint said (RFC 8628 §3.5).
#[derive(Debug)]
pub enum Poll {
    Granted(Tokens),
    /// `authorization_pending`: ask again after the interval.
    Pending,
    /// `slow_down`: ask again after the interval plus [`SLOW_DOWN_STEP_SECS`].
    SlowDown,
    /// `access_denied`: the user said no.
    Denied,
    /// `expired_token`: the code's time ran out.
    Expired,
}

/// Asks the token endpoint once whether the user has approved `device_code`.
pub async fn poll(
    http: &Http,
    policy: &UrlPolicy,
    metadata: &AsMetadata,
    client: &ClientCredentials,
    device_code: &Secret,
    extra: &[(&'static str, String)],
    dpop: Option<DpopSigner<'_>>,
) -> Result<Poll, OAuthError> {
    let mut form = vec![
        ("grant_type", GRANT_TYPE.to_string()),
        ("device_code", device_code.expose().to_string()),
    ];
    form.extend(extra.iter().cloned());
    match request_tokens(
        http,
        policy,
        &metadata.issuer,
        &metadata.token_endpoint,
        client,
        form,
        dpop,
    )
    .await
    {
        Ok(tokens) => Ok(Poll::Granted(tokens)),
        Err(OAuthError::TokenError(e)) => match e.error.as_str() {
            "authorization_pending" => Ok(Poll::Pending),
            "slow_down" => Ok(Poll::SlowDown),
            "access_denied" => Ok(Poll::Denied),
            "expired_token" => Ok(Poll::Expired),
            _ => Err(OAuthError::TokenError(e)),
        },
        Err(other) => Err(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://as.example/device";
    const ISSUER: &str = "https://as.example";

    fn parse(url: &str, body: &[u8]) -> Result<DeviceAuthorization, OAuthError> {
        super::parse(
            url,
            body,
            &UrlPolicy::new("https://mcp.example/mcp", false),
            ISSUER,
        )
    }

    #[test]
    fn a_response_is_checked_before_it_is_shown() {
        let ok = parse(
            URL,
            br#"{"device_code":"dc_x","user_code":"WDJB-MJHT","verification_uri":"https://as.example/device","verification_uri_complete":"https://as.example/device?user_code=WDJB-MJHT","expires_in":1800}"#,
        )
        .unwrap();
        assert_eq!(ok.interval, Duration::from_secs(DEFAULT_INTERVAL_SECS));
        assert_eq!(ok.expires_in, Duration::from_secs(1800));
        assert!(!format!("{ok:?}").contains("dc_x"));
        // Google's spelling; a huge interval is capped; a plain-http "complete" page is
        // dropped, the main one refused.
        let google = parse(
            URL,
            br#"{"device_code":"d","user_code":"A","verification_url":"https://g.example/d","verification_uri_complete":"http://evil.example/d","expires_in":60,"interval":99999}"#,
        )
        .unwrap();
        assert_eq!(google.verification_uri, "https://g.example/d");
        assert_eq!(google.verification_uri_complete, None);
        assert_eq!(google.interval, Duration::from_secs(MAX_INTERVAL_SECS));
        for bad in [
            r#"{"device_code":"d","user_code":"A","verification_uri":"http://evil.example/d","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"A\u001b[2J","verification_uri":"https://as.example/d","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"A","expires_in":60}"#,
            r#"{"device_code":"","user_code":"A","verification_uri":"https://as.example/d","expires_in":60}"#,
            r#"{"device_code":"d","user_code":"A","verification_uri":"https://as.example/d","expires_in":0}"#,
        ] {
            assert!(parse(URL, bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
