//! Client identity at an authorization server: a pre-registered client from the config
//! file, or Dynamic Client Registration (RFC 7591) as a native public client.

use serde::{Deserialize, Serialize};

use super::discovery::AsMetadata;
use super::http::{Http, UrlPolicy};
use super::{OAuthError, printable};
use crate::secret::Secret;

/// Human-facing client metadata (RFC 7591 §2) for dynamic client registration: some
/// authorization servers show it on their consent screen, some require a policy or terms
/// URL. Only these fields: the rest of the registration is what the login needs.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ClientMetadata {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logo_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tos_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contacts: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub software_version: Option<String>,
}

/// How the client authenticates at the token endpoint (RFC 7591 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    /// RFC 7523 §2.2: a JWT signed with the client's private key (configured clients only).
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn parse(s: &str) -> Result<AuthMethod, String> {
        match s {
            "none" => Ok(AuthMethod::None),
            "client_secret_basic" => Ok(AuthMethod::ClientSecretBasic),
            "client_secret_post" => Ok(AuthMethod::ClientSecretPost),
            "private_key_jwt" => Ok(AuthMethod::PrivateKeyJwt),
            other => Err(format!(
                "unsupported token_endpoint_auth_method `{}` (use none, client_secret_basic, client_secret_post or private_key_jwt)",
                printable(other, 64)
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AuthMethod::None => "none",
            AuthMethod::ClientSecretBasic => "client_secret_basic",
            AuthMethod::ClientSecretPost => "client_secret_post",
            AuthMethod::PrivateKeyJwt => "private_key_jwt",
        }
    }
}

/// A client id with what it needs to authenticate.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Option<Secret>,
    pub auth_method: AuthMethod,
    /// The private key of a `private_key_jwt` client.
    pub signing_key: Option<std::sync::Arc<super::jwt::SigningKey>>,
    /// The `aud` of its client assertions: the authorization server's issuer.
    pub audience: String,
}

/// The result of a successful registration.
#[derive(Debug, Clone)]
pub struct Registered {
    pub credentials: ClientCredentials,
    pub redirect_uri: String,
}

#[derive(Deserialize)]
struct RegistrationResponse {
    client_id: String,
    #[serde(default)]
    client_secret: Option<Secret>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
}

/// A public client (`none`) where the AS allows it: a secret on a laptop protects little.
/// Otherwise the first secret-based method the AS lists (RFC 8414 default: basic).
pub fn preferred_auth_method(metadata: &AsMetadata) -> AuthMethod {
    let Some(supported) = &metadata.token_endpoint_auth_methods_supported else {
        return AuthMethod::None;
    };
    [
        AuthMethod::None,
        AuthMethod::ClientSecretBasic,
        AuthMethod::ClientSecretPost,
    ]
    .into_iter()
    .find(|m| supported.iter().any(|s| s == m.as_str()))
    .unwrap_or(AuthMethod::ClientSecretBasic)
}

/// Registers mcp-authd at the AS as a native public client for `redirect_uri`; the
/// config's `client_metadata` replaces the names and URIs it says about itself.
pub async fn register(
    http: &Http,
    policy: &UrlPolicy,
    metadata: &AsMetadata,
    redirect_uri: &str,
    overrides: Option<&ClientMetadata>,
) -> Result<Registered, OAuthError> {
    let endpoint = metadata.registration_endpoint.as_deref().ok_or_else(|| {
        OAuthError::RegistrationRefused(format!(
            "{} offers no dynamic client registration; register a client there and put its client_id in the config file under [servers.\"<server url>\"]",
            metadata.issuer
        ))
    })?;
    let endpoint = policy.check("registration endpoint", endpoint, Some(&metadata.issuer))?;
    // The device grant only where the server offers it: a strict server refuses a
    // registration naming a grant type it does not know.
    let mut grant_types = vec!["authorization_code", "refresh_token"];
    if metadata.device_authorization_endpoint.is_some() {
        grant_types.push(crate::oauth::device::GRANT_TYPE);
    }
    let mut body = serde_json::json!({
        "client_name": "mcp-authd",
        "software_id": "mcp-authd",
        "software_version": env!("CARGO_PKG_VERSION"),
        "application_type": "native",
        "redirect_uris": [redirect_uri],
        "grant_types": grant_types,
        "response_types": ["code"],
        "token_endpoint_auth_method": preferred_auth_method(metadata).as_str(),
    });
    if let (Some(overrides), Some(body)) = (overrides, body.as_object_mut())
        && let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(overrides)
    {
        body.extend(fields);
    }
    let response = http
        .send(http.client().post(endpoint.clone()).json(&body))
        .await?;
    if !response.status.is_success() {
        let text = String::from_utf8_lossy(&response.bytes);
        return Err(OAuthError::RegistrationRefused(format!(
            "{endpoint} answered HTTP {}: {}",
            response.status.as_u16(),
            printable(text.trim(), 300)
        )));
    }
    let reg: RegistrationResponse = response.json()?;
    // The client id is shown by `list` and `inspect`: one a terminal would interpret (or
    // an empty one) is refused rather than stored.
    if reg.client_id.is_empty() || reg.client_id.chars().any(char::is_control) {
        return Err(OAuthError::RegistrationRefused(format!(
            "{endpoint} assigned the client id `{}`, which is empty or holds control characters",
            printable(&reg.client_id, 64)
        )));
    }
    let auth_method = match reg.token_endpoint_auth_method.as_deref() {
        Some(m) => AuthMethod::parse(m).map_err(OAuthError::RegistrationRefused)?,
        None if reg.client_secret.is_some() => AuthMethod::ClientSecretBasic,
        None => AuthMethod::None,
    };
    if auth_method == AuthMethod::PrivateKeyJwt
        || (auth_method != AuthMethod::None && reg.client_secret.is_none())
    {
        return Err(OAuthError::RegistrationRefused(format!(
            "{endpoint} registered a client for {} but gave no client_secret",
            auth_method.as_str()
        )));
    }
    Ok(Registered {
        credentials: ClientCredentials {
            client_id: reg.client_id,
            client_secret: reg.client_secret,
            auth_method,
            signing_key: None,
            audience: metadata.issuer.clone(),
        },
        redirect_uri: redirect_uri.to_string(),
    })
}
