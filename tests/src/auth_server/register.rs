//! RFC 7591 dynamic client registration, strict about the metadata a client sends.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use url::Url;

use super::request::{OAuthError, has_content_type, is_loopback, no_store, random_token};
use super::state::{AuthMethod, Client, Inner, Shared};
use super::{AsOptions, DEVICE_GRANT, GRANT_TYPES};

/// RFC 7591 dynamic client registration.
pub(super) async fn register(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice::<Value>(&body);
    let mut inner = shared.lock();
    inner.registrations.push(match &parsed {
        Ok(value) => value.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&body).into_owned()),
    });
    let result = if !has_content_type(&headers, "application/json") {
        Err(OAuthError::client_metadata(
            "invalid_client_metadata",
            "Content-Type must be application/json",
        ))
    } else {
        match parsed {
            Ok(Value::Object(request)) => register_client(&shared.opts, &mut inner, &request),
            _ => Err(OAuthError::client_metadata(
                "invalid_client_metadata",
                "body must be a JSON object",
            )),
        }
    };
    match result {
        Ok(body) => (StatusCode::CREATED, no_store(), axum::Json(body)).into_response(),
        Err(err) => err.into_response(),
    }
}

/// Validates client metadata, stores the client and builds the RFC 7591
/// section 3.2.1 response.
pub(super) fn register_client(
    opts: &AsOptions,
    inner: &mut Inner,
    request: &serde_json::Map<String, Value>,
) -> Result<Value, OAuthError> {
    let metadata_error = |d: &str| OAuthError::client_metadata("invalid_client_metadata", d);

    let redirect_uris = string_array(request, "redirect_uris")
        .ok_or_else(|| {
            OAuthError::client_metadata(
                "invalid_redirect_uri",
                "redirect_uris must be an array of strings",
            )
        })?
        .unwrap_or_default();
    if redirect_uris.is_empty() {
        return Err(OAuthError::client_metadata(
            "invalid_redirect_uri",
            "redirect_uris is required",
        ));
    }
    if let Some(bad) = redirect_uris.iter().find(|u| !is_registrable_redirect(u)) {
        return Err(OAuthError::client_metadata(
            "invalid_redirect_uri",
            format!("{bad} is neither https nor an http loopback URI with a port"),
        ));
    }

    match request.get("application_type") {
        None => {}
        Some(Value::String(t)) if t == "native" || t == "web" => {}
        Some(_) => {
            return Err(metadata_error(
                "application_type must be \"native\" or \"web\"",
            ));
        }
    }

    let requested_method = match request.get("token_endpoint_auth_method") {
        None => None,
        Some(Value::String(m)) => Some(
            AuthMethod::parse(m)
                .ok_or_else(|| metadata_error("unsupported token_endpoint_auth_method"))?,
        ),
        Some(_) => {
            return Err(metadata_error(
                "token_endpoint_auth_method must be a string",
            ));
        }
    };
    // RFC 7591 section 2: the default is client_secret_basic.
    let method = opts
        .dcr_auth_method
        .as_deref()
        .and_then(AuthMethod::parse)
        .or(requested_method)
        .unwrap_or(AuthMethod::ClientSecretBasic);

    let grant_types = string_array(request, "grant_types")
        .ok_or_else(|| metadata_error("grant_types must be an array of strings"))?
        // The server may substitute defaults; offering both lets clients
        // that omit grant_types still refresh.
        .unwrap_or_else(|| GRANT_TYPES.map(String::from).to_vec());
    let device = opts.device.is_some();
    if let Some(bad) = grant_types
        .iter()
        .find(|g| !(GRANT_TYPES.contains(&g.as_str()) || device && g.as_str() == DEVICE_GRANT))
    {
        return Err(metadata_error(&format!("unsupported grant type {bad}")));
    }
    let response_types = string_array(request, "response_types")
        .ok_or_else(|| metadata_error("response_types must be an array of strings"))?
        .unwrap_or_else(|| vec!["code".to_owned()]);
    if response_types.iter().any(|r| r != "code") {
        return Err(metadata_error(
            "only the \"code\" response type is supported",
        ));
    }

    let client_id = format!("client_{}", random_token(""));
    let secret = (method != AuthMethod::None).then(|| inner.new_secret("cs_"));
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());

    let mut response = json!({
        "client_id": client_id,
        "client_id_issued_at": issued_at,
        "redirect_uris": redirect_uris,
        "grant_types": grant_types,
        "response_types": response_types,
        "token_endpoint_auth_method": method.as_str(),
    });
    if let Some(secret) = &secret {
        response["client_secret"] = json!(secret);
        // Required whenever a secret is issued; 0 means "never expires".
        response["client_secret_expires_at"] = json!(0);
    }
    for echoed in [
        "client_name",
        "application_type",
        "scope",
        "client_uri",
        "software_id",
        "software_version",
    ] {
        if let Some(value) = request.get(echoed) {
            response[echoed] = value.clone();
        }
    }

    inner.clients.insert(
        client_id,
        Client {
            secret,
            method,
            redirect_uris,
            jwt_key: None,
        },
    );
    inner.counts.registrations += 1;
    Ok(response)
}

/// `Some(None)` if absent, `Some(Some(v))` if an array of strings, `None` if
/// malformed.
pub(super) fn string_array(
    object: &serde_json::Map<String, Value>,
    key: &str,
) -> Option<Option<Vec<String>>> {
    match object.get(key) {
        None => Some(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(String::from))
            .collect::<Option<Vec<_>>>()
            .map(Some),
        Some(_) => None,
    }
}

/// What DCR accepts as a redirect URI: https, or http on a loopback host
/// with an explicit port (RFC 8252 section 7.3), never with a fragment.
pub(super) fn is_registrable_redirect(uri: &str) -> bool {
    let Ok(url) = Url::parse(uri) else {
        return false;
    };
    if url.fragment().is_some() {
        return false;
    }
    match url.scheme() {
        "https" => url.has_host(),
        "http" => is_loopback(&url) && url.port().is_some(),
        _ => false,
    }
}
