//! From an MCP server URL to trusted authorization server metadata: the 401 probe,
//! Protected Resource Metadata (RFC 9728) and authorization server metadata (RFC 8414 and
//! OpenID discovery), with the resource and issuer checks the MCP spec requires.

use reqwest::{StatusCode, header};
use serde::{Deserialize, Serialize};
use url::Url;

use super::http::{Http, UrlPolicy};
use super::www_authenticate::{BearerChallenge, parse_bearer};
use super::{OAuthError, printable};

/// RFC 9728 metadata, the fields we use.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ResourceMetadata {
    pub resource: String,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
    /// RFC 9728 §2: the DPoP algorithms the resource takes. Only a hint, read leniently.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_strings"
    )]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 9728 §2: the resource takes DPoP-bound tokens only. Read leniently.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_bool"
    )]
    pub dpop_bound_access_tokens_required: Option<bool>,
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
    /// Required in OpenID Connect Discovery 1.0 §3 metadata: its presence marks an
    /// OpenID provider, wherever the document was served. Read leniently, like the next
    /// field: only a hint, so a malformed value must not cost the login.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_strings"
    )]
    pub id_token_signing_alg_values_supported: Option<Vec<String>>,
    /// The `prompt` values the provider understands (OpenID Connect "Initiating User
    /// Registration" §4); few publish it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_strings"
    )]
    pub prompt_values_supported: Option<Vec<String>>,
    /// RFC 9449 §5.1: the algorithms the AS accepts DPoP proofs in; absent when it has
    /// no DPoP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpop_signing_alg_values_supported: Option<Vec<String>>,
    /// RFC 8628 §4: where a device login starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
}

impl AsMetadata {
    /// Whether an authorization request asking for `offline_access` needs `prompt=consent`
    /// to get a refresh token: OpenID Connect Core §11 lets an OpenID provider ignore
    /// `offline_access` otherwise, and strict ones do. The signal is that the server
    /// behaves as an OpenID provider (its metadata has the OIDC-required
    /// `id_token_signing_alg_values_supported`, or lists the `openid` scope, or lists
    /// `consent` among `prompt_values_supported`), unless its `prompt_values_supported`
    /// leaves `consent` out. Plain OAuth servers never get a `prompt` they may not know.
    pub fn wants_prompt_consent(&self) -> bool {
        let lists =
            |v: &Option<Vec<String>>, x: &str| v.as_ref().is_some_and(|v| v.iter().any(|s| s == x));
        if self.prompt_values_supported.is_some() {
            return lists(&self.prompt_values_supported, "consent");
        }
        self.id_token_signing_alg_values_supported
            .as_ref()
            .is_some_and(|v| !v.is_empty())
            || self.supports_scope("openid")
    }

    pub fn supports_scope(&self, scope: &str) -> bool {
        self.scopes_supported
            .as_ref()
            .is_some_and(|s| s.iter().any(|x| x == scope))
    }
}

/// An array of strings, or `None` for anything else (its non-string items dropped).
/// `Some(b)` for a JSON boolean, `None` for anything else.
fn lenient_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_bool())
}

fn lenient_strings<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Array(items) => Some(
            items
                .into_iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
        ),
        _ => None,
    })
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

impl Discovery {
    /// Whether the MCP server takes DPoP-bound tokens: its challenge offered the `DPoP`
    /// scheme (RFC 9449 §7.1), or its resource metadata names DPoP algorithms or requires
    /// bound tokens (RFC 9728 §2). A DPoP-bound token is of no use at a server that takes
    /// only Bearer tokens, whatever the authorization server offers.
    pub fn resource_takes_dpop(&self) -> bool {
        let m = &self.resource_metadata;
        self.challenge.as_ref().is_some_and(|c| c.dpop_offered)
            || m.dpop_bound_access_tokens_required == Some(true)
            || m.dpop_signing_alg_values_supported
                .as_ref()
                .is_some_and(|algs| !algs.is_empty())
    }
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
/// `assume_pkce_s256(issuer)` says whether the config trusts that authorization server
/// to take PKCE S256 although its metadata lists no `code_challenge_methods_supported`.
pub async fn discover(
    http: &Http,
    policy: &UrlPolicy,
    server_url: &str,
    challenge: Option<BearerChallenge>,
    assume_pkce_s256: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Discovery, OAuthError> {
    let challenge = match challenge {
        Some(c) => Some(c),
        None => probe(http, policy, server_url).await?,
    };
    if let Some(c) = &challenge {
        c.check_scopes(server_url)?;
    }
    let Some(resource_metadata) =
        fetch_resource_metadata(http, policy, server_url, challenge.as_ref()).await?
    else {
        return legacy_discovery(http, policy, server_url, challenge, assume_pkce_s256).await;
    };
    check_resource(server_url, &resource_metadata.resource)?;
    let issuer = resource_metadata.authorization_servers.first().cloned().ok_or_else(|| {
        OAuthError::Untrusted(format!(
            "the protected resource metadata of {server_url} names no authorization server (`authorization_servers` is empty)"
        ))
    })?;
    policy.check("authorization server (issuer)", &issuer, Some(server_url))?;
    let metadata = fetch_as_metadata(http, policy, &issuer, assume_pkce_s256(&issuer)).await?;
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
    policy: &UrlPolicy,
    server_url: &str,
    challenge: Option<BearerChallenge>,
    assume_pkce_s256: &(dyn Fn(&str) -> bool + Sync),
) -> Result<Discovery, OAuthError> {
    let url =
        Url::parse(server_url).map_err(|e| OAuthError::Untrusted(format!("{server_url}: {e}")))?;
    let issuer = url.origin().ascii_serialization();
    let metadata = match find_as_metadata(http, policy, &issuer, assume_pkce_s256(&issuer)).await? {
        Found::Metadata(m) => *m,
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
                id_token_signing_alg_values_supported: None,
                prompt_values_supported: None,
                dpop_signing_alg_values_supported: None,
                device_authorization_endpoint: None,
            };
            check_as_metadata(policy, &issuer, &metadata)?;
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
            ..Default::default()
        },
        challenge,
        metadata,
        legacy: true,
    })
}

/// An unauthenticated MCP request, to read the server's 401 challenge.
pub async fn probe(
    http: &Http,
    policy: &UrlPolicy,
    server_url: &str,
) -> Result<Option<BearerChallenge>, OAuthError> {
    let url = policy.check("MCP server URL", server_url, None)?;
    let initialize = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "mcp-authd", "version": env!("CARGO_PKG_VERSION")}}
    });
    let request = http
        .client()
        .post(url)
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
    policy: &UrlPolicy,
    server_url: &str,
    challenge: Option<&BearerChallenge>,
) -> Result<Option<Vec<String>>, OAuthError> {
    Ok(fetch_resource_metadata(http, policy, server_url, challenge)
        .await?
        .map(|m| m.authorization_servers))
}

/// The PRM, or `None` when the server has none at the well-known URLs (a 2025-03-26
/// server). A `resource_metadata` URL the challenge names must answer.
async fn fetch_resource_metadata(
    http: &Http,
    policy: &UrlPolicy,
    server_url: &str,
    challenge: Option<&BearerChallenge>,
) -> Result<Option<ResourceMetadata>, OAuthError> {
    let named = challenge.and_then(|c| c.resource_metadata.as_ref());
    let mut tried = Vec::new();
    for url in resource_metadata_urls(server_url, challenge)? {
        policy.check("resource metadata URL", &url, Some(server_url))?;
        let body = http.get(&url).await?;
        if body.status.is_success() {
            let metadata: ResourceMetadata = body.json()?;
            check_scope_list(
                &metadata.scopes_supported,
                &format!("the protected resource metadata of {server_url}"),
            )?;
            return Ok(Some(metadata));
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

/// Fetches and checks the metadata of `issuer` (see [`check_as_metadata_assuming`]).
pub async fn fetch_as_metadata(
    http: &Http,
    policy: &UrlPolicy,
    issuer: &str,
    assume_pkce_s256: bool,
) -> Result<AsMetadata, OAuthError> {
    match find_as_metadata(http, policy, issuer, assume_pkce_s256).await? {
        Found::Metadata(m) => Ok(*m),
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
    Metadata(Box<AsMetadata>),
    /// Every well-known URL answered an error status; what was tried.
    Nothing(Vec<String>),
}

async fn find_as_metadata(
    http: &Http,
    policy: &UrlPolicy,
    issuer: &str,
    assume_pkce_s256: bool,
) -> Result<Found, OAuthError> {
    let mut tried = Vec::new();
    for url in as_metadata_urls(issuer)? {
        policy.check("authorization server metadata URL", &url, Some(issuer))?;
        let body = http.get(&url).await?;
        if !body.status.is_success() {
            tried.push(format!("{url} (HTTP {})", body.status.as_u16()));
            continue;
        }
        let metadata: AsMetadata = body.json()?;
        check_as_metadata_assuming(policy, issuer, &metadata, assume_pkce_s256)?;
        return Ok(Found::Metadata(Box::new(metadata)));
    }
    Ok(Found::Nothing(tried))
}

/// Issuer identical to the one the URL was built from (RFC 8414 §3.3, no normalization),
/// PKCE S256 advertised, scopes valid, endpoints through the transport policy.
pub fn check_as_metadata(
    policy: &UrlPolicy,
    issuer: &str,
    m: &AsMetadata,
) -> Result<(), OAuthError> {
    check_as_metadata_assuming(policy, issuer, m, false)
}

/// [`check_as_metadata`], except that with `assume_pkce_s256` (the `assume_pkce_s256`
/// quirk of the config) metadata that lists no `code_challenge_methods_supported` at all
/// passes: Microsoft Entra ID takes S256 but does not advertise it. A list without S256
/// still fails.
pub fn check_as_metadata_assuming(
    policy: &UrlPolicy,
    issuer: &str,
    m: &AsMetadata,
    assume_pkce_s256: bool,
) -> Result<(), OAuthError> {
    if m.issuer != issuer {
        return Err(OAuthError::Untrusted(format!(
            "the authorization server metadata names issuer `{}` but was fetched for `{issuer}`; refusing to use it",
            printable(&m.issuer, 200)
        )));
    }
    let s256 = match &m.code_challenge_methods_supported {
        Some(methods) => methods.iter().any(|x| x == "S256"),
        None => assume_pkce_s256,
    };
    if !s256 {
        let hint = if m.code_challenge_methods_supported.is_none() {
            format!(
                " (if it does take S256 without saying so, as Microsoft Entra ID does, set `assume_pkce_s256 = true` under [servers.\"{issuer}\"] in the config file)"
            )
        } else {
            String::new()
        };
        return Err(OAuthError::Untrusted(format!(
            "the authorization server {issuer} does not advertise PKCE S256 (`code_challenge_methods_supported`), which MCP requires; refusing to log in{hint}"
        )));
    }
    check_scope_list(
        &m.scopes_supported,
        &format!("the authorization server metadata of {issuer}"),
    )?;
    check_endpoints(policy, m)
}

/// Every endpoint of the metadata through the transport policy, named by the issuer: at
/// discovery, and again before each use of stored metadata (the config may have changed).
pub fn check_endpoints(policy: &UrlPolicy, m: &AsMetadata) -> Result<(), OAuthError> {
    let issuer = Some(m.issuer.as_str());
    policy.check("authorization endpoint", &m.authorization_endpoint, issuer)?;
    policy.check("token endpoint", &m.token_endpoint, issuer)?;
    if let Some(r) = &m.registration_endpoint {
        policy.check("registration endpoint", r, issuer)?;
    }
    if let Some(r) = &m.revocation_endpoint {
        policy.check("revocation endpoint", r, issuer)?;
    }
    Ok(())
}

/// A `scopes_supported` list a server published: every entry an RFC 6749 scope token.
fn check_scope_list(scopes: &Option<Vec<String>>, whose: &str) -> Result<(), OAuthError> {
    for scope in scopes.iter().flatten() {
        mcp_authd_ipc::text::check_scope(scope)
            .map_err(|e| OAuthError::Untrusted(format!("{whose} lists an invalid scope: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DPoP only where the MCP server takes it: its challenge or its metadata says so;
    /// malformed hints count as silence.
    #[test]
    fn the_resource_says_whether_it_takes_dpop() {
        let prm = |v: serde_json::Value| -> ResourceMetadata { serde_json::from_value(v).unwrap() };
        let d = |m: ResourceMetadata, challenge: Option<BearerChallenge>| Discovery {
            server_url: "https://h.example/mcp".into(),
            resource: "https://h.example/mcp".into(),
            resource_metadata: m,
            challenge,
            metadata: metadata("https://as.example"),
            legacy: false,
        };
        let plain = prm(serde_json::json!({"resource": "https://h.example/mcp"}));
        assert!(!d(plain.clone(), None).resource_takes_dpop());
        assert!(!d(plain.clone(), Some(BearerChallenge::default())).resource_takes_dpop());
        let dpop_challenge = BearerChallenge {
            dpop_offered: true,
            ..Default::default()
        };
        assert!(d(plain, Some(dpop_challenge)).resource_takes_dpop());
        for (v, takes) in [
            (
                serde_json::json!({"dpop_signing_alg_values_supported": ["ES256"]}),
                true,
            ),
            (
                serde_json::json!({"dpop_bound_access_tokens_required": true}),
                true,
            ),
            (
                serde_json::json!({"dpop_bound_access_tokens_required": "yes"}),
                false,
            ),
            (
                serde_json::json!({"dpop_signing_alg_values_supported": "ES256"}),
                false,
            ),
            (
                serde_json::json!({"dpop_signing_alg_values_supported": []}),
                false,
            ),
        ] {
            let mut v = v;
            v["resource"] = "https://h.example/mcp".into();
            assert_eq!(d(prm(v.clone()), None).resource_takes_dpop(), takes, "{v}");
        }
    }

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
            id_token_signing_alg_values_supported: None,
            prompt_values_supported: None,
            dpop_signing_alg_values_supported: None,
            device_authorization_endpoint: None,
        }
    }

    fn strict() -> UrlPolicy {
        UrlPolicy::new("https://h.example/mcp", false)
    }

    #[test]
    fn malformed_openid_hints_cost_nothing() {
        let m: AsMetadata = serde_json::from_value(serde_json::json!({
            "issuer": "https://as.example",
            "authorization_endpoint": "https://as.example/a",
            "token_endpoint": "https://as.example/t",
            "id_token_signing_alg_values_supported": "RS256",
            "prompt_values_supported": [1, "consent", null],
        }))
        .unwrap();
        assert_eq!(m.id_token_signing_alg_values_supported, None);
        assert_eq!(m.prompt_values_supported, Some(vec!["consent".to_string()]));
        assert!(m.wants_prompt_consent());
    }

    #[test]
    fn prompt_consent_only_for_openid_providers_that_allow_it() {
        let mut m = metadata("https://as.example");
        assert!(!m.wants_prompt_consent(), "plain OAuth: no prompt");
        m.id_token_signing_alg_values_supported = Some(vec!["RS256".into()]);
        assert!(
            m.wants_prompt_consent(),
            "OpenID Connect Discovery metadata"
        );
        m.prompt_values_supported = Some(vec!["none".into(), "login".into()]);
        assert!(
            !m.wants_prompt_consent(),
            "the provider says it has no consent prompt"
        );
        m.prompt_values_supported = Some(vec!["consent".into()]);
        m.id_token_signing_alg_values_supported = None;
        assert!(m.wants_prompt_consent());
        let mut m = metadata("https://as.example");
        m.scopes_supported = Some(vec!["openid".into(), "offline_access".into()]);
        assert!(m.wants_prompt_consent(), "the openid scope");
    }

    #[test]
    fn issuer_compared_exactly_and_pkce_required() {
        let p = strict();
        assert!(
            check_as_metadata(&p, "https://as.example", &metadata("https://as.example")).is_ok()
        );
        assert!(
            check_as_metadata(&p, "https://as.example", &metadata("https://as.example/")).is_err()
        );
        let mut m = metadata("https://as.example");
        m.code_challenge_methods_supported = Some(vec!["plain".into()]);
        assert!(check_as_metadata(&p, "https://as.example", &m).is_err());
        assert!(
            check_as_metadata_assuming(&p, "https://as.example", &m, true).is_err(),
            "a list without S256 is never overridden"
        );
        m.code_challenge_methods_supported = None;
        assert!(check_as_metadata(&p, "https://as.example", &m).is_err());
        assert!(check_as_metadata_assuming(&p, "https://as.example", &m, true).is_ok());
        let mut m = metadata("https://as.example");
        m.token_endpoint = "http://as.example/token".into();
        assert!(check_as_metadata(&p, "https://as.example", &m).is_err());
    }

    /// A remote (https) issuer naming an endpoint on this machine is refused, whatever the
    /// scheme and even with allow_insecure_http: a remote server may not steer the daemon
    /// at local services.
    #[test]
    fn a_remote_issuer_with_a_loopback_endpoint_is_refused() {
        for endpoint in [
            "http://127.0.0.1:6379/token",
            "https://localhost/token",
            "http://[::1]/t",
        ] {
            let mut m = metadata("https://as.example");
            m.token_endpoint = endpoint.into();
            for allow in [false, true] {
                let policy = UrlPolicy::new("https://h.example/mcp", allow);
                let e = check_as_metadata(&policy, "https://as.example", &m)
                    .unwrap_err()
                    .to_string();
                assert!(
                    e.contains(endpoint) && e.contains("https://as.example") && e.contains("steer"),
                    "{e}"
                );
            }
        }
        let mut m = metadata("http://127.0.0.1:9");
        m.token_endpoint = "http://127.0.0.1:9/token".into();
        assert!(check_as_metadata(&strict(), "http://127.0.0.1:9", &m).is_ok());
    }

    #[test]
    fn invalid_scopes_in_metadata_are_refused_naming_the_server() {
        let mut m = metadata("https://as.example");
        m.scopes_supported = Some(vec!["ok".into(), "x\"y\n".into()]);
        let e = check_as_metadata(&strict(), "https://as.example", &m)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("https://as.example") && e.contains("scope"),
            "{e}"
        );
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
