//! The authorization endpoint: validates the request, consents at once, redirects with a code.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::request::{OAuthError, Params, is_valid_resource, is_valid_s256_challenge, split_scope};
use super::state::{CodeState, PendingCode, Shared};
use super::{AsOptions, IMPLIED_RESOURCE};

/// Authorization endpoint with automatic consent.
pub(super) async fn authorize(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let mut inner = shared.lock();
    inner.last_authorize = Some(params.map.clone());

    // Until client and redirect URI are trusted, errors must not redirect
    // (RFC 6749 section 4.1.2.1): that would be an open redirector.
    let client_id = match params.get("client_id") {
        Some(id) if !params.duplicated.contains("client_id") => id,
        _ => return plain_error("missing or repeated client_id"),
    };
    let Some(client) = inner.clients.get(client_id) else {
        return plain_error("unknown client_id");
    };
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if !params.duplicated.contains("redirect_uri") => uri,
        _ => return plain_error("missing or repeated redirect_uri"),
    };
    if !client.accepts_redirect(redirect_uri) {
        return plain_error("redirect_uri is not registered for this client");
    }
    // Parsing cannot fail for an accepted URI, but never trust that blindly.
    let Ok(mut location) = Url::parse(redirect_uri) else {
        return plain_error("redirect_uri is not an absolute URI");
    };

    match validate_authorization_request(&shared.opts, &params) {
        Ok(request) => {
            let code = inner.new_secret("ac_");
            inner.codes.insert(
                code.clone(),
                PendingCode {
                    client_id: client_id.to_owned(),
                    redirect_uri: redirect_uri.to_owned(),
                    code_challenge: request.code_challenge,
                    scope: request.scope,
                    resource: request.resource,
                    offline: request.offline,
                    issued_at: Instant::now(),
                    state: CodeState::Fresh,
                    login_hint: params.get("login_hint").map(str::to_string),
                },
            );
            inner.counts.authorizations += 1;
            location.query_pairs_mut().append_pair("code", &code);
        }
        Err(err) => {
            location
                .query_pairs_mut()
                .append_pair("error", err.code)
                .append_pair("error_description", &err.description);
        }
    }
    let mut pairs = location.query_pairs_mut();
    if let Some(state) = params.get("state") {
        pairs.append_pair("state", state);
    }
    // RFC 9207 mix-up defence, on success and error alike.
    pairs.append_pair("iss", &shared.issuer);
    drop(pairs);
    redirect(&location)
}

/// The validated parts of an authorization request that the code remembers.
pub(super) struct AuthorizationRequest {
    pub(super) code_challenge: String,
    pub(super) scope: Option<String>,
    pub(super) resource: String,
    /// Refresh tokens may be issued: always, except at a `strict_oidc` server, which
    /// needs `offline_access` and `prompt=consent`.
    pub(super) offline: bool,
}

pub(super) fn validate_authorization_request(
    opts: &AsOptions,
    params: &Params,
) -> Result<AuthorizationRequest, OAuthError> {
    params.reject_duplicates()?;
    match params.require("response_type")? {
        "code" => {}
        _ => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_response_type",
                "only response_type=code is supported",
            ));
        }
    }
    // OAuth 2.1: PKCE is mandatory and a missing method means "plain",
    // which this server refuses.
    if params.get("code_challenge_method") != Some("S256") {
        return Err(OAuthError::invalid_request(
            "code_challenge_method must be S256",
        ));
    }
    let code_challenge = params.require("code_challenge")?;
    if !is_valid_s256_challenge(code_challenge) {
        return Err(OAuthError::invalid_request(
            "code_challenge is not a base64url SHA-256 digest",
        ));
    }
    let resource = requested_resource(opts, params)?;
    let resource = resource.as_str();
    if !is_valid_resource(resource) {
        return Err(OAuthError::invalid_target(
            "resource must be an absolute URI without a fragment",
        ));
    }
    let scope = params.get("scope");
    if let Some(unknown) = split_scope(scope)
        .into_iter()
        .find(|s| !opts.scopes_supported.contains(s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "unknown scope {unknown}"
        )));
    }
    let offline = !opts.strict_oidc
        || (split_scope(scope).iter().any(|s| s == "offline_access")
            && params
                .get("prompt")
                .is_some_and(|p| p.split(' ').any(|v| v == "consent")));
    Ok(AuthorizationRequest {
        code_challenge: code_challenge.to_owned(),
        scope: scope.map(String::from),
        resource: resource.to_owned(),
        offline,
    })
}

/// The `resource` a request is for, as this AS reads it (see `rejects_resource`).
pub(super) fn requested_resource(opts: &AsOptions, params: &Params) -> Result<String, OAuthError> {
    match (params.get("resource"), opts.rejects_resource) {
        (Some(_), true) => Err(OAuthError::invalid_target(
            "the resource parameter is not supported; scopes name the resource",
        )),
        (None, true) => Ok(IMPLIED_RESOURCE.to_string()),
        (Some(r), false) => Ok(r.to_string()),
        (None, false) => Err(OAuthError::invalid_target(
            "resource (RFC 8707) is required",
        )),
    }
}

pub(super) fn plain_error(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

pub(super) fn redirect(location: &Url) -> Response {
    match HeaderValue::from_str(location.as_str()) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        // A serialized Url is always ASCII, so this is unreachable in practice.
        Err(_) => plain_error("cannot build the redirect"),
    }
}
