//! Grants without a user: client_credentials, jwt-bearer assertions (ID-JAG) and token exchange.

use axum::http::StatusCode;
use serde_json::{Value, json};

use super::authorize::requested_resource;
use super::request::{OAuthError, Params, random_token};
use super::state::{AuthMethod, Inner, Shared};
use super::token::supported_scope;
use super::{TOKEN_TYPE_ID_JAG, TOKEN_TYPE_ID_TOKEN};

/// `grant_type=client_credentials` (OAuth 2.1 section 4.2): confidential clients only;
/// no refresh token (RFC 6749 §4.4.3).
pub(super) fn client_credentials(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
) -> Result<Value, OAuthError> {
    if inner.clients.get(client_id).map(|c| c.method) == Some(AuthMethod::None) {
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "unauthorized_client",
            "public clients may not use client_credentials",
        ));
    }
    let resource = requested_resource(&shared.opts, params)?;
    let scope = supported_scope(&shared.opts, params)?;
    let family = inner.new_family(client_id, scope.clone(), resource, None, None);
    let body = inner.issue(family, scope, false);
    inner.counts.client_credentials += 1;
    Ok(body)
}

/// `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer` (RFC 7523 §2.1): an assertion
/// signed by a trusted issuer, for this server (`aud`), live. An ID-JAG
/// (SEP-990, `typ` `oauth-id-jag+jwt`) must also name the authenticated client and the
/// requested resource.
pub(super) fn jwt_bearer(
    shared: &Shared,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
) -> Result<Value, OAuthError> {
    inner.counts.jwt_bearer_requests += 1;
    let assertion = params.require("assertion")?.to_string();
    inner.remember_secret(&assertion);
    inner.assertions_seen.push(assertion.clone());
    if inner.reject_assertions {
        return Err(OAuthError::invalid_grant(
            "the assertion's subject is no longer authorized",
        ));
    }
    let (_, unverified) = crate::jwt::peek(&assertion).map_err(OAuthError::invalid_grant)?;
    let iss = unverified["iss"].as_str().unwrap_or_default();
    let key = shared
        .opts
        .trusted_assertion_issuers
        .iter()
        .find(|(trusted, _)| trusted == iss)
        .map(|(_, key)| key)
        .ok_or_else(|| {
            OAuthError::invalid_grant(format!("assertion issuer {iss} is not trusted"))
        })?;
    let (header, claims) = key.verify(&assertion).map_err(OAuthError::invalid_grant)?;
    // No replay check: like the workload identity federation of real clouds, a projected
    // token is accepted again until it expires (RFC 7523 §3 leaves it to the server).
    crate::jwt::check_assertion_claims(&claims, &shared.issuer)
        .map_err(OAuthError::invalid_grant)?;
    let resource = requested_resource(&shared.opts, params)?;
    if header["typ"] == "oauth-id-jag+jwt" {
        if claims["client_id"] != client_id {
            return Err(OAuthError::invalid_grant(
                "the ID-JAG is for another client",
            ));
        }
        if claims["resource"] != resource.as_str() {
            return Err(OAuthError::invalid_target(
                "the ID-JAG is for another resource",
            ));
        }
    }
    let scope = supported_scope(&shared.opts, params)?;
    let family = inner.new_family(client_id, scope.clone(), resource, None, None);
    let body = inner.issue(family, scope, false);
    inner.counts.jwt_bearer_grants += 1;
    Ok(body)
}

/// `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693) at an
/// enterprise IdP: an ID token it issued, exchanged for an ID-JAG addressed to
/// `audience` for `resource` (SEP-990).
pub(super) fn token_exchange(
    shared: &Shared,
    inner: &mut Inner,
    _client_id: &str,
    params: &Params,
) -> Result<Value, OAuthError> {
    let idp = shared.opts.idp.as_ref().expect("checked by the caller");
    if params.require("requested_token_type")? != TOKEN_TYPE_ID_JAG {
        return Err(OAuthError::invalid_request(
            "requested_token_type must be the ID-JAG type",
        ));
    }
    if params.require("subject_token_type")? != TOKEN_TYPE_ID_TOKEN {
        return Err(OAuthError::invalid_request(
            "subject_token_type must be id_token",
        ));
    }
    let audience = params.require("audience")?.to_string();
    let resource = params.require("resource")?.to_string();
    let subject_token = params.require("subject_token")?;
    let (_, id_token) = idp
        .key
        .verifying_key()
        .verify(subject_token)
        .map_err(|e| OAuthError::invalid_grant(format!("subject_token: {e}")))?;
    if id_token["iss"] != shared.issuer.as_str()
        || id_token["exp"]
            .as_i64()
            .is_none_or(|exp| exp <= crate::jwt::unix_now())
    {
        return Err(OAuthError::invalid_grant(
            "subject_token is not a live ID token of this IdP",
        ));
    }
    let now = crate::jwt::unix_now();
    let jag = idp.key.sign(
        "oauth-id-jag+jwt",
        &json!({
            "iss": shared.issuer,
            "sub": id_token["sub"],
            "aud": audience,
            "resource": resource,
            "client_id": idp.jag_client_id,
            "iat": now,
            "exp": now + 300,
            "jti": random_token("jti_"),
        }),
    );
    inner.remember_secret(&jag);
    inner.counts.token_exchanges += 1;
    Ok(json!({
        "access_token": jag,
        "issued_token_type": TOKEN_TYPE_ID_JAG,
        "token_type": "N_A",
        "expires_in": 300,
    }))
}
