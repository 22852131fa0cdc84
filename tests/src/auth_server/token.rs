//! The token endpoint: dispatch by grant type, the authorization code and refresh grants, DPoP proofs.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use super::authorize::requested_resource;
use super::client_auth::authenticate_client;
use super::device::device_grant;
use super::machine_grants::{client_credentials, jwt_bearer, token_exchange};
use super::request::{
    OAuthError, Params, has_content_type, is_valid_verifier, no_store, random_token, s256,
    split_scope,
};
use super::state::{CodeState, Inner, Shared};
use super::{
    AsOptions, CODE_LIFETIME, DEVICE_GRANT, JWT_BEARER, TEST_ACCOUNT_EMAIL, TEST_ACCOUNT_SUBJECT,
    TOKEN_EXCHANGE, subject_of_hint,
};
use crate::jwt::TestKey;

/// Token endpoint.
pub(super) async fn token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let delay = shared
        .token_delay_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let params = Params::parse(&body);
    let is_refresh = params.get("grant_type") == Some("refresh_token");
    let response = {
        let mut inner = shared.lock();
        inner.last_token = Some(params.map.clone());
        if let Some(verifier) = params.get("code_verifier") {
            inner.remember_secret(verifier);
        }
        let result = dpop_proof(&shared, &mut inner, &headers)
            .and_then(|jkt| token_grant(&shared, &mut inner, &headers, &params, jkt));
        match result {
            Ok(body) => {
                if let Some(rt) = body.get("refresh_token").and_then(Value::as_str) {
                    inner.newest_refresh_token = Some(rt.to_string());
                }
                (StatusCode::OK, no_store(), axum::Json(body)).into_response()
            }
            Err(err) => {
                if is_refresh {
                    inner.counts.refresh_failures += 1;
                }
                err.into_response()
            }
        }
    };
    let reply_delay = shared
        .token_reply_delay_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    if reply_delay > 0 && is_refresh {
        tokio::time::sleep(Duration::from_millis(reply_delay)).await;
    }
    response
}

/// The token request's DPoP proof (RFC 9449 §5), when the server does DPoP: the
/// thumbprint of its key, or `None` without a proof.
pub(super) fn dpop_proof(
    shared: &Shared,
    inner: &mut Inner,
    headers: &HeaderMap,
) -> Result<Option<String>, OAuthError> {
    if !shared.opts.dpop {
        return Ok(None);
    }
    let invalid = |why: String| OAuthError::new(StatusCode::BAD_REQUEST, "invalid_dpop_proof", why);
    let Some(proof) = crate::dpop::header(headers).map_err(invalid)? else {
        return Ok(None);
    };
    let htu = format!("{}/token", shared.issuer);
    let proof = crate::dpop::verify(proof, "POST", &htu, None).map_err(invalid)?;
    if !inner.dpop_jtis.insert(proof.jti.clone()) {
        return Err(invalid("the proof's jti was used before".into()));
    }
    if shared.opts.dpop_nonce && proof.nonce.as_deref() != Some(shared.dpop_nonce.as_str()) {
        inner.counts.dpop_nonce_challenges += 1;
        return Err(OAuthError::new(
            StatusCode::BAD_REQUEST,
            "use_dpop_nonce",
            "the authorization server requires a DPoP nonce",
        )
        .with_nonce(&shared.dpop_nonce));
    }
    inner.counts.dpop_proofs += 1;
    Ok(Some(proof.jkt))
}

pub(super) fn token_grant(
    shared: &Shared,
    inner: &mut Inner,
    headers: &HeaderMap,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    check_form_request(headers, params)?;
    let client_id = authenticate_client(&shared.issuer, inner, headers, params)?;
    let mut body = match params.require("grant_type")? {
        "authorization_code" => exchange_code(&shared.opts, inner, &client_id, params, jkt)?,
        "refresh_token" => refresh(&shared.opts, inner, &client_id, params, jkt)?,
        // Grants without a browser issue bearer tokens here.
        "client_credentials" => client_credentials(shared, inner, &client_id, params)?,
        JWT_BEARER => jwt_bearer(shared, inner, &client_id, params)?,
        TOKEN_EXCHANGE if shared.opts.idp.is_some() => {
            token_exchange(shared, inner, &client_id, params)?
        }
        DEVICE_GRANT if shared.opts.device.is_some() => {
            device_grant(&shared.opts, inner, &client_id, params, jkt)?
        }
        other => {
            return Err(OAuthError::new(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                format!("grant_type {other} is not supported"),
            ));
        }
    };
    let openid = body["scope"]
        .as_str()
        .is_some_and(|s| s.split(' ').any(|s| s == "openid"));
    if openid {
        let user = body["access_token"]
            .as_str()
            .and_then(|at| inner.user_of(at))
            .flatten();
        let email = shared.opts.account_email.clone();
        let (sub, email) = match user {
            Some(hint) => (subject_of_hint(&hint), email.unwrap_or(hint)),
            None => (
                TEST_ACCOUNT_SUBJECT.to_string(),
                email.unwrap_or_else(|| TEST_ACCOUNT_EMAIL.to_string()),
            ),
        };
        let id_token = id_token(
            &shared.issuer,
            &client_id,
            &sub,
            &email,
            shared
                .opts
                .idp
                .as_ref()
                .map(|idp| (&*idp.key, idp.id_token_ttl_secs)),
        );
        inner.remember_secret(&id_token);
        body["id_token"] = json!(id_token);
    }
    Ok(body)
}

/// An OpenID Connect id_token for [`TEST_ACCOUNT_EMAIL`] (OIDC Core §2), issued whenever the
/// granted scope includes `openid`. Its signature is a random value — clients here only
/// read the claims for display, and a test that starts verifying must fail loudly —
/// except at an enterprise IdP, whose token exchange verifies its own ID tokens.
pub(super) fn id_token(
    issuer: &str,
    client_id: &str,
    sub: &str,
    email: &str,
    idp_key: Option<(&TestKey, u64)>,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let claims = json!({
        "iss": issuer,
        "sub": sub,
        "aud": client_id,
        "iat": now,
        "exp": now + idp_key.map_or(3600, |(_, ttl)| ttl),
        "email": email,
        "preferred_username": "tester",
    });
    if let Some((key, _)) = idp_key {
        return key.sign("JWT", &claims);
    }
    let part = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!(
        "{}.{}.{}",
        part(json!({"alg": "RS256", "typ": "JWT"})),
        part(claims),
        random_token("")
    )
}

pub(super) fn check_form_request(headers: &HeaderMap, params: &Params) -> Result<(), OAuthError> {
    if !has_content_type(headers, "application/x-www-form-urlencoded") {
        return Err(OAuthError::invalid_request(
            "Content-Type must be application/x-www-form-urlencoded",
        ));
    }
    params.reject_duplicates()
}

/// The requested `scope`, refused when it names a scope this server does not offer.
pub(super) fn supported_scope(
    opts: &AsOptions,
    params: &Params,
) -> Result<Option<String>, OAuthError> {
    let scope = params.get("scope").map(str::to_owned);
    if let Some(bad) = split_scope(scope.as_deref())
        .into_iter()
        .find(|s| !opts.scopes_supported.contains(s))
    {
        return Err(OAuthError::invalid_scope(format!(
            "scope {bad} is not offered"
        )));
    }
    Ok(scope)
}

/// `grant_type=authorization_code` (OAuth 2.1 section 4.1.3).
pub(super) fn exchange_code(
    opts: &AsOptions,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let code = params.require("code")?;
    let redirect_uri = params.require("redirect_uri")?;
    let verifier = params.require("code_verifier")?;
    let resource = requested_resource(opts, params)?;
    let resource = resource.as_str();

    let pending = inner
        .codes
        .get_mut(code)
        .ok_or_else(|| OAuthError::invalid_grant("unknown authorization code"))?;
    // Any redemption attempt consumes the code, so a wrong verifier cannot be
    // retried and a replay can be detected.
    let previous = std::mem::replace(&mut pending.state, CodeState::Consumed { family: None });
    if let CodeState::Consumed { family } = previous {
        if let Some(family) = family {
            inner.revoke_family(family);
        }
        return Err(OAuthError::invalid_grant(
            "authorization code was already used; tokens issued from it are revoked",
        ));
    }
    let pending = pending.clone();

    if pending.issued_at.elapsed() > CODE_LIFETIME {
        return Err(OAuthError::invalid_grant("authorization code expired"));
    }
    if pending.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "authorization code was issued to another client",
        ));
    }
    if pending.redirect_uri != redirect_uri {
        return Err(OAuthError::invalid_grant(
            "redirect_uri differs from the authorization request",
        ));
    }
    if !is_valid_verifier(verifier) || s256(verifier) != pending.code_challenge {
        return Err(OAuthError::invalid_grant(
            "code_verifier does not match code_challenge",
        ));
    }
    if pending.resource != resource {
        return Err(OAuthError::invalid_target(
            "resource differs from the authorization request",
        ));
    }

    let family = inner.new_family(
        client_id,
        pending.scope.clone(),
        pending.resource,
        pending.login_hint,
        jkt,
    );
    if let Some(stored) = inner.codes.get_mut(code) {
        stored.state = CodeState::Consumed {
            family: Some(family),
        };
    }
    let body = inner.issue(
        family,
        pending.scope,
        opts.issue_refresh_tokens && pending.offline,
    );
    inner.counts.code_exchanges += 1;
    Ok(body)
}

/// `grant_type=refresh_token` (OAuth 2.1 section 4.3) with rotation and
/// replay detection (section 4.3.1).
pub(super) fn refresh(
    opts: &AsOptions,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let presented = params.require("refresh_token")?;
    let record = inner
        .refresh_tokens
        .get(presented)
        .ok_or_else(|| OAuthError::invalid_grant("unknown refresh token"))?;
    let (family_id, rotated) = (record.family, record.rotated);
    let family = &inner.families[family_id];
    let (granted_scope, granted_resource) = (family.scope.clone(), family.resource.clone());
    if family.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "refresh token was issued to another client",
        ));
    }
    if family.revoked {
        return Err(OAuthError::invalid_grant("refresh token was revoked"));
    }
    // RFC 9449 §5: a public client's refresh token is bound to its DPoP key.
    if family.jkt.is_some() && family.jkt != jkt {
        return Err(OAuthError::invalid_grant(
            "refresh token is bound to a DPoP key the request did not prove",
        ));
    }
    if rotated {
        inner.revoke_family(family_id);
        return Err(OAuthError::invalid_grant(
            "refresh token was already used; the whole grant is revoked",
        ));
    }

    let resource = requested_resource(opts, params)?;
    let resource = resource.as_str();
    if resource != granted_resource {
        return Err(OAuthError::invalid_target(
            "resource differs from the original grant",
        ));
    }
    let scope = match params.get("scope") {
        None => granted_scope,
        Some(requested) => {
            let granted = split_scope(granted_scope.as_deref());
            if let Some(extra) = split_scope(Some(requested))
                .into_iter()
                .find(|s| !granted.contains(s))
            {
                return Err(OAuthError::invalid_scope(format!(
                    "scope {extra} exceeds the original grant"
                )));
            }
            Some(requested.to_owned())
        }
    };

    if opts.rotate_refresh_tokens
        && let Some(old) = inner.refresh_tokens.get_mut(presented)
    {
        old.rotated = true;
    }
    let body = inner.issue(family_id, scope, opts.rotate_refresh_tokens);
    inner.counts.refreshes += 1;
    inner.refresh_times.push(Instant::now());
    Ok(body)
}
