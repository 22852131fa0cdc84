//! RFC 7009 token revocation.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::client_auth::authenticate_client;
use super::request::{OAuthError, Params};
use super::state::{FamilyId, Shared};
use super::token::check_form_request;

/// RFC 7009 revocation.
pub(super) async fn revoke(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let mut inner = shared.lock();
    let result = check_form_request(&headers, &params)
        .and_then(|()| authenticate_client(&shared.issuer, &mut inner, &headers, &params))
        .and_then(|client_id| {
            let token = params.require("token")?;
            Ok((client_id, token))
        });
    let (client_id, token) = match result {
        Ok(ok) => ok,
        Err(err) => return err.into_response(),
    };

    let inner = &mut *inner;
    inner.revoked.push(token.to_string());
    let owned = |family: FamilyId| inner.families[family].client_id == client_id;
    // The hint is only an optimisation (RFC 7009 section 2.1): look the token
    // up in both tables regardless. Revoking a refresh token ends its whole
    // grant, including access tokens issued from it.
    let kind = if inner.refresh_tokens.contains_key(token) {
        "refresh_token"
    } else if inner.access_tokens.contains_key(token) {
        "access_token"
    } else {
        "unknown"
    };
    inner.revoked_kinds.push(kind);
    if let Some(family) = inner.refresh_tokens.get(token).map(|r| r.family) {
        if owned(family) {
            inner.revoke_family(family);
        }
    } else if let Some(access) = inner.access_tokens.get_mut(token)
        && inner.families[access.family].client_id == client_id
    {
        if shared.opts.access_token_revocation_unsupported {
            inner.counts.revocations += 1;
            return OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_token_type",
                "access tokens are self-contained and cannot be revoked",
            )
            .into_response();
        }
        access.revoked = true;
    }
    // Tokens of other clients are silently left alone: a 200 for
    // everything avoids revealing which tokens exist.
    inner.counts.revocations += 1;
    StatusCode::OK.into_response()
}
