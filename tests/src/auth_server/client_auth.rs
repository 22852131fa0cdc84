//! Client authentication at the token endpoint: exactly the method the client registered.

use axum::http::{HeaderMap, HeaderValue, header};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::request::{OAuthError, Params, form_decode};
use super::state::{AuthMethod, Inner};

/// Authenticates the client with exactly the method it registered
/// (RFC 6749 section 2.3) and returns its client_id.
pub(super) fn authenticate_client(
    issuer: &str,
    inner: &mut Inner,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, OAuthError> {
    if params.get("client_assertion").is_some() || params.get("client_assertion_type").is_some() {
        return authenticate_jwt_client(issuer, inner, headers, params);
    }
    if let Some(authorization) = headers.get(header::AUTHORIZATION) {
        let (id, secret) = parse_basic(authorization)?;
        if params.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request(
                "use only one client authentication method",
            ));
        }
        if params.get("client_id").is_some_and(|form_id| form_id != id) {
            return Err(OAuthError::invalid_request(
                "client_id differs from the HTTP Basic user",
            ));
        }
        let client = inner
            .clients
            .get(&id)
            .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
        if client.method != AuthMethod::ClientSecretBasic {
            return Err(OAuthError::invalid_client(format!(
                "client is registered for {}, not client_secret_basic",
                client.method.as_str()
            )));
        }
        if client.secret.as_deref() != Some(secret.as_str()) {
            return Err(OAuthError::invalid_client("wrong client secret"));
        }
        return Ok(id);
    }

    let id = params
        .get("client_id")
        .ok_or_else(|| OAuthError::invalid_client("no client authentication"))?;
    let client = inner
        .clients
        .get(id)
        .ok_or_else(|| OAuthError::invalid_client("unknown client"))?;
    let form_secret = params.get("client_secret");
    match client.method {
        AuthMethod::None if form_secret.is_some() => Err(OAuthError::invalid_client(
            "public client must not send a client_secret",
        )),
        AuthMethod::None => Ok(id.to_owned()),
        AuthMethod::ClientSecretPost
            if form_secret.is_some() && form_secret == client.secret.as_deref() =>
        {
            Ok(id.to_owned())
        }
        AuthMethod::ClientSecretPost => {
            Err(OAuthError::invalid_client("missing or wrong client_secret"))
        }
        AuthMethod::ClientSecretBasic => Err(OAuthError::invalid_client(
            "client is registered for client_secret_basic: use HTTP Basic",
        )),
        AuthMethod::PrivateKeyJwt => Err(OAuthError::invalid_client(
            "client is registered for private_key_jwt: send a client_assertion",
        )),
    }
}

/// RFC 7523 §2.2 / §3: a client assertion signed with the client's registered key, with
/// `iss` = `sub` = the client, `aud` this issuer, a live `exp` and an unused `jti`.
pub(super) fn authenticate_jwt_client(
    issuer: &str,
    inner: &mut Inner,
    headers: &HeaderMap,
    params: &Params,
) -> Result<String, OAuthError> {
    if headers.contains_key(header::AUTHORIZATION) || params.get("client_secret").is_some() {
        return Err(OAuthError::invalid_request(
            "use only one client authentication method",
        ));
    }
    if params.get("client_assertion_type")
        != Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    {
        return Err(OAuthError::invalid_client("wrong client_assertion_type"));
    }
    let assertion = params.require("client_assertion")?;
    inner.remember_secret(assertion);
    let (_, unverified) = crate::jwt::peek(assertion)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    let id = unverified["sub"].as_str().unwrap_or_default().to_string();
    let key = inner
        .clients
        .get(&id)
        .filter(|c| c.method == AuthMethod::PrivateKeyJwt)
        .and_then(|c| c.jwt_key.clone())
        .ok_or_else(|| OAuthError::invalid_client("unknown private_key_jwt client"))?;
    let (_, claims) = key
        .verify(assertion)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    if claims["iss"] != id.as_str() {
        return Err(OAuthError::invalid_client(
            "client_assertion iss is not the client",
        ));
    }
    if params.get("client_id").is_some_and(|form_id| form_id != id) {
        return Err(OAuthError::invalid_request(
            "client_id differs from the assertion",
        ));
    }
    crate::jwt::check_assertion_claims(&claims, issuer)
        .map_err(|e| OAuthError::invalid_client(format!("client_assertion: {e}")))?;
    let jti = claims["jti"]
        .as_str()
        .ok_or_else(|| OAuthError::invalid_client("client_assertion has no jti"))?;
    if !inner.used_jtis.insert(jti.to_string()) {
        return Err(OAuthError::invalid_client(
            "client_assertion replayed (jti seen before)",
        ));
    }
    Ok(id)
}

/// Parses `Authorization: Basic base64(urlencode(id):urlencode(secret))`.
pub(super) fn parse_basic(value: &HeaderValue) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed HTTP Basic credentials");
    let value = value.to_str().map_err(|_| malformed())?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(malformed)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "only HTTP Basic client authentication is accepted in Authorization",
        ));
    }
    let decoded = STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let decoded = String::from_utf8(decoded).map_err(|_| malformed())?;
    let (id, secret) = decoded.split_once(':').ok_or_else(malformed)?;
    Ok((
        form_decode(id).ok_or_else(malformed)?,
        form_decode(secret).ok_or_else(malformed)?,
    ))
}
