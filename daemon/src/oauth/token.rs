//! Token endpoint requests (code exchange, refresh) and revocation (RFC 7009).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use mcp_authd_ipc::methods::HeldToken;
use reqwest::header;
use serde::Deserialize;

use super::dpop::{DpopKey, Nonces};
use super::http::{Body, Http, UrlPolicy};
use super::registration::{AuthMethod, ClientCredentials};
use super::{OAuthError, OAuthErrorBody, printable};
use crate::secret::Secret;

/// Assumed lifetime when a token response has no `expires_in`: short, so we refresh early
/// rather than hand out a token the server already considers dead.
const DEFAULT_EXPIRES_IN: i64 = 300;
/// Longest lifetime believed, so a bogus huge `expires_in` cannot overflow or pin a token.
const MAX_EXPIRES_IN: i64 = 366 * 24 * 3600;

/// What the token endpoint granted.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: Secret,
    /// Unix seconds.
    pub expires_at: i64,
    pub refresh_token: Option<Secret>,
    /// The granted scopes when the AS said; otherwise the requested ones apply.
    pub scopes: Option<Vec<String>>,
    /// Who the tokens are for, when an OpenID Connect `id_token` came along (display only).
    pub account: Option<String>,
    /// That `id_token` itself, for the one use that needs it: the subject token of an
    /// enterprise IdP's token exchange (SEP-990). Dropped everywhere else.
    pub id_token: Option<Secret>,
    pub token_type: TokenType,
}

/// How an access token is presented: `Bearer` (RFC 6750), or `DPoP` (RFC 9449: bound to
/// the grant's DPoP key, sent with a fresh proof per request). The protocol's own type:
/// `token.get` reports it as it is.
pub use mcp_authd_ipc::methods::TokenType;

/// What a token request needs to carry DPoP proofs: the grant's key and the nonces
/// servers gave.
#[derive(Clone, Copy)]
pub struct DpopSigner<'a> {
    pub key: &'a DpopKey,
    pub nonces: &'a Nonces,
}

/// The header a DPoP proof travels in, and the one a server's nonce comes in.
pub const DPOP_HEADER: &str = "DPoP";
pub const DPOP_NONCE_HEADER: &str = "DPoP-Nonce";

#[derive(Deserialize)]
struct TokenResponse {
    access_token: Secret,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Number>,
    #[serde(default)]
    refresh_token: Option<Secret>,
    #[serde(default)]
    scope: Option<String>,
    /// OpenID Connect: read for the account name, then dropped. Any JSON value, so an
    /// odd one costs only the name, never the tokens.
    #[serde(default)]
    id_token: Option<serde_json::Value>,
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A token endpoint request: the grant's own form fields plus client authentication, and
/// a DPoP proof (RFC 9449 §5) when `dpop` is given (see [`post_token_request`]).
pub async fn request_tokens(
    http: &Http,
    policy: &UrlPolicy,
    issuer: &str,
    token_endpoint: &str,
    client: &ClientCredentials,
    form: Vec<(&'static str, String)>,
    dpop: Option<DpopSigner<'_>>,
) -> Result<Tokens, OAuthError> {
    let (url, response) = post_token_request(
        http,
        policy,
        Some(issuer),
        token_endpoint,
        client,
        form,
        dpop,
    )
    .await?;
    let tokens = parse_response(&url, &response)?;
    if tokens.token_type == TokenType::DPoP && dpop.is_none() {
        return Err(OAuthError::BadResponse {
            url,
            detail: "a DPoP-bound token to a request that carried no DPoP proof".into(),
        });
    }
    Ok(tokens)
}

fn parse_response(url: &str, response: &Body) -> Result<Tokens, OAuthError> {
    parse_token_response(url, &response.bytes, now()).map_err(|e| {
        // An HTML login page or a form-encoded body: say what came instead of JSON.
        let content_type = response
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let json = content_type.is_empty() || content_type.to_ascii_lowercase().contains("json");
        match e {
            OAuthError::BadResponse { url, .. }
                if !json
                    && serde_json::from_slice::<serde_json::Value>(&response.bytes).is_err() =>
            {
                OAuthError::BadResponse {
                    url,
                    detail: format!(
                        "a `{}` body where a JSON token response belongs (RFC 6749 §5.1)",
                        printable(content_type, 64)
                    ),
                }
            }
            other => other,
        }
    })
}

/// Every request to a token endpoint (any grant, at an authorization server or at an
/// enterprise IdP) is built and sent here: the endpoint passes the transport policy first
/// (`named_by`: the issuer whose metadata named it, `None` when the config did); then client
/// authentication, `Accept`, the form, and a DPoP proof (RFC 9449 §5) when `dpop` is given.
/// A `use_dpop_nonce` answer is retried once, with a new proof carrying the server's nonce
/// (§8); every nonce the server sends is remembered for the next request. Secrets of the
/// request are masked in an error body. A successful (2xx) answer is returned with the
/// endpoint's URL; an error answer becomes [`OAuthError::TokenError`] when it is an RFC
/// 6749 §5.2 body.
async fn post_token_request(
    http: &Http,
    policy: &UrlPolicy,
    named_by: Option<&str>,
    token_endpoint: &str,
    client: &ClientCredentials,
    form: Vec<(&'static str, String)>,
    dpop: Option<DpopSigner<'_>>,
) -> Result<(String, Body), OAuthError> {
    let endpoint = policy.check("token endpoint", token_endpoint, named_by)?;
    let response = post_authenticated(http, endpoint.clone(), client, form, &[], dpop).await?;
    Ok((endpoint.to_string(), response))
}

/// POSTs `form` and `extra` fields (from the config file) to an endpoint the transport
/// policy already passed, with client authentication as the registration says (RFC 6749
/// §2.3.1), `Accept: application/json`, and a DPoP proof when `dpop` is given. A
/// `use_dpop_nonce` answer is retried once, with a new proof carrying the server's nonce
/// (RFC 9449 §8); every nonce the server sends is remembered for the next request.
/// Secrets of the request are masked in an error body. Token requests come here through
/// [`post_token_request`]; the device authorization request (RFC 8628 §3.1) directly.
pub(super) async fn post_authenticated(
    http: &Http,
    endpoint: url::Url,
    client: &ClientCredentials,
    form: Vec<(&'static str, String)>,
    extra: &[(String, String)],
    dpop: Option<DpopSigner<'_>>,
) -> Result<Body, OAuthError> {
    let url = endpoint.to_string();
    let mut nonce_retried = false;
    loop {
        // Built afresh for the retry: a client assertion must not be used twice.
        let mut form = form.clone();
        let mut request = authenticated(http.client().post(endpoint.clone()), client, &mut form)?;
        let secrets = RequestSecrets::of(&form, client);
        if let Some(d) = dpop {
            let nonce = d.nonces.get(&url);
            let proof = d
                .key
                .proof("POST", &url, None, nonce.as_deref(), now())
                .map_err(|e| OAuthError::Untrusted(e.to_string()))?;
            request = request.header(DPOP_HEADER, proof);
        }
        let fields: Vec<(&str, &str)> = form
            .iter()
            .map(|(k, v)| (*k, v.as_str()))
            .chain(extra.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .collect();
        let response = http
            .send(
                request
                    .header(header::ACCEPT, "application/json")
                    .form(&fields),
            )
            .await?;
        let nonce = response
            .headers
            .get(DPOP_NONCE_HEADER)
            .and_then(|v| v.to_str().ok());
        if let (Some(d), Some(nonce)) = (dpop, nonce) {
            d.nonces.remember(&url, nonce);
        }
        if response.status.is_success() {
            return Ok(response);
        }
        let error = error_from(&url, response.status.as_u16(), &response.bytes, &secrets);
        let wants_nonce =
            matches!(&error, OAuthError::TokenError(e) if e.error == "use_dpop_nonce");
        if dpop.is_some() && wants_nonce && nonce.is_some() && !nonce_retried {
            nonce_retried = true;
            tracing::debug!("{url} asked for a DPoP nonce; retrying with it");
            continue;
        }
        return Err(error);
    }
}

/// The token type an enterprise IdP issues for an MCP authorization server (SEP-990).
pub const TOKEN_TYPE_ID_JAG: &str = "urn:ietf:params:oauth:token-type:id-jag";

/// An RFC 8693 token exchange whose answer is a token to use as an assertion (not an
/// access token): `issued_token_type` must be the one asked for.
pub async fn exchange_token(
    http: &Http,
    policy: &UrlPolicy,
    named_by: Option<&str>,
    token_endpoint: &str,
    client: &ClientCredentials,
    requested_token_type: &str,
    mut form: Vec<(&'static str, String)>,
) -> Result<Secret, OAuthError> {
    #[derive(Deserialize)]
    struct ExchangeResponse {
        access_token: Secret,
        #[serde(default)]
        issued_token_type: Option<String>,
    }
    form.insert(
        0,
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".into(),
        ),
    );
    form.push(("requested_token_type", requested_token_type.into()));
    let (url, response) =
        post_token_request(http, policy, named_by, token_endpoint, client, form, None).await?;
    let bad = |detail: String| OAuthError::BadResponse {
        url: url.clone(),
        detail,
    };
    let answer: ExchangeResponse = serde_json::from_slice(&response.bytes).map_err(|e| {
        bad(format!(
            "a token exchange response that is not the expected JSON ({e})"
        ))
    })?;
    match answer.issued_token_type.as_deref() {
        Some(t) if t == requested_token_type && !answer.access_token.expose().is_empty() => {
            Ok(answer.access_token)
        }
        Some(t) if t != requested_token_type => Err(bad(format!(
            "a `{}` token where `{requested_token_type}` was asked for",
            printable(t, 80)
        ))),
        Some(_) => Err(bad("an empty token".into())),
        None => Err(bad(
            "a token exchange response without `issued_token_type` (RFC 8693 §2.2.1 requires it)"
                .into(),
        )),
    }
}

/// Checks and decodes a successful token endpoint response body (RFC 6749 §5.1) received
/// at `now` (Unix seconds): a Bearer or DPoP token, not empty, with a believable lifetime.
pub fn parse_token_response(url: &str, body: &[u8], now: i64) -> Result<Tokens, OAuthError> {
    let url = url.to_string();
    let t: TokenResponse = serde_json::from_slice(body).map_err(|e| OAuthError::BadResponse {
        url: url.clone(),
        detail: format!("a token response that is not the expected JSON ({e})"),
    })?;
    let token_type = match t.token_type.as_deref().map(|tt| (tt, TokenType::known(tt))) {
        Some((_, Some(known))) => known,
        Some((tt, None)) => {
            return Err(OAuthError::BadResponse {
                url,
                detail: format!(
                    "a `{}` token; only Bearer and DPoP tokens are supported",
                    printable(tt, 32)
                ),
            });
        }
        None => {
            return Err(OAuthError::BadResponse {
                url,
                detail: "a token without `token_type` (RFC 6749 §5.1 requires it)".into(),
            });
        }
    };
    if t.access_token.expose().is_empty() {
        return Err(OAuthError::BadResponse {
            url,
            detail: "an empty access_token".into(),
        });
    }
    let expires_in = match t.expires_in {
        None => DEFAULT_EXPIRES_IN,
        Some(n) => match n.as_i64() {
            Some(v) if v > 0 => v.min(MAX_EXPIRES_IN),
            Some(_) => {
                return Err(OAuthError::BadResponse {
                    url,
                    detail: format!("a token with expires_in = {n}"),
                });
            }
            None if n.as_f64().is_some_and(|f| f > 0.0) => MAX_EXPIRES_IN,
            None => {
                return Err(OAuthError::BadResponse {
                    url,
                    detail: format!("a token with expires_in = {n}"),
                });
            }
        },
    };
    let scopes = match t.scope.as_deref().map(mcp_authd_ipc::text::parse_scopes) {
        None => None,
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            return Err(OAuthError::BadResponse {
                url,
                detail: format!("a token response with an invalid `scope`: {e}"),
            });
        }
    };
    Ok(Tokens {
        access_token: t.access_token,
        expires_at: now.saturating_add(expires_in),
        refresh_token: t.refresh_token.filter(|r| !r.expose().is_empty()),
        scopes,
        account: t
            .id_token
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .and_then(super::id_token::account),
        id_token: t
            .id_token
            .as_ref()
            .and_then(serde_json::Value::as_str)
            .map(Secret::new),
        token_type,
    })
}

/// RFC 7009 revocation of one token. Servers answer 200 even for unknown tokens.
pub async fn revoke(
    http: &Http,
    policy: &UrlPolicy,
    issuer: &str,
    revocation_endpoint: &str,
    client: &ClientCredentials,
    token: &Secret,
    hint: &HeldToken,
) -> Result<(), OAuthError> {
    let endpoint = policy.check("revocation endpoint", revocation_endpoint, Some(issuer))?;
    let mut form = vec![
        ("token", token.expose().to_string()),
        ("token_type_hint", hint.as_str().to_string()),
    ];
    let request = authenticated(http.client().post(endpoint.clone()), client, &mut form)?;
    let secrets = RequestSecrets::of(&form, client);
    let response = http.send(request.form(&form)).await?;
    if response.status.is_success() {
        Ok(())
    } else {
        Err(error_from(
            endpoint.as_str(),
            response.status.as_u16(),
            &response.bytes,
            &secrets,
        ))
    }
}

/// Adds client authentication as the registration says (RFC 6749 §2.3.1, RFC 7523 §2.2).
fn authenticated(
    request: reqwest::RequestBuilder,
    client: &ClientCredentials,
    form: &mut Vec<(&'static str, String)>,
) -> Result<reqwest::RequestBuilder, OAuthError> {
    let secret = client
        .client_secret
        .as_ref()
        .map(|s| s.expose().to_string())
        .unwrap_or_default();
    Ok(match client.auth_method {
        // A grant without client authentication (RFC 7523 §3.1 allows it) has no client id.
        AuthMethod::None if client.client_id.is_empty() => request,
        AuthMethod::None => {
            form.push(("client_id", client.client_id.clone()));
            request
        }
        AuthMethod::ClientSecretPost => {
            form.push(("client_id", client.client_id.clone()));
            form.push(("client_secret", secret));
            request
        }
        AuthMethod::ClientSecretBasic => request.header(
            header::AUTHORIZATION,
            format!("Basic {}", basic_credentials(&client.client_id, &secret)),
        ),
        AuthMethod::PrivateKeyJwt => {
            let key = client.signing_key.as_ref().ok_or_else(|| {
                OAuthError::Untrusted(format!(
                    "client {} authenticates with private_key_jwt but has no private key",
                    client.client_id
                ))
            })?;
            let assertion =
                super::jwt::client_assertion(key, &client.client_id, &client.audience, now())
                    .map_err(|e| OAuthError::Untrusted(e.to_string()))?;
            form.push(("client_id", client.client_id.clone()));
            form.push((
                "client_assertion_type",
                "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into(),
            ));
            form.push(("client_assertion", assertion.expose().to_string()));
            request
        }
    })
}

/// The `client_id:client_secret` pair of HTTP Basic authentication (RFC 6749 §2.3.1: each
/// part form-encoded first), base64.
fn basic_credentials(client_id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    STANDARD.encode(format!("{}:{}", enc(client_id), enc(secret)))
}

/// Form fields of token and revocation requests whose values are secrets.
const SECRET_FIELDS: &[&str] = &[
    "code",
    "device_code",
    "code_verifier",
    "refresh_token",
    "client_secret",
    "token",
    // Grants without a browser (RFC 7523, RFC 8693): signed assertions and ID tokens.
    "client_assertion",
    "assertion",
    "subject_token",
    "actor_token",
];

/// The secrets one request carried, in every spelling a server could echo them back in
/// (as sent, form-encoded, and the Basic credentials): some authorization servers quote the
/// request in their error body, and that body must not carry them into an error message, a
/// log line or a terminal.
struct RequestSecrets(Vec<Secret>);

impl RequestSecrets {
    pub(super) fn of(
        form: &[(&'static str, String)],
        client: &ClientCredentials,
    ) -> RequestSecrets {
        let mut values: Vec<Secret> = Vec::new();
        let mut add = |value: &str| {
            if value.is_empty() {
                return;
            }
            let encoded: String = url::form_urlencoded::byte_serialize(value.as_bytes()).collect();
            values.push(Secret::new(value));
            if encoded != value {
                values.push(Secret::new(encoded));
            }
        };
        for (name, value) in form {
            if SECRET_FIELDS.contains(name) {
                add(value);
            }
        }
        if let Some(secret) = &client.client_secret {
            add(secret.expose());
            add(&basic_credentials(&client.client_id, secret.expose()));
        }
        // Longest first, so a value that contains another is masked whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.expose().len()));
        RequestSecrets(values)
    }

    /// `text` with every secret of the request replaced by `***`.
    fn mask(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.expose(), "***"))
    }
}

/// The error a token or revocation endpoint answered, with whatever of the request's
/// secrets it quoted masked (before the text is cut short, so no prefix survives).
fn error_from(url: &str, status: u16, body: &[u8], secrets: &RequestSecrets) -> OAuthError {
    match serde_json::from_slice::<OAuthErrorBody>(body) {
        Ok(mut e) => {
            e.status = status;
            e.error = secrets.mask(&e.error);
            e.error_description = e.error_description.map(|d| secrets.mask(&d));
            OAuthError::TokenError(e)
        }
        Err(_) => OAuthError::BadResponse {
            url: url.to_string(),
            detail: format!(
                "HTTP {status}: {}",
                printable(secrets.mask(&String::from_utf8_lossy(body)).trim(), 200)
            ),
        },
    }
}

impl OAuthError {
    /// The grant is dead at the AS (RFC 6749 §5.2 `invalid_grant`): only a new login helps.
    pub fn is_invalid_grant(&self) -> bool {
        matches!(self, OAuthError::TokenError(e) if e.error == "invalid_grant")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    const URL: &str = "https://as.example/token";

    fn parse(body: &str) -> Result<Tokens, OAuthError> {
        parse_token_response(URL, body.as_bytes(), 1_000)
    }

    #[test]
    fn an_id_token_names_the_account_and_is_not_kept() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"u1","email":"jane@example.com"}"#);
        let id_token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        let body =
            format!(r#"{{"access_token":"a","token_type":"Bearer","id_token":"{id_token}"}}"#);
        let t = parse(&body).unwrap();
        assert_eq!(t.account.as_deref(), Some("jane@example.com"));
        assert!(!format!("{t:?}").contains(&payload));
        let without = parse(r#"{"access_token":"a","token_type":"Bearer"}"#).unwrap();
        assert_eq!(without.account, None);
        let odd = parse(r#"{"access_token":"a","token_type":"Bearer","id_token":42}"#).unwrap();
        assert_eq!(
            (odd.access_token.expose(), odd.account),
            ("a", None),
            "an odd id_token costs only the name"
        );
    }

    #[test]
    fn lifetimes_are_bounded() {
        let at = |body: &str| parse(body).unwrap().expires_at - 1_000;
        assert_eq!(at(r#"{"access_token":"a","token_type":"Bearer"}"#), 300);
        assert_eq!(
            at(r#"{"access_token":"a","token_type":"Bearer","expires_in":9223372036854775807}"#),
            MAX_EXPIRES_IN
        );
        assert_eq!(
            at(r#"{"access_token":"a","token_type":"Bearer","expires_in":1e300}"#),
            MAX_EXPIRES_IN
        );
        for bad in ["-5", "0", "-1e300", "0.0"] {
            let body =
                format!(r#"{{"access_token":"a","token_type":"Bearer","expires_in":{bad}}}"#);
            assert!(parse(&body).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_error_body_that_quotes_the_request_loses_its_secrets() {
        let client = ClientCredentials {
            client_id: "c1".into(),
            client_secret: Some(Secret::new("s3cr+t/value")),
            auth_method: AuthMethod::ClientSecretBasic,
            signing_key: None,
            audience: "https://as.example".into(),
        };
        let form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", "rt_live-refresh-token".to_string()),
            ("code_verifier", "verifier_abcdefghijklmnop".to_string()),
            ("assertion", "eyJworkload.assertion.sig".to_string()),
        ];
        let secrets = RequestSecrets::of(&form, &client);
        let quoted = format!(
            "grant_type=refresh_token&refresh_token=rt_live-refresh-token&code_verifier=verifier_abcdefghijklmnop&assertion=eyJworkload.assertion.sig&client_secret=s3cr%2Bt%2Fvalue; Authorization: Basic {}",
            basic_credentials("c1", "s3cr+t/value")
        );
        let json = serde_json::json!({"error": "invalid_request", "error_description": quoted});
        for body in [json.to_string(), format!("<pre>{quoted}</pre>")] {
            let e = error_from(URL, 400, body.as_bytes(), &secrets).to_string();
            for secret in [
                "rt_live",
                "verifier_abc",
                "eyJworkload",
                "s3cr",
                &basic_credentials("c1", "s3cr+t/value")[..12],
            ] {
                assert!(!e.contains(secret), "{secret} in {e}");
            }
            assert!(e.contains("refresh_token=***"), "{e}");
            assert!(
                e.contains("grant_type=refresh_token"),
                "the rest stays: {e}"
            );
        }
    }

    #[test]
    fn a_clock_at_the_end_of_time_does_not_overflow() {
        let body = br#"{"access_token":"a","token_type":"bearer","expires_in":3600}"#;
        let t = parse_token_response(URL, body, i64::MAX - 10).unwrap();
        assert_eq!(t.expires_at, i64::MAX);
    }

    #[test]
    fn only_non_empty_bearer_tokens_in_json() {
        for body in [
            r#"{"access_token":"a"}"#,
            r#"{"access_token":"a","token_type":"mac"}"#,
            r#"{"access_token":"","token_type":"Bearer"}"#,
            r#"{"access_token":"a","#,
            "access_token=a&token_type=bearer",
        ] {
            let e = parse(body).unwrap_err().to_string();
            assert!(e.starts_with(URL), "{e}");
            assert!(!e.contains("access_token\":\"a"), "{e}");
        }
    }
}
