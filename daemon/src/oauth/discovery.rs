//! From an MCP server URL to trusted authorization server metadata: the 401 probe,
//! Protected Resource Metadata (RFC 9728) and authorization server metadata (RFC 8414 and
//! OpenID discovery), with the resource and issuer checks the MCP spec requires.

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use url::Url;

use super::challenge::{BearerChallenge, parse_bearer};
use super::http::{Http, require_secure};
use super::{OAuthError, printable};

/// RFC 9728 metadata, the fields we use.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceMetadata {
    pub resource: String,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

/// RFC 8414 metadata, the fields we use. Stored in SQLite as JSON.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AsMetadata {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation_endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes_supported: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_challenge_methods_supported: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_endpoint_auth_methods_supported: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorization_response_iss_parameter_supported: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id_metadata_document_supported: Option<bool>,
    /// RFC 8628 §4: where a device login starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
}

impl AsMetadata {
    pub fn supports_scope(&self, scope: &str) -> bool {
        self.scopes_supported
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x == scope))
    }
}

/// What discovery found for one MCP server, all of it checked.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub server_url: String,
    /// The PRM `resource`, sent verbatim as the RFC 8707 `resource` parameter.
    pub resource: String,
    pub resource_metadata: ResourceMetadata,
    pub challenge: Option<BearerChallenge>,
    pub metadata: AsMetadata,
    /// The server publishes no protected resource metadata: the 2025-03-26 scheme, where
    /// the authorization server is the MCP server's origin.
    pub legacy: bool,
}

/// Canonical form of a server URL: parsed, fragment dropped, host lowercased, default port
/// removed. Users may type it any way; grants are found by this form.
pub fn normalize_server_url(raw: &str) -> Result<String, OAuthError> {
    let mut url = Url::parse(raw.trim()).map_err(|e| {
        OAuthError::Untrusted(format!("`{}` is not a URL: {e}", printable(raw, 200)))
    })?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(OAuthError::Untrusted(format!(
            "`{}` is not an http(s) URL",
            printable(raw, 200)
        )));
    }
    url.set_fragment(None);
    Ok(url.to_string())
}

/// Runs discovery: probe (unless the caller already has the challenge), PRM, AS metadata.
/// A server without PRM is treated as a 2025-03-26 server (see [`legacy_discovery`]).
pub async fn discover(
    http: &Http,
    server_url: &str,
    challenge: Option<BearerChallenge>,
) -> Result<Discovery, OAuthError> {
    let challenge = match challenge {
        Some(c) => Some(c),
        None => probe(http, server_url).await?,
    };
    let Some(resource_metadata) =
        fetch_resource_metadata(http, server_url, challenge.as_ref()).await?
    else {
        return legacy_discovery(http, server_url, challenge).await;
    };
    check_resource(server_url, &resource_metadata.resource)?;
    let issuer = resource_metadata.authorization_servers.first().cloned().ok_or_else(|| {
        OAuthError::Untrusted(format!(
            "the protected resource metadata of {server_url} names no authorization server (`authorization_servers` is empty)"
        ))
    })?;
    let metadata = fetch_as_metadata(http, &issuer).await?;
    Ok(Discovery {
        server_url: server_url.to_string(),
        resource: resource_metadata.resource.clone(),
        resource_metadata,
        challenge,
        metadata,
        legacy: false,
    })
}

/// The 2025-03-26 scheme, for servers without PRM: the authorization server is the MCP
/// server's origin; its RFC 8414 metadata is used when it has some, else the default
/// endpoints `/authorize`, `/token` and `/register` at that origin.
async fn legacy_discovery(
    http: &Http,
    server_url: &str,
    challenge: Option<BearerChallenge>,
) -> Result<Discovery, OAuthError> {
    let url =
        Url::parse(server_url).map_err(|e| OAuthError::Untrusted(format!("{server_url}: {e}")))?;
    let issuer = url.origin().ascii_serialization();
    let metadata = match find_as_metadata(http, &issuer).await? {
        Found::Metadata(m) => m,
        Found::Nothing(tried) => {
            tracing::info!(
                "{server_url} has neither resource nor authorization server metadata (tried {}); using the default endpoints at {issuer}",
                tried.join(", ")
            );
            let metadata = AsMetadata {
                issuer: issuer.clone(),
                authorization_endpoint: format!("{issuer}/authorize"),
                token_endpoint: format!("{issuer}/token"),
                registration_endpoint: Some(format!("{issuer}/register")),
                revocation_endpoint: None,
                scopes_supported: None,
                code_challenge_methods_supported: Some(vec!["S256".into()]),
                token_endpoint_auth_methods_supported: None,
                authorization_response_iss_parameter_supported: None,
                client_id_metadata_document_supported: None,
                device_authorization_endpoint: None,
            };
            check_as_metadata(&issuer, &metadata)?;
            metadata
        }
    };
    Ok(Discovery {
        server_url: server_url.to_string(),
        resource: server_url.to_string(),
        resource_metadata: ResourceMetadata {
            resource: server_url.to_string(),
            authorization_servers: vec![issuer],
            scopes_supported: None,
        },
        challenge,
        metadata,
        legacy: true,
    })
}

/// An unauthenticated MCP request, to read the server's 401 challenge.
pub async fn probe(http: &Http, server_url: &str) -> Result<Option<BearerChallenge>, OAuthError> {
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "mcp-authd", "version": env!("CARGO_PKG_VERSION")}}
    });
    let request = http
        .client()
        .post(server_url)
        .header(header::ACCEPT, "application/json, text/event-stream")
        .json(&initialize);
    let body = http.send(request).await?;
    if body.status == StatusCode::UNAUTHORIZED {
        let values = body
            .headers
            .get_all(header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        return Ok(Some(parse_bearer(values).unwrap_or_default()));
    }
    tracing::debug!(
        status = body.status.as_u16(),
        "probe of {server_url} was not challenged"
    );
    Ok(None)
}

/// The PRM URLs to try, in the spec's order: the one the challenge names (only it), else
/// the path-based well-known URL, then the root one.
pub fn resource_metadata_urls(
    server_url: &str,
    challenge: Option<&BearerChallenge>,
) -> Result<Vec<String>, OAuthError> {
    if let Some(url) = challenge.and_then(|c| c.resource_metadata.clone()) {
        return Ok(vec![url]);
    }
    let url =
        Url::parse(server_url).map_err(|e| OAuthError::Untrusted(format!("{server_url}: {e}")))?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    let mut urls = Vec::new();
    if !path.is_empty() {
        urls.push(format!(
            "{origin}/.well-known/oauth-protected-resource{path}"
        ));
    }
    urls.push(format!("{origin}/.well-known/oauth-protected-resource"));
    Ok(urls)
}

/// The authorization servers the resource metadata lists now (`None`: no PRM).
pub async fn authorization_servers_of(
    http: &Http,
    server_url: &str,
    challenge: Option<&BearerChallenge>,
) -> Result<Option<Vec<String>>, OAuthError> {
    Ok(fetch_resource_metadata(http, server_url, challenge)
        .await?
        .map(|m| m.authorization_servers))
}

/// The PRM, or `None` when the server has none at the well-known URLs (a 2025-03-26
/// server). A `resource_metadata` URL the challenge names must answer.
async fn fetch_resource_metadata(
    http: &Http,
    server_url: &str,
    challenge: Option<&BearerChallenge>,
) -> Result<Option<ResourceMetadata>, OAuthError> {
    let named = challenge.and_then(|c| c.resource_metadata.as_ref());
    let mut tried = Vec::new();
    for url in resource_metadata_urls(server_url, challenge)? {
        let body = http.get(&url).await?;
        if body.status.is_success() {
            return body.json().map(Some);
        }
        // A server error or a rate limit says nothing about whether the document exists:
        // falling back to the older discovery then would log in against whatever the
        // server's origin says, which may not be the authorization server it names.
        if body.status.is_server_error() || body.status.as_u16() == 429 {
            return Err(OAuthError::BadResponse {
                url,
                detail: format!(
                    "HTTP {} for the protected resource metadata of {server_url}: a server error, not a missing document (mcp-authd does not fall back to the older discovery on it)",
                    body.status.as_u16()
                ),
            });
        }
        tried.push(format!("{url} (HTTP {})", body.status.as_u16()));
    }
    if named.is_some() {
        return Err(OAuthError::BadResponse {
            url: server_url.to_string(),
            detail: format!(
                "the protected resource metadata its challenge names is not there ({})",
                tried.join(", ")
            ),
        });
    }
    tracing::debug!(
        "no protected resource metadata for {server_url} (tried {})",
        tried.join(", ")
    );
    Ok(None)
}

/// The PRM `resource` must identify this server: same origin, and its path a prefix of the
/// server's path on a segment boundary. Otherwise the server may be steering our tokens to
/// someone else's resource.
pub fn check_resource(server_url: &str, resource: &str) -> Result<(), OAuthError> {
    let mismatch = || {
        OAuthError::Untrusted(format!(
            "the protected resource metadata of {server_url} is for another resource (`{}`); refusing to authorize",
            printable(resource, 200)
        ))
    };
    let server = Url::parse(server_url).map_err(|_| mismatch())?;
    let res = Url::parse(resource).map_err(|_| mismatch())?;
    if server.origin() != res.origin() {
        return Err(mismatch());
    }
    let res_path = res.path().trim_end_matches('/');
    let srv_path = server.path().trim_end_matches('/');
    let prefix_ok = srv_path == res_path || srv_path.starts_with(&format!("{res_path}/"));
    if !prefix_ok {
        return Err(mismatch());
    }
    Ok(())
}

/// Authorization server metadata URLs in the order the MCP spec gives: for an issuer with
/// a path, OAuth path-insert, OIDC path-insert, OIDC path-append; without, OAuth then OIDC.
pub fn as_metadata_urls(issuer: &str) -> Result<Vec<String>, OAuthError> {
    let url = Url::parse(issuer).map_err(|e| {
        OAuthError::Untrusted(format!(
            "the issuer `{}` is not a URL: {e}",
            printable(issuer, 200)
        ))
    })?;
    let origin = url.origin().ascii_serialization();
    let path = url.path().trim_end_matches('/');
    Ok(if path.is_empty() {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server"),
            format!("{origin}/.well-known/openid-configuration"),
        ]
    } else {
        vec![
            format!("{origin}/.well-known/oauth-authorization-server{path}"),
            format!("{origin}/.well-known/openid-configuration{path}"),
            format!("{origin}{path}/.well-known/openid-configuration"),
        ]
    })
}

/// Fetches and checks the metadata of `issuer`.
pub async fn fetch_as_metadata(http: &Http, issuer: &str) -> Result<AsMetadata, OAuthError> {
    match find_as_metadata(http, issuer).await? {
        Found::Metadata(m) => Ok(m),
        Found::Nothing(tried) => Err(OAuthError::BadResponse {
            url: issuer.to_string(),
            detail: format!(
                "no authorization server metadata (tried {})",
                tried.join(", ")
            ),
        }),
    }
}

enum Found {
    Metadata(AsMetadata),
    /// Every well-known URL answered an error status; what was tried.
    Nothing(Vec<String>),
}

async fn find_as_metadata(http: &Http, issuer: &str) -> Result<Found, OAuthError> {
    let mut tried = Vec::new();
    for url in as_metadata_urls(issuer)? {
        let body = http.get(&url).await?;
        if !body.status.is_success() {
            tried.push(format!("{url} (HTTP {})", body.status.as_u16()));
            continue;
        }
        let metadata: AsMetadata = body.json()?;
        check_as_metadata(issuer, &metadata)?;
        return Ok(Found::Metadata(metadata));
    }
    Ok(Found::Nothing(tried))
}

/// Issuer identical to the one the URL was built from (RFC 8414 §3.3, no normalization),
/// PKCE S256 advertised, endpoints https or loopback.
pub fn check_as_metadata(issuer: &str, m: &AsMetadata) -> Result<(), OAuthError> {
    if m.issuer != issuer {
        return Err(OAuthError::Untrusted(format!(
            "the authorization server metadata names issuer `{}` but was fetched for `{issuer}`; refusing to use it",
            printable(&m.issuer, 200)
        )));
    }
    let s256 = m
        .code_challenge_methods_supported
        .as_ref()
        .is_some_and(|v| v.iter().any(|x| x == "S256"));
    if !s256 {
        return Err(OAuthError::Untrusted(format!(
            "the authorization server {issuer} does not advertise PKCE S256 (`code_challenge_methods_supported`), which MCP requires; refusing to log in"
        )));
    }
    require_secure("authorization endpoint", &m.authorization_endpoint)?;
    require_secure("token endpoint", &m.token_endpoint)?;
    if let Some(r) = &m.registration_endpoint {
        require_secure("registration endpoint", r)?;
    }
    if let Some(r) = &m.revocation_endpoint {
        require_secure("revocation endpoint", r)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prm_urls_follow_the_spec_order() {
        assert_eq!(
            resource_metadata_urls("https://h.example/public/mcp", None).unwrap(),
            vec![
                "https://h.example/.well-known/oauth-protected-resource/public/mcp",
                "https://h.example/.well-known/oauth-protected-resource"
            ]
        );
        let c = BearerChallenge {
            resource_metadata: Some("https://h.example/prm".into()),
            ..Default::default()
        };
        assert_eq!(
            resource_metadata_urls("https://h.example/mcp", Some(&c)).unwrap(),
            vec!["https://h.example/prm"]
        );
    }

    #[test]
    fn as_urls_insert_and_append_paths() {
        assert_eq!(
            as_metadata_urls("https://as.example/tenant1").unwrap(),
            vec![
                "https://as.example/.well-known/oauth-authorization-server/tenant1",
                "https://as.example/.well-known/openid-configuration/tenant1",
                "https://as.example/tenant1/.well-known/openid-configuration"
            ]
        );
        assert_eq!(
            as_metadata_urls("https://as.example").unwrap(),
            vec![
                "https://as.example/.well-known/oauth-authorization-server",
                "https://as.example/.well-known/openid-configuration"
            ]
        );
    }

    #[test]
    fn resource_must_cover_the_server() {
        assert!(check_resource("https://h.example/mcp", "https://h.example/mcp").is_ok());
        assert!(check_resource("https://h.example/mcp", "https://h.example/").is_ok());
        assert!(check_resource("https://h.example/mcp/", "https://h.example/mcp").is_ok());
        assert!(check_resource("https://h.example/mcp", "https://h.example/mcp2").is_err());
        assert!(check_resource("https://h.example/mcp", "https://evil.example/mcp").is_err());
        assert!(check_resource("https://h.example/mcp", "http://h.example/mcp").is_err());
        assert!(check_resource("https://h.example/mcp", "not a url").is_err());
    }

    fn metadata(issuer: &str) -> AsMetadata {
        AsMetadata {
            issuer: issuer.into(),
            authorization_endpoint: "https://as.example/authorize".into(),
            token_endpoint: "https://as.example/token".into(),
            registration_endpoint: None,
            revocation_endpoint: None,
            scopes_supported: None,
            code_challenge_methods_supported: Some(vec!["S256".into()]),
            token_endpoint_auth_methods_supported: None,
            authorization_response_iss_parameter_supported: None,
            client_id_metadata_document_supported: None,
            device_authorization_endpoint: None,
        }
    }

    #[test]
    fn issuer_compared_exactly_and_pkce_required() {
        assert!(check_as_metadata("https://as.example", &metadata("https://as.example")).is_ok());
        assert!(check_as_metadata("https://as.example", &metadata("https://as.example/")).is_err());
        let mut m = metadata("https://as.example");
        m.code_challenge_methods_supported = Some(vec!["plain".into()]);
        assert!(check_as_metadata("https://as.example", &m).is_err());
        m.code_challenge_methods_supported = None;
        assert!(check_as_metadata("https://as.example", &m).is_err());
        let mut m = metadata("https://as.example");
        m.token_endpoint = "http://as.example/token".into();
        assert!(check_as_metadata("https://as.example", &m).is_err());
    }

    #[test]
    fn normalizes_server_urls() {
        assert_eq!(
            normalize_server_url(" HTTPS://H.Example:443/mcp#x ").unwrap(),
            "https://h.example/mcp"
        );
        assert!(normalize_server_url("ftp://h.example/").is_err());
        assert!(normalize_server_url("mcp").is_err());
    }
}
