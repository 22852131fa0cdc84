//! RFC 8414 authorization server metadata and its OpenID Connect twin.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::state::{AuthMethod, Shared};
use super::{DEVICE_GRANT, GRANT_TYPES, JWT_BEARER, TOKEN_EXCHANGE};

/// RFC 8414 metadata.
pub(super) async fn metadata(State(shared): State<Arc<Shared>>) -> Response {
    let issuer = &shared.issuer;
    let mut body = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "response_types_supported": ["code"],
        "grant_types_supported": GRANT_TYPES.iter().chain(&["client_credentials", JWT_BEARER]).collect::<Vec<_>>(),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": AuthMethod::ALL.iter().chain(&["private_key_jwt"]).collect::<Vec<_>>(),
        "token_endpoint_auth_signing_alg_values_supported": ["ES256", "RS256"],
        "scopes_supported": shared.opts.scopes_supported,
        "authorization_response_iss_parameter_supported": true,
    });
    if shared.opts.idp.is_some() {
        body["grant_types_supported"]
            .as_array_mut()
            .expect("an array")
            .push(json!(TOKEN_EXCHANGE));
    }
    if shared.opts.registration_endpoint {
        body["registration_endpoint"] = json!(format!("{issuer}/register"));
    }
    if shared.opts.pkce_unadvertised {
        body.as_object_mut()
            .expect("metadata object")
            .remove("code_challenge_methods_supported");
    }
    if shared.opts.revocation_endpoint {
        body["revocation_endpoint"] = json!(format!("{issuer}/revoke"));
        body["revocation_endpoint_auth_methods_supported"] = json!(AuthMethod::ALL);
    }
    if shared.opts.strict_oidc {
        // What OpenID Connect Discovery 1.0 §3 requires beyond RFC 8414.
        body["id_token_signing_alg_values_supported"] = json!(["RS256"]);
        body["subject_types_supported"] = json!(["public"]);
        body["jwks_uri"] = json!(format!("{issuer}/jwks"));
    }
    if shared.opts.dpop {
        body["dpop_signing_alg_values_supported"] = json!(["ES256"]);
    }
    if shared.opts.device.is_some() {
        body["device_authorization_endpoint"] = json!(format!("{issuer}/device_authorization"));
        body["grant_types_supported"] = json!([GRANT_TYPES[0], GRANT_TYPES[1], DEVICE_GRANT]);
    }
    axum::Json(body).into_response()
}

/// OpenID Connect Discovery: the same document, only for a `strict_oidc` server.
pub(super) async fn openid_configuration(State(shared): State<Arc<Shared>>) -> Response {
    if !shared.opts.strict_oidc {
        return StatusCode::NOT_FOUND.into_response();
    }
    metadata(State(shared)).await
}
