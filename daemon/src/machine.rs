//! Grants without a browser, configured per server (`grant = …`): client credentials
//! (SEP-1046), the JWT-bearer grant with an assertion from outside such as a workload
//! identity token (RFC 7523, SEP-1933), and enterprise-managed authorization (SEP-990: an
//! RFC 8693 token exchange at the enterprise IdP for an ID-JAG, then the JWT-bearer grant).
//!
//! The same function obtains the first token (a login) and every later one (a renewal):
//! these grants have no refresh token worth keeping, so renewing is granting again, with
//! inputs (assertion, ID token) read afresh each time. A rejected grant is never retried
//! here: the caller marks the grant as needing a login and reports why.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{EnterpriseConfig, GrantKind, ServerConfig, Source};
use crate::oauth::OAuthError;
use crate::oauth::discovery::{AsMetadata, fetch_as_metadata};
use crate::oauth::http::{Http, UrlPolicy};
use crate::oauth::jwt::{Algorithm, SigningKey};
use crate::oauth::registration::{AuthMethod, ClientCredentials};
use crate::oauth::token::{TOKEN_TYPE_ID_JAG, Tokens, exchange_token, now, request_tokens};
use crate::secret::Secret;
use crate::store::{SecretStore, SecretStoreError, keys};
use zeroize::Zeroizing;

/// RFC 7523 §2.1.
pub const GRANT_TYPE_JWT_BEARER: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// RFC 8693 §3.
const TOKEN_TYPE_ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
/// A command that provides a credential must answer within this time.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest credential read from a file, a command or a variable (a JWT or a PEM key).
const MAX_SOURCE_BYTES: usize = 64 * 1024;

/// Why a grant without a browser did not produce tokens.
#[derive(Debug, thiserror::Error)]
pub enum GrantError {
    /// A credential could not be read (file, command, variable, secret store, key).
    #[error("{0}")]
    Input(String),
    /// The IdP or the authorization server refused (an RFC 6749 §5.2 error).
    #[error("{0}")]
    Rejected(OAuthError),
    /// The network, or an answer that cannot be used.
    #[error("{0}")]
    Server(OAuthError),
}

impl From<OAuthError> for GrantError {
    fn from(e: OAuthError) -> Self {
        match e {
            OAuthError::TokenError(_) => GrantError::Rejected(e),
            other => GrantError::Server(other),
        }
    }
}

/// What these grants reach: the HTTP client every request to a server goes through, and
/// the secret store holding the config file's named secrets and the IdP's tokens. Lent by
/// the broker, which owns both, so that this module needs nothing else of it.
#[derive(Clone, Copy)]
pub struct Reach<'a> {
    pub http: &'a Http,
    pub secrets: &'a SecretStore,
}

/// What the grant is for.
pub struct Target<'a> {
    /// The transport policy of the MCP server the grant is for.
    pub policy: &'a UrlPolicy,
    pub metadata: &'a AsMetadata,
    /// The RFC 8707 resource (the MCP server).
    pub resource: &'a str,
    pub scopes: &'a [String],
    /// The `omit_resource` quirk.
    pub omit_resource: bool,
}

/// Runs the configured grant once and returns its tokens (any refresh token dropped).
pub async fn obtain(
    reach: Reach<'_>,
    kind: GrantKind,
    cfg: &ServerConfig,
    client: &ClientCredentials,
    target: &Target<'_>,
) -> Result<Tokens, GrantError> {
    let mut form: Vec<(&'static str, String)> = match kind {
        GrantKind::AuthorizationCode => {
            return Err(GrantError::Input(
                "the authorization code grant needs the browser login".into(),
            ));
        }
        GrantKind::ClientCredentials => vec![("grant_type", "client_credentials".into())],
        GrantKind::JwtBearer => {
            let source = cfg.assertion.as_ref().ok_or_else(|| {
                GrantError::Input("grant = \"jwt_bearer\" needs an assertion source".into())
            })?;
            let assertion = read_source(reach, source, "the assertion").await?;
            vec![
                ("grant_type", GRANT_TYPE_JWT_BEARER.into()),
                ("assertion", assertion.expose().to_string()),
            ]
        }
        GrantKind::Enterprise => {
            let enterprise = cfg.enterprise.as_ref().ok_or_else(|| {
                GrantError::Input("grant = \"enterprise\" needs an [enterprise] table".into())
            })?;
            let id_jag = id_jag(reach, enterprise, target).await?;
            vec![
                ("grant_type", GRANT_TYPE_JWT_BEARER.into()),
                ("assertion", id_jag.expose().to_string()),
            ]
        }
    };
    if !target.scopes.is_empty() {
        form.push(("scope", target.scopes.join(" ")));
    }
    if !target.omit_resource {
        form.push(("resource", target.resource.to_string()));
    }
    let mut tokens = request_tokens(
        reach.http,
        target.policy,
        &target.metadata.issuer,
        &target.metadata.token_endpoint,
        client,
        form,
        // Grants without a browser are bearer grants.
        None,
    )
    .await
    .map_err(GrantError::from)?;
    tokens.refresh_token = None;
    Ok(tokens)
}

/// SEP-990 step one: the user's ID token exchanged at the enterprise IdP for an ID-JAG
/// addressed to the authorization server (`audience`) for the MCP server (`resource`).
async fn id_jag(
    reach: Reach<'_>,
    enterprise: &EnterpriseConfig,
    target: &Target<'_>,
) -> Result<Secret, GrantError> {
    let id_token = match &enterprise.id_token {
        Some(source) => read_source(reach, source, "the ID token").await?,
        None => idp_id_token(reach, enterprise, target.policy).await?,
    };
    let idp_client = idp_client(enterprise);
    let mut form = vec![
        ("subject_token", id_token.expose().to_string()),
        ("subject_token_type", TOKEN_TYPE_ID_TOKEN.to_string()),
        ("audience", target.metadata.issuer.clone()),
        ("resource", target.resource.to_string()),
    ];
    if !target.scopes.is_empty() {
        form.push(("scope", target.scopes.join(" ")));
    }
    exchange_token(
        reach.http,
        target.policy,
        // Typed into the config, not named by a server.
        None,
        &enterprise.idp_token_endpoint,
        &idp_client,
        TOKEN_TYPE_ID_JAG,
        form,
    )
    .await
    .map_err(|e| match GrantError::from(e) {
        GrantError::Rejected(e) => GrantError::Rejected(OAuthError::BadResponse {
            url: enterprise.idp_token_endpoint.clone(),
            detail: format!("the token exchange for an ID-JAG with a refusal: {e}"),
        }),
        other => other,
    })
}

/// mcp-authd as a client of the enterprise IdP: its `idp_client_id`, with HTTP Basic when
/// an `idp_client_secret` is configured.
pub fn idp_client(enterprise: &EnterpriseConfig) -> ClientCredentials {
    ClientCredentials {
        client_id: enterprise.idp_client_id.clone().unwrap_or_default(),
        client_secret: enterprise.idp_client_secret.clone(),
        auth_method: if enterprise.idp_client_secret.is_some() {
            AuthMethod::ClientSecretBasic
        } else {
            AuthMethod::None
        },
        signing_key: None,
        audience: enterprise.idp_issuer.clone().unwrap_or_default(),
    }
}

/// The ID token of the daemon's own OpenID login at the IdP: the stored one while it has
/// a minute left, else one renewed with the IdP's refresh token. Without either, the
/// error says to log in (which runs the OpenID login in the browser).
pub async fn idp_id_token(
    reach: Reach<'_>,
    enterprise: &EnterpriseConfig,
    policy: &UrlPolicy,
) -> Result<Secret, GrantError> {
    let issuer = enterprise.idp_issuer.as_deref().ok_or_else(|| {
        GrantError::Input("[enterprise] needs id_token = { … } or idp_issuer".into())
    })?;
    let store_error = |e: SecretStoreError| GrantError::Input(e.to_string());
    if let Some(token) = reach
        .secrets
        .get(&keys::idp_id_token(issuer))
        .await
        .map_err(store_error)?
        && crate::oauth::id_token::expires_at(token.expose()).is_some_and(|exp| exp > now() + 60)
    {
        return Ok(token);
    }
    let Some(refresh_token) = reach
        .secrets
        .get(&keys::idp_refresh_token(issuer))
        .await
        .map_err(store_error)?
    else {
        return Err(GrantError::Input(format!(
            "there is no current ID token from {issuer}: the OpenID login there is needed"
        )));
    };
    let metadata = fetch_as_metadata(reach.http, policy, issuer, false)
        .await
        .map_err(GrantError::Server)?;
    let form = vec![
        ("grant_type", "refresh_token".to_string()),
        ("refresh_token", refresh_token.expose().to_string()),
    ];
    let tokens = request_tokens(
        reach.http,
        policy,
        &metadata.issuer,
        &metadata.token_endpoint,
        &idp_client(enterprise),
        form,
        None,
    )
    .await
    .map_err(GrantError::from)?;
    store_idp_tokens(reach, issuer, &tokens).await
}

/// Keeps the ID token (and refresh token) of an OpenID login or refresh at the IdP.
pub async fn store_idp_tokens(
    reach: Reach<'_>,
    issuer: &str,
    tokens: &Tokens,
) -> Result<Secret, GrantError> {
    let id_token = tokens.id_token.clone().ok_or_else(|| {
        GrantError::Input(format!(
            "{issuer} issued no id_token (is `openid` a scope mcp-authd's client may use there?)"
        ))
    })?;
    let store_error = |e: SecretStoreError| GrantError::Input(e.to_string());
    reach
        .secrets
        .set(&keys::idp_id_token(issuer), &id_token)
        .await
        .map_err(store_error)?;
    if let Some(rt) = &tokens.refresh_token {
        reach
            .secrets
            .set(&keys::idp_refresh_token(issuer), rt)
            .await
            .map_err(store_error)?;
    }
    Ok(id_token)
}

/// The private key of a `private_key_jwt` client, from its file or the secret store.
pub async fn signing_key(
    reach: Reach<'_>,
    cfg: &ServerConfig,
) -> Result<Arc<SigningKey>, GrantError> {
    let source = cfg.private_key.as_ref().ok_or_else(|| {
        GrantError::Input(
            "token_endpoint_auth_method = \"private_key_jwt\" needs private_key = { file = … } or { keychain = … }".into(),
        )
    })?;
    let pem = read_source(reach, source, "the private key").await?;
    let wanted = cfg
        .signing_algorithm
        .as_deref()
        .map(Algorithm::parse)
        .transpose()
        .map_err(|e| GrantError::Input(e.to_string()))?;
    SigningKey::from_pem(&pem, wanted)
        .map(Arc::new)
        .map_err(|e| GrantError::Input(format!("{} holds no usable key: {e}", source.describe())))
}

/// Reads a credential afresh from where the config says; trimmed, never empty.
pub async fn read_source(
    reach: Reach<'_>,
    source: &Source,
    what: &str,
) -> Result<Secret, GrantError> {
    let failed = |why: String| {
        GrantError::Input(format!(
            "cannot read {what} from {}: {why}",
            source.describe()
        ))
    };
    // Every copy of the value is wiped when dropped, not only the returned one.
    let value: Zeroizing<String> = Zeroizing::new(match source {
        Source::File(path) => {
            let bytes = tokio::fs::read(path)
                .await
                .map_err(|e| failed(e.to_string()))?;
            if bytes.len() > MAX_SOURCE_BYTES {
                return Err(failed(format!(
                    "it is longer than {MAX_SOURCE_BYTES} bytes"
                )));
            }
            String::from_utf8(bytes).map_err(|_| failed("it is not UTF-8 text".into()))?
        }
        Source::Command(argv) => {
            let (program, args) = argv
                .split_first()
                .ok_or_else(|| failed("no program is named".into()))?;
            let run = tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(COMMAND_TIMEOUT, run)
                .await
                .map_err(|_| {
                    failed(format!(
                        "it did not finish within {} s",
                        COMMAND_TIMEOUT.as_secs()
                    ))
                })?
                .map_err(|e| failed(e.to_string()))?;
            if !output.status.success() {
                let stderr = String::from_utf8_lossy(&output.stderr);
                return Err(failed(format!(
                    "it exited with {} ({})",
                    output.status,
                    crate::oauth::printable(stderr.trim(), 200)
                )));
            }
            if output.stdout.len() > MAX_SOURCE_BYTES {
                return Err(failed(format!(
                    "it printed more than {MAX_SOURCE_BYTES} bytes"
                )));
            }
            String::from_utf8(output.stdout)
                .map_err(|_| failed("it printed no UTF-8 text".into()))?
        }
        Source::Env(name) => std::env::var(name).map_err(|e| failed(e.to_string()))?,
        Source::Keychain(name) => reach
            .secrets
            .get(&keys::config_secret(name))
            .await
            .map_err(|e| failed(e.to_string()))?
            .ok_or_else(|| {
                failed(format!(
                    "there is no such entry; store it with: {}",
                    mcp_authd_ipc::next_step::secret_set_command(name)
                ))
            })?
            .expose()
            .to_string(),
    });
    let value = value.trim();
    if value.is_empty() {
        return Err(failed("it is empty".into()));
    }
    Ok(Secret::new(value))
}
