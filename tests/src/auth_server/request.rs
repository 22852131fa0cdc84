//! Form parameters, RFC 6749 error responses and the small pure checks the endpoints share.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::json;
use sha2::{Digest, Sha256};
use url::{Host, Url};

/// `application/x-www-form-urlencoded` parameters (query or body).
pub(super) struct Params {
    pub(super) map: BTreeMap<String, String>,
    pub(super) duplicated: BTreeSet<String>,
}

impl Params {
    pub(super) fn parse(raw: &[u8]) -> Self {
        let mut map = BTreeMap::new();
        let mut duplicated = BTreeSet::new();
        for (key, value) in url::form_urlencoded::parse(raw) {
            if map.insert(key.to_string(), value.into_owned()).is_some() {
                duplicated.insert(key.into_owned());
            }
        }
        Self { map, duplicated }
    }

    /// RFC 6749 section 3.1: parameters without a value are treated as
    /// omitted.
    pub(super) fn get(&self, key: &str) -> Option<&str> {
        self.map
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub(super) fn require(&self, key: &str) -> Result<&str, OAuthError> {
        self.get(key)
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {key}")))
    }

    /// RFC 6749 section 3.1: parameters must not be repeated.
    pub(super) fn reject_duplicates(&self) -> Result<(), OAuthError> {
        match self.duplicated.first() {
            Some(key) => Err(OAuthError::invalid_request(format!(
                "parameter {key} is repeated"
            ))),
            None => Ok(()),
        }
    }
}

/// An RFC 6749 section 5.2 error.
#[derive(Debug)]
pub(super) struct OAuthError {
    pub(super) status: StatusCode,
    pub(super) code: &'static str,
    pub(super) description: String,
    /// A `DPoP-Nonce` to send with the error (RFC 9449 §8).
    pub(super) nonce: Option<String>,
}

impl OAuthError {
    pub(super) fn new(
        status: StatusCode,
        code: &'static str,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            description: description.into(),
            nonce: None,
        }
    }

    pub(super) fn with_nonce(mut self, nonce: &str) -> Self {
        self.nonce = Some(nonce.to_owned());
        self
    }

    pub(super) fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", description)
    }

    pub(super) fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "invalid_client", description)
    }

    pub(super) fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_grant", description)
    }

    pub(super) fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_target", description)
    }

    pub(super) fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_scope", description)
    }

    pub(super) fn client_metadata(code: &'static str, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, description)
    }
}

impl IntoResponse for OAuthError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "error_description": self.description});
        let mut response = (self.status, no_store(), axum::Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 6749 section 5.2: a 401 must carry a challenge.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"mcp-authd-test-as\""),
            );
        }
        if let Some(nonce) = self.nonce.and_then(|n| HeaderValue::from_str(&n).ok()) {
            response.headers_mut().insert("dpop-nonce", nonce);
        }
        response
    }
}

/// RFC 6749 section 5.1: token responses must not be cached.
pub(super) fn no_store() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

pub(super) fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case(expected))
}

/// 32 random bytes, base64url, behind a prefix that makes logs readable.
pub(super) fn random_token(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
    )
}

/// RFC 7636 section 4.2 S256 transform.
pub(super) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 section 4.1: 43..=128 characters of `[A-Za-z0-9-._~]`.
pub(super) fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

/// An S256 challenge is exactly a base64url-nopad SHA-256 digest.
pub(super) fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub(super) fn split_scope(scope: Option<&str>) -> Vec<String> {
    scope
        .unwrap_or_default()
        .split(' ')
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// RFC 8707 section 2: an absolute URI without a fragment.
pub(super) fn is_valid_resource(resource: &str) -> bool {
    Url::parse(resource).is_ok_and(|url| url.fragment().is_none() && url.has_host())
}

/// Decodes one `application/x-www-form-urlencoded` component, as used for
/// HTTP Basic client credentials (RFC 6749 section 2.3.1).
pub(super) fn form_decode(component: &str) -> Option<String> {
    let bytes = component.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}
