//! RFC 8628 device authorization: the device code, the verification page, the polling grant.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::time::Instant;

use super::authorize::{plain_error, requested_resource};
use super::client_auth::authenticate_client;
use super::request::{OAuthError, Params, is_valid_resource, no_store, split_scope};
use super::state::{DeviceDecision, DeviceGrant, Inner, Shared};
use super::token::check_form_request;
use super::{AsOptions, DevicePoll};

/// RFC 8628 §3.1: a device code for an authenticated client, for a scope and (RFC 8707)
/// a resource checked as `/authorize` checks them.
pub(super) async fn device_authorization(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let params = Params::parse(&body);
    let mut inner = shared.lock();
    inner.last_device = Some(params.map.clone());
    let device = shared.opts.device.clone().unwrap_or_default();
    let result = check_form_request(&headers, &params)
        .and_then(|()| authenticate_client(&shared.issuer, &mut inner, &headers, &params))
        .and_then(|client_id| {
            let resource = requested_resource(&shared.opts, &params)?;
            if !is_valid_resource(&resource) {
                return Err(OAuthError::invalid_target(
                    "resource must be an absolute URI without a fragment",
                ));
            }
            let scope = params.get("scope");
            if let Some(unknown) = split_scope(scope)
                .into_iter()
                .find(|s| !shared.opts.scopes_supported.contains(s))
            {
                return Err(OAuthError::invalid_scope(format!(
                    "unknown scope {unknown}"
                )));
            }
            Ok((client_id, resource, scope.map(String::from)))
        });
    let (client_id, resource, scope) = match result {
        Ok(ok) => ok,
        Err(err) => return err.into_response(),
    };
    let device_code = inner.new_secret("dc_");
    // RFC 8628 §6.1: short, unambiguous, typed by a human.
    let letters: String = rand::random::<[u8; 8]>()
        .iter()
        .map(|b| b"BCDFGHJKLMNPQRSTVWXZ"[usize::from(*b) % 20] as char)
        .collect();
    let user_code = format!("{}-{}", &letters[..4], &letters[4..]);
    let interval = Duration::from_secs(device.interval_secs.unwrap_or(5));
    inner.device_codes.insert(
        device_code.clone(),
        DeviceGrant {
            client_id,
            user_code: user_code.clone(),
            scope,
            resource,
            expires_at: Instant::now() + Duration::from_secs(device.code_ttl_secs),
            interval,
            last_poll: None,
            decision: DeviceDecision::Pending,
        },
    );
    let issuer = &shared.issuer;
    let mut body = json!({
        "device_code": device_code,
        "user_code": user_code,
        "verification_uri": format!("{issuer}/device"),
        "verification_uri_complete": format!("{issuer}/device?user_code={user_code}"),
        "expires_in": device.code_ttl_secs,
    });
    if let Some(interval) = device.interval_secs {
        body["interval"] = json!(interval);
    }
    (StatusCode::OK, no_store(), axum::Json(body)).into_response()
}

/// The verification page: a GET with the user code plays the user who approves it
/// (`decision=deny` denies).
pub(super) async fn device_verification(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let params = Params::parse(query.unwrap_or_default().as_bytes());
    let Some(user_code) = params.get("user_code") else {
        return (StatusCode::OK, "Enter the code shown on your device.").into_response();
    };
    let deny = params.get("decision") == Some("deny");
    let mut inner = shared.lock();
    let Some(grant) = inner
        .device_codes
        .values_mut()
        .find(|g| g.user_code == user_code && g.decision == DeviceDecision::Pending)
    else {
        return plain_error("unknown or used user code");
    };
    if Instant::now() >= grant.expires_at {
        return plain_error("this code has expired");
    }
    grant.decision = if deny {
        DeviceDecision::Denied
    } else {
        DeviceDecision::Approved
    };
    (
        StatusCode::OK,
        if deny {
            "Denied."
        } else {
            "Approved: you can return to your device."
        },
    )
        .into_response()
}

/// `grant_type=urn:ietf:params:oauth:grant-type:device_code` (RFC 8628 §3.4–3.5): every
/// poll recorded, a client that polls faster than the interval slowed down.
pub(super) fn device_grant(
    opts: &AsOptions,
    inner: &mut Inner,
    client_id: &str,
    params: &Params,
    jkt: Option<String>,
) -> Result<Value, OAuthError> {
    let code = params.require("device_code")?.to_string();
    let resource = requested_resource(opts, params)?;
    let scripted_slow_downs = opts.device.as_ref().map_or(0, |d| d.slow_down_polls);
    let polls_so_far = inner.device_polls.len();
    let now = Instant::now();
    let answer = poll_device_code(
        inner.device_codes.get_mut(&code),
        client_id,
        &resource,
        polls_so_far < scripted_slow_downs as usize,
        now,
    )
    .map(|(scope, resource)| {
        let family = inner.new_family(client_id, scope.clone(), resource, None, jkt);
        (family, scope)
    });
    inner.device_polls.push(DevicePoll {
        at: now,
        answer: match &answer {
            Ok(_) => "granted".into(),
            Err(e) => e.code.to_string(),
        },
    });
    let (family, scope) = answer?;
    inner.counts.code_exchanges += 1;
    Ok(inner.issue(family, scope, opts.issue_refresh_tokens))
}

/// What one poll with a device code gets: the approved grant's (scope, resource), the code
/// then spent, or the RFC 8628 §3.5 error.
pub(super) fn poll_device_code(
    grant: Option<&mut DeviceGrant>,
    client_id: &str,
    resource: &str,
    scripted_slow_down: bool,
    now: Instant,
) -> Result<(Option<String>, String), OAuthError> {
    let grant = grant.ok_or_else(|| OAuthError::invalid_grant("unknown device code"))?;
    if grant.client_id != client_id {
        return Err(OAuthError::invalid_grant(
            "device code was issued to another client",
        ));
    }
    if grant.resource != resource {
        return Err(OAuthError::invalid_target(
            "resource differs from the device authorization request",
        ));
    }
    let error = |code: &'static str| OAuthError::new(StatusCode::BAD_REQUEST, code, code);
    let too_soon = grant
        .last_poll
        .is_some_and(|last| now.duration_since(last) < grant.interval);
    grant.last_poll = Some(now);
    if now >= grant.expires_at {
        return Err(error("expired_token"));
    }
    if scripted_slow_down || too_soon {
        grant.interval += Duration::from_secs(5);
        return Err(error("slow_down"));
    }
    match grant.decision {
        DeviceDecision::Pending => Err(error("authorization_pending")),
        DeviceDecision::Denied => Err(error("access_denied")),
        DeviceDecision::Redeemed => Err(OAuthError::invalid_grant("device code already used")),
        DeviceDecision::Approved => {
            grant.decision = DeviceDecision::Redeemed;
            Ok((grant.scope.clone(), grant.resource.clone()))
        }
    }
}
