//! The daemon's configuration file (TOML) and where its files live.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mcp_authd_ipc::methods::GrantType;
use mcp_authd_ipc::next_step::RELOAD;
use serde::Deserialize;

pub use crate::oauth::registration::ClientMetadata;
use crate::secret::Secret;

/// Environment variable that moves every file of the daemon (data, config) under one dir.
pub const HOME_ENV: &str = "MCP_AUTHD_HOME";
/// Environment variable naming the config file.
pub const CONFIG_ENV: &str = "MCP_AUTHD_CONFIG";

/// Where the daemon keeps its files.
#[derive(Debug, Clone)]
pub struct Paths {
    pub data_dir: PathBuf,
    pub config_file: PathBuf,
}

impl Paths {
    /// `$MCP_AUTHD_HOME` (data and `config.toml` inside), else the platform's data and
    /// config dirs (`~/.local/share/mcp-authd`, `~/.config/mcp-authd/config.toml` on Linux).
    pub fn resolve(home: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<Paths> {
        let home = home.or_else(|| {
            std::env::var_os(HOME_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let config = config.or_else(|| {
            std::env::var_os(CONFIG_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        });
        let (data_dir, default_config) = match home {
            Some(home) => (home.clone(), home.join("config.toml")),
            None => {
                let dirs = directories::ProjectDirs::from("", "", "mcp-authd").ok_or_else(|| {
                    anyhow::anyhow!("cannot find the home directory; set {HOME_ENV} to a directory for mcp-authd's files")
                })?;
                (
                    dirs.data_dir().to_path_buf(),
                    dirs.config_dir().join("config.toml"),
                )
            }
        };
        Ok(Paths {
            data_dir,
            config_file: config.unwrap_or(default_config),
        })
    }
}

/// Where secrets go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretStoreChoice {
    /// The OS keychain; a 0600 file with a loud warning when no keychain can be reached.
    #[default]
    Auto,
    /// The OS keychain or nothing: the daemon refuses to start without one.
    Keychain,
    /// The 0600 file in the data dir, never the keychain.
    File,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub secret_store: SecretStoreChoice,
    /// How long a browser login may take.
    #[serde(default = "default_login_timeout")]
    pub login_timeout_secs: u64,
    /// Grants used within this many days are refreshed in the background before their
    /// access token expires, so no client waits for a refresh; 0 turns it off.
    #[serde(default = "default_background_refresh_days")]
    pub background_refresh_days: u64,
    /// The https URL where this installation's Client ID Metadata Document is published
    /// (draft-ietf-oauth-client-id-metadata-document). Used as the `client_id` at every
    /// authorization server that advertises `client_id_metadata_document_supported`,
    /// instead of registering dynamically. Unset: never used.
    #[serde(default)]
    pub client_metadata_url: Option<String>,
    /// Ask the user (a desktop dialog, or `mcp-auth approve`) the first time a program
    /// asks for a grant's token, as `ssh-agent -c` does; a server's own setting wins.
    #[serde(default)]
    pub confirm_clients: bool,
    /// How long a program waits for that answer before `confirmation_timeout`.
    #[serde(default = "default_confirm_timeout")]
    pub confirm_timeout_secs: u64,
    /// A PEM file of CA certificates trusted in addition to the OS trust store (a
    /// TLS-inspecting proxy's CA, a company CA). Absolute path; read at start.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Per-server settings, keyed by MCP server URL or by authorization server issuer.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerConfig>,
}

fn default_confirm_timeout() -> u64 {
    60
}

fn default_login_timeout() -> u64 {
    300
}

fn default_background_refresh_days() -> u64 {
    7
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secret_store: SecretStoreChoice::Auto,
            login_timeout_secs: default_login_timeout(),
            background_refresh_days: default_background_refresh_days(),
            client_metadata_url: None,
            confirm_clients: false,
            confirm_timeout_secs: default_confirm_timeout(),
            ca_file: None,
            servers: BTreeMap::new(),
        }
    }
}

/// Settings for one MCP server or authorization server.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// A client registered with the authorization server beforehand.
    pub client_id: Option<String>,
    pub client_secret: Option<Secret>,
    /// `none`, `client_secret_basic` or `client_secret_post`; default: `client_secret_basic`
    /// when a secret is set, else `none`.
    pub token_endpoint_auth_method: Option<String>,
    /// The redirect URI registered for the pre-registered client (a loopback http URL);
    /// default: any free loopback port at `/callback`.
    pub redirect_uri: Option<String>,
    /// Scopes to request instead of the discovered ones.
    pub scopes: Option<Vec<String>>,
    /// `confirm_clients` for this server's grants, instead of the global setting.
    pub confirm_clients: Option<bool>,
    /// The authorization server (issuer) `client_id` and `client_secret` belong to. When
    /// the entry is keyed by an MCP server URL, a `client_secret` needs it: the secret is
    /// sent only to this issuer, never to one the server names later.
    pub issuer: Option<String>,
    /// Let plain http to a host that is not loopback through, for this server and its
    /// authorization server (labs only): every use is logged as a warning.
    #[serde(default)]
    pub allow_insecure_http: bool,
    /// Send `prompt=consent` with a request for `offline_access` to an authorization
    /// server that behaves as an OpenID provider (default true): OpenID Connect Core §11
    /// lets it ignore `offline_access` otherwise, and then it issues no refresh token.
    /// `false` for a provider that shows its consent screen on every login for it.
    pub prompt_consent: Option<bool>,
    /// How the daemon obtains this server's tokens; default: the browser login.
    #[serde(default)]
    pub grant: GrantKind,
    /// The client's private key for `token_endpoint_auth_method = "private_key_jwt"`
    /// (RFC 7523 §2.2): `{ file = "key.pem" }` or `{ keychain = "name" }` (PKCS#8, SEC1 or
    /// PKCS#1 PEM).
    pub private_key: Option<Source>,
    /// `ES256` or `RS256`; default: what the key is (P-256 or RSA).
    pub signing_algorithm: Option<String>,
    /// `grant = "jwt_bearer"`: where each grant reads its assertion (a workload identity
    /// token), fresh every time: `{ file = … }`, `{ command = [...] }` or `{ env = … }`.
    pub assertion: Option<Source>,
    /// `grant = "enterprise"`: the enterprise identity provider that turns the user's ID
    /// token into an ID-JAG for this server (SEP-990).
    pub enterprise: Option<EnterpriseConfig>,
    /// DPoP-bound tokens (RFC 9449): `true` always sends proofs, `false` never does; unset,
    /// a login uses DPoP when the authorization server lists ES256 in
    /// `dpop_signing_alg_values_supported`. Read at login; a grant keeps what it got.
    pub dpop: Option<bool>,
    /// Extra HTTP headers `mcp-auth proxy` sends to this MCP server with every request
    /// (`headers = { "X-Team" = "a" }`); values are literal. `Authorization` is the
    /// daemon's and cannot be set.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// What dynamic client registration says about the client instead of mcp-authd's
    /// defaults (`client_name`, `client_uri`, `logo_uri`, …).
    pub client_metadata: Option<ClientMetadata>,
    /// Identity-provider quirks; each is off by default.
    #[serde(flatten)]
    pub quirks: Quirks,
}

/// How a server's tokens are obtained and renewed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantKind {
    /// The browser login: authorization code with PKCE, then refresh tokens.
    #[default]
    AuthorizationCode,
    /// OAuth client credentials (SEP-1046): the client is the principal; no browser.
    ClientCredentials,
    /// RFC 7523 JWT-bearer grant with an assertion from outside, such as a workload
    /// identity token (SEP-1933).
    JwtBearer,
    /// Enterprise-managed authorization (SEP-990): an RFC 8693 token exchange at the
    /// enterprise IdP for an ID-JAG, then the JWT-bearer grant with it.
    Enterprise,
}

impl GrantKind {
    /// The name stored with a grant and shown by `mcp-auth list`.
    pub fn as_str(self) -> &'static str {
        self.grant_type()
            .known_str()
            .expect("every grant kind is a known grant type")
    }

    /// The grant type a grant of this kind has on the wire and in its row.
    pub fn grant_type(self) -> GrantType {
        match self {
            GrantKind::AuthorizationCode => GrantType::AuthorizationCode,
            GrantKind::ClientCredentials => GrantType::ClientCredentials,
            GrantKind::JwtBearer => GrantType::JwtBearer,
            GrantKind::Enterprise => GrantType::Enterprise,
        }
    }

    /// The kind a stored grant runs as; `None` for a grant type this daemon does not know.
    pub fn parse(t: &GrantType) -> Option<GrantKind> {
        [
            GrantKind::AuthorizationCode,
            GrantKind::ClientCredentials,
            GrantKind::JwtBearer,
            GrantKind::Enterprise,
        ]
        .into_iter()
        .find(|k| k.grant_type() == *t)
    }
}

/// Where a secret the user provides is read from, each time it is needed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Source {
    /// A file, such as a projected service-account token that is rotated in place.
    File(PathBuf),
    /// A program and its arguments (no shell); its standard output, trimmed.
    Command(Vec<String>),
    /// An environment variable of the daemon.
    Env(String),
    /// An entry of mcp-authd's secret store (`mcp-auth secret set <name>`).
    Keychain(String),
}

impl Source {
    /// What the source is, for messages (never its value).
    pub fn describe(&self) -> String {
        match self {
            Source::File(p) => format!("the file {}", p.display()),
            Source::Command(argv) => format!("the command `{}`", argv.join(" ")),
            Source::Env(name) => format!("the environment variable {name}"),
            Source::Keychain(name) => format!("the secret store entry `{name}`"),
        }
    }
}

/// The enterprise identity provider of a `grant = "enterprise"` server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnterpriseConfig {
    /// The IdP's token endpoint, where the RFC 8693 token exchange happens.
    pub idp_token_endpoint: String,
    /// The client mcp-authd is at the IdP; sent as `client_id` (or HTTP Basic with a secret).
    pub idp_client_id: Option<String>,
    pub idp_client_secret: Option<Secret>,
    /// The user's ID token at the IdP (the subject token of the exchange), from a source;
    /// unset: from the daemon's own OpenID login at `idp_issuer`.
    pub id_token: Option<Source>,
    /// The IdP's issuer, for the daemon's own OpenID login there (authorization code +
    /// PKCE in the browser, scope `openid`), shared by every server naming that issuer.
    pub idp_issuer: Option<String>,
}

/// Why a configured header cannot be sent: the name is not an HTTP token, the value holds
/// a line break or control character, or the name is one the daemon or the transport owns.
pub fn header_problem(name: &str, value: &str) -> Option<String> {
    use reqwest::header::{HeaderName, HeaderValue};
    let Ok(parsed) = HeaderName::from_bytes(name.as_bytes()) else {
        return Some(format!("`{name}` is not a valid HTTP header name"));
    };
    if parsed == reqwest::header::AUTHORIZATION {
        return Some(format!(
            "`{name}` cannot be set: mcp-authd sends the Authorization header itself"
        ));
    }
    if HeaderValue::from_str(value).is_err() {
        return Some(format!(
            "the value of `{name}` holds a line break or a control character"
        ));
    }
    None
}

/// Ways real identity providers depart from the MCP authorization spec, per server.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Quirks {
    /// Send the granted `scope` on refresh requests. Microsoft Entra ID needs it: without
    /// a scope it answers with a token for another resource.
    #[serde(default)]
    pub refresh_scope: bool,
    /// Leave out the RFC 8707 `resource` parameter. Microsoft Entra ID (v2 endpoints)
    /// rejects it (AADSTS9010010) when scopes name the resource already.
    #[serde(default)]
    pub omit_resource: bool,
    /// Extra parameters for the authorization request. Google only issues a refresh token
    /// with `access_type = "offline"` (and again only with `prompt = "consent"`).
    #[serde(default)]
    pub authorization_params: BTreeMap<String, String>,
    /// Read a 400 or 403 whose body or challenge says `invalid_token` as a 401 (renew the
    /// token instead of failing). For servers that answer expired tokens that way, such
    /// as some API gateways in front of MCP servers.
    #[serde(default)]
    pub invalid_token_as_401: bool,
    /// Take PKCE S256 as supported although the authorization server's metadata lists no
    /// `code_challenge_methods_supported` (MCP has clients refuse such servers). Microsoft
    /// Entra ID supports S256 but leaves the field out. Set it under the issuer's key.
    #[serde(default)]
    pub assume_pkce_s256: bool,
}

/// Authorization request parameters the daemon sets itself; the config cannot replace them.
const RESERVED_AUTHORIZATION_PARAMS: &[&str] = &[
    "response_type",
    "client_id",
    "redirect_uri",
    "state",
    "code_challenge",
    "code_challenge_method",
    "resource",
    "scope",
];

impl ServerConfig {
    /// See [`ServerConfig::prompt_consent`]; on unless turned off.
    pub fn prompt_consent(&self) -> bool {
        self.prompt_consent.unwrap_or(true)
    }
}

impl Config {
    /// Reads the file; a missing file is the default config.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(e) => anyhow::bail!("cannot read the config file {}: {e}", path.display()),
        };
        let config: Config = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?;
        config
            .check()
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?;
        Ok(config)
    }

    /// What TOML types cannot say.
    fn check(&self) -> Result<(), String> {
        if let Some(path) = &self.ca_file
            && !path.is_absolute()
        {
            return Err(format!(
                "ca_file `{}` is not an absolute path; write the full path of the PEM file",
                path.display()
            ));
        }
        let mut seen: BTreeMap<String, &str> = BTreeMap::new();
        for server in self.servers.keys() {
            let Some(form) = key_form(server) else {
                return Err(format!(
                    "[servers.\"{server}\"]: the key is not an http(s) URL; write the MCP server's URL or its authorization server's issuer"
                ));
            };
            if let Some(first) = seen.insert(form, server) {
                return Err(format!(
                    "[servers.\"{first}\"] and [servers.\"{server}\"] name the same server; merge them"
                ));
            }
        }
        for (server, cfg) in &self.servers {
            if let Some(name) = cfg
                .quirks
                .authorization_params
                .keys()
                .find(|k| RESERVED_AUTHORIZATION_PARAMS.contains(&k.as_str()))
            {
                return Err(format!(
                    "[servers.\"{server}\"] authorization_params may not set `{name}`: mcp-authd sets it itself (use `scopes` for scopes)"
                ));
            }
        }
        for (server, cfg) in &self.servers {
            cfg.check_grant()
                .map_err(|e| format!("[servers.\"{server}\"] {e}"))?;
            for (name, value) in &cfg.headers {
                if let Some(why) = header_problem(name, value) {
                    return Err(format!("[servers.\"{server}\"] headers: {why}"));
                }
            }
        }
        if self.confirm_timeout_secs == 0 || self.confirm_timeout_secs > 3600 {
            return Err(format!(
                "confirm_timeout_secs = {} is out of range: give 1 to 3600 seconds",
                self.confirm_timeout_secs
            ));
        }
        for (server, cfg) in &self.servers {
            for scope in cfg.scopes.iter().flatten() {
                mcp_authd_ipc::text::check_scope(scope)
                    .map_err(|e| format!("[servers.\"{server}\"] scopes: {e}"))?;
            }
        }
        if let Some(raw) = &self.client_metadata_url {
            let url = url::Url::parse(raw)
                .map_err(|e| format!("client_metadata_url `{raw}` is not a URL: {e}"))?;
            if url.scheme() != "https" || url.path() == "/" || url.fragment().is_some() {
                return Err(format!(
                    "client_metadata_url `{raw}` must be an https URL with a path and no fragment"
                ));
            }
        }
        Ok(())
    }

    /// Whether a grant's tokens go to a program only once the user allowed it.
    pub fn confirm_clients_for(&self, server_url: &str, issuer: &str) -> bool {
        self.server(server_url, Some(issuer))
            .and_then(|c| c.confirm_clients)
            .unwrap_or(self.confirm_clients)
    }

    /// Whether any grant may need a confirmation: when not, the token hot path skips the
    /// check entirely.
    pub fn confirms_any_client(&self) -> bool {
        self.confirm_clients
            || self
                .servers
                .values()
                .any(|c| c.confirm_clients == Some(true))
    }

    /// The settings for a server: by its URL first, else by its authorization server. Keys
    /// and URLs are compared as the daemon stores server URLs (see [`key_form`]), so
    /// `https://Example.COM:443/mcp/` in the file finds `https://example.com/mcp`.
    pub fn server(&self, server_url: &str, issuer: Option<&str>) -> Option<&ServerConfig> {
        self.server_with_key(server_url, issuer).map(|(_, v)| v)
    }

    fn server_with_key(
        &self,
        server_url: &str,
        issuer: Option<&str>,
    ) -> Option<(&str, &ServerConfig)> {
        let find = |key: &str| {
            self.servers
                .iter()
                .find(|(k, _)| same_url(k, key))
                .map(|(k, v)| (k.as_str(), v))
        };
        find(server_url).or_else(|| issuer.and_then(find))
    }

    /// Whether plain http to remote hosts is allowed for this MCP server and its
    /// authorization server (labs only): set under the server's own URL.
    pub fn allow_insecure_http(&self, server_url: &str) -> bool {
        self.server(server_url, None)
            .is_some_and(|c| c.allow_insecure_http)
    }

    /// The pre-registered client configured for `server_url` at `issuer`, if any. A client
    /// is bound to its authorization server: the key of its entry when that is the issuer,
    /// else the entry's `issuer`. A client configured for another issuer is an error (its
    /// id and secret are never sent elsewhere); so is a `client_secret` under a server URL
    /// with no `issuer`, since nothing would say where the secret may go.
    pub fn client(&self, server_url: &str, issuer: &str) -> Result<Option<&ServerConfig>, String> {
        let Some((key, cfg)) = self.server_with_key(server_url, Some(issuer)) else {
            return Ok(None);
        };
        if cfg.client_id.is_none() {
            return Ok(None);
        }
        let bound_to = match &cfg.issuer {
            Some(bound) => bound.as_str(),
            None if same_url(key, issuer) => issuer,
            None if cfg.client_secret.is_none() => return Ok(Some(cfg)),
            None => {
                return Err(format!(
                    "[servers.\"{key}\"] has a client_secret but does not say which authorization server it belongs to; if it was registered at {issuer}, add issuer = \"{issuer}\" there, then run: {RELOAD}"
                ));
            }
        };
        if same_url(bound_to, issuer) {
            Ok(Some(cfg))
        } else {
            Err(format!(
                "the client configured under [servers.\"{key}\"] belongs to {bound_to}, but {server_url} now uses the authorization server {issuer}; its client id and secret are not sent there. If {issuer} is right, register a client there and configure it, then run: {RELOAD}"
            ))
        }
    }
}

/// A server URL or issuer as config keys are matched: normalized as server URLs are
/// (`normalize_server_url`: scheme and host lowercased, default port and fragment
/// dropped), without a trailing slash. `None` when it is not an http(s) URL.
fn key_form(url: &str) -> Option<String> {
    crate::oauth::discovery::normalize_server_url(url)
        .ok()
        .map(|u| u.trim_end_matches('/').to_string())
}

/// Whether two config keys or URLs name the same server (see [`key_form`]).
fn same_url(a: &str, b: &str) -> bool {
    match (key_form(a), key_form(b)) {
        (Some(a), Some(b)) => a == b,
        _ => a.trim_end_matches('/') == b.trim_end_matches('/'),
    }
}

impl ServerConfig {
    /// That a grant kind has what it needs, and nothing it would ignore.
    fn check_grant(&self) -> Result<(), String> {
        if let Some(Source::Command(argv)) = &self.assertion
            && argv.is_empty()
        {
            return Err("assertion = { command = [] } names no program".into());
        }
        if matches!(
            self.private_key,
            Some(Source::Command(_)) | Some(Source::Env(_))
        ) {
            return Err("private_key must be { file = \"…\" } or { keychain = \"…\" }".into());
        }
        if let Some(alg) = &self.signing_algorithm
            && !["ES256", "RS256"].contains(&alg.as_str())
        {
            return Err(format!(
                "signing_algorithm `{alg}` is not supported (use ES256 or RS256)"
            ));
        }
        let needs = |what: &str| Err(format!("grant = \"{}\" needs {what}", self.grant.as_str()));
        match self.grant {
            GrantKind::AuthorizationCode
                if self.assertion.is_some() || self.enterprise.is_some() =>
            {
                return Err(
                    "assertion and enterprise need grant = \"jwt_bearer\" or \"enterprise\"".into(),
                );
            }
            GrantKind::ClientCredentials if self.client_id.is_none() => return needs("client_id"),
            GrantKind::ClientCredentials
                if self.client_secret.is_none() && self.private_key.is_none() =>
            {
                return needs("client_secret or private_key");
            }
            GrantKind::JwtBearer if self.assertion.is_none() => return needs("assertion"),
            GrantKind::Enterprise if self.enterprise.is_none() || self.client_id.is_none() => {
                return needs("client_id and an [enterprise] table");
            }
            GrantKind::Enterprise => {
                let e = self.enterprise.as_ref().expect("checked above");
                if e.id_token.is_none() && (e.idp_issuer.is_none() || e.idp_client_id.is_none()) {
                    return needs(
                        "in [enterprise] either id_token = { … } or idp_issuer and idp_client_id (for an OpenID login at the IdP)",
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The client authentication method at the token endpoint: the configured one, else
    /// what the configured credentials imply.
    pub fn auth_method(&self) -> &str {
        match &self.token_endpoint_auth_method {
            Some(m) => m,
            None if self.private_key.is_some() => "private_key_jwt",
            None if self.client_secret.is_some() => "client_secret_basic",
            None => "none",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The config's words for `grant` are the protocol's grant types (one spelling for
    /// the file, the wire and the database), and each kind maps to its own.
    #[test]
    fn grant_kinds_are_the_protocols_grant_types() {
        for t in GrantType::KNOWN {
            let kind: GrantKind = serde_json::from_value(serde_json::json!(t.as_str())).unwrap();
            assert_eq!(&kind.grant_type(), t);
            assert_eq!(kind.as_str(), t.as_str());
            assert_eq!(GrantKind::parse(t), Some(kind));
        }
        assert_eq!(GrantKind::parse(&GrantType::from("device_code")), None);
    }

    #[test]
    fn parses_a_full_file_and_finds_servers_by_url_or_issuer() {
        let c: Config = toml::from_str(
            r#"
            secret_store = "keychain"
            login_timeout_secs = 60
            [servers."https://mcp.example.com/mcp"]
            client_id = "abc"
            client_secret = "s3cret"
            token_endpoint_auth_method = "client_secret_post"
            [servers."https://login.example.com/"]
            scopes = ["a", "b"]
            "#,
        )
        .unwrap();
        assert_eq!(c.secret_store, SecretStoreChoice::Keychain);
        assert_eq!(
            c.server("https://mcp.example.com/mcp/", None)
                .unwrap()
                .client_id
                .as_deref(),
            Some("abc")
        );
        let by_issuer = c
            .server("https://other/mcp", Some("https://login.example.com"))
            .unwrap();
        assert_eq!(
            by_issuer.scopes.as_deref(),
            Some(&["a".to_string(), "b".to_string()][..])
        );
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn headers_and_client_metadata_are_checked() {
        let load = |text: &str| -> Result<Config, String> {
            let c: Config = toml::from_str(text).map_err(|e| e.to_string())?;
            c.check().map(|()| c)
        };
        let c = load(
            r#"
            [servers."https://mcp.example.com/mcp"]
            headers = { "X-Team" = "a" }
            client_metadata = { client_name = "n", client_uri = "https://n.example" }
            "#,
        )
        .unwrap();
        let s = c.server("https://mcp.example.com/mcp", None).unwrap();
        assert_eq!(s.headers["X-Team"], "a");
        assert_eq!(
            s.client_metadata.as_ref().unwrap().client_name.as_deref(),
            Some("n")
        );
        for (bad, says) in [
            (
                r#"headers = { "authorization" = "Bearer k3y" }"#,
                "Authorization header itself",
            ),
            (
                r#"headers = { "X Bad" = "v" }"#,
                "not a valid HTTP header name",
            ),
            (r#"headers = { "X-Ok" = "line\nbreak k3y" }"#, "line break"),
        ] {
            let e = load(&format!("[servers.\"https://m.example/mcp\"]\n{bad}\n")).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("k3y"), "values are not echoed: {e}");
        }
        let e = load(
            "[servers.\"https://m.example/mcp\"]\nclient_metadata = { redirect_uris = [\"x\"] }\n",
        )
        .unwrap_err();
        assert!(e.contains("redirect_uris"), "{e}");
    }

    #[test]
    fn keys_match_as_urls_are_normalized() {
        let c: Config = toml::from_str(
            r#"
            [servers."https://Example.COM:443/mcp/"]
            client_id = "by-url"
            [servers."HTTPS://LOGIN.example.com:443"]
            client_id = "by-issuer"
            "#,
        )
        .unwrap();
        c.check().unwrap();
        for url in [
            "https://example.com/mcp/",
            "https://example.com/mcp",
            "https://EXAMPLE.com/mcp#frag",
        ] {
            let found = c.server(url, None).and_then(|s| s.client_id.as_deref());
            assert_eq!(found, Some("by-url"), "{url}");
        }
        assert_eq!(
            c.server(
                "https://example.com:8443/mcp",
                Some("https://login.example.com/")
            )
            .and_then(|s| s.client_id.as_deref()),
            Some("by-issuer"),
            "another port is another server"
        );
        let twice: Config = toml::from_str(
            "[servers.\"https://a.example/mcp\"]\n[servers.\"https://A.example:443/mcp/\"]\n",
        )
        .unwrap();
        let e = twice.check().unwrap_err();
        assert!(e.contains("name the same server"), "{e}");
        let not_a_url: Config = toml::from_str("[servers.\"mcp.example.com\"]\n").unwrap();
        let e = not_a_url.check().unwrap_err();
        assert!(e.contains("is not an http(s) URL"), "{e}");
    }

    #[test]
    fn quirks_are_per_server_and_reserved_params_refused() {
        let c: Config = toml::from_str(
            r#"
            [servers."https://login.microsoftonline.com/tenant/v2.0"]
            refresh_scope = true
            omit_resource = true
            [servers."https://accounts.google.com"]
            authorization_params = { access_type = "offline", prompt = "consent" }
            "#,
        )
        .unwrap();
        c.check().unwrap();
        let entra = c
            .server(
                "https://x/mcp",
                Some("https://login.microsoftonline.com/tenant/v2.0"),
            )
            .unwrap();
        assert!(entra.quirks.refresh_scope && entra.quirks.omit_resource);
        let google = c.server("https://accounts.google.com", None).unwrap();
        assert_eq!(google.quirks.authorization_params["access_type"], "offline");
        assert!(!google.quirks.invalid_token_as_401);
        assert!(google.prompt_consent(), "on unless turned off");
        let off: Config =
            toml::from_str("[servers.\"https://a\"]\nprompt_consent = false\n").unwrap();
        assert!(!off.server("https://a", None).unwrap().prompt_consent());

        let bad: Config = toml::from_str(
            "[servers.\"https://a\"]\nauthorization_params = { client_id = \"x\" }\n",
        )
        .unwrap();
        assert!(bad.check().unwrap_err().contains("client_id"), "named");
        let typo = toml::from_str::<Config>("[servers.\"https://a\"]\nrefresh_scopes = true\n");
        assert!(typo.is_err(), "a misspelt quirk is an error, not ignored");
    }

    #[test]
    fn ca_file_must_be_an_absolute_path() {
        let check = |v: &str| {
            toml::from_str::<Config>(&format!("ca_file = \"{v}\"\n"))
                .unwrap()
                .check()
        };
        assert!(check("/etc/ssl/corp.pem").is_ok());
        let err = check("corp.pem").unwrap_err();
        assert!(err.contains("ca_file") && err.contains("absolute"), "{err}");
    }

    #[test]
    fn client_metadata_url_must_be_https_with_a_path() {
        let parse = |v: &str| {
            toml::from_str::<Config>(&format!("client_metadata_url = \"{v}\"\n"))
                .unwrap()
                .check()
        };
        assert!(parse("https://app.example/client.json").is_ok());
        assert!(parse("https://app.example/").is_err());
        assert!(parse("http://app.example/client.json").is_err());
        assert!(parse("not a url").is_err());
    }

    /// A configured client (and its secret) is used only at its own authorization server.
    #[test]
    fn configured_clients_are_bound_to_their_issuer() {
        let c: Config = toml::from_str(
            r#"
            [servers."https://a.example/mcp"]
            client_id = "a"
            client_secret = "sa"
            issuer = "https://as-a.example"
            [servers."https://as-b.example"]
            client_id = "b"
            client_secret = "sb"
            [servers."https://c.example/mcp"]
            client_id = "c"
            client_secret = "sc"
            [servers."https://d.example/mcp"]
            client_id = "public-d"
            "#,
        )
        .unwrap();
        let id = |r: Result<Option<&ServerConfig>, String>| {
            r.map(|c| c.and_then(|c| c.client_id.clone()))
        };
        assert_eq!(
            id(c.client("https://a.example/mcp", "https://as-a.example/")),
            Ok(Some("a".into()))
        );
        let e = id(c.client("https://a.example/mcp", "https://evil.example")).unwrap_err();
        assert!(
            e.contains("https://as-a.example") && e.contains("https://evil.example"),
            "{e}"
        );
        assert!(!e.contains("sa"), "{e}");
        assert_eq!(
            id(c.client("https://x.example/mcp", "https://as-b.example")),
            Ok(Some("b".into()))
        );
        assert_eq!(
            id(c.client("https://x.example/mcp", "https://other.example")),
            Ok(None)
        );
        let e = id(c.client("https://c.example/mcp", "https://as-c.example")).unwrap_err();
        assert!(e.contains("issuer = \"https://as-c.example\""), "{e}");
        assert_eq!(
            id(c.client("https://d.example/mcp", "https://any.example")),
            Ok(Some("public-d".into()))
        );
    }

    #[test]
    fn confirm_clients_is_global_with_per_server_overrides() {
        let c: Config = toml::from_str(
            r#"
            confirm_clients = true
            [servers."https://quiet.example/mcp"]
            confirm_clients = false
            [servers."https://login.example.com"]
            scopes = ["a"]
            "#,
        )
        .unwrap();
        c.check().unwrap();
        assert_eq!(c.confirm_timeout_secs, 60);
        assert!(!c.confirm_clients_for("https://quiet.example/mcp", "https://as"));
        assert!(c.confirm_clients_for("https://x/mcp", "https://login.example.com"));
        assert!(c.confirms_any_client());

        let one: Config =
            toml::from_str("[servers.\"https://a/mcp\"]\nconfirm_clients = true\n").unwrap();
        assert!(one.confirm_clients_for("https://a/mcp/", "https://as"));
        assert!(!one.confirm_clients_for("https://b/mcp", "https://as"));
        assert!(one.confirms_any_client());
        assert!(!Config::default().confirms_any_client());

        let zero: Config = toml::from_str("confirm_timeout_secs = 0\n").unwrap();
        assert!(zero.check().unwrap_err().contains("confirm_timeout_secs"));
    }

    #[test]
    fn grants_without_a_browser_need_their_inputs() {
        let check = |body: &str| {
            toml::from_str::<Config>(&format!("[servers.\"https://a/mcp\"]\n{body}"))
                .map_err(|e| e.to_string())
                .and_then(|c| c.check().map(|()| c))
        };
        let ok = check(
            "grant = \"client_credentials\"\nclient_id = \"c\"\nprivate_key = { keychain = \"k\" }\n",
        )
        .unwrap();
        let cfg = ok.server("https://a/mcp", None).unwrap();
        assert_eq!(cfg.grant, GrantKind::ClientCredentials);
        assert_eq!(cfg.auth_method(), "private_key_jwt", "implied by the key");
        assert_eq!(cfg.private_key, Some(Source::Keychain("k".into())));
        for (body, says) in [
            (
                "grant = \"client_credentials\"\nclient_secret = \"s\"\n",
                "client_id",
            ),
            (
                "grant = \"client_credentials\"\nclient_id = \"c\"\n",
                "client_secret or private_key",
            ),
            ("grant = \"jwt_bearer\"\n", "assertion"),
            (
                "grant = \"jwt_bearer\"\nassertion = { command = [] }\n",
                "no program",
            ),
            (
                "client_id = \"c\"\nprivate_key = { env = \"K\" }\n",
                "private_key must be",
            ),
            (
                "client_id = \"c\"\nsigning_algorithm = \"HS256\"\n",
                "HS256",
            ),
            ("assertion = { file = \"/t\" }\n", "need grant"),
            (
                "grant = \"enterprise\"\nclient_id = \"c\"\n[servers.\"https://a/mcp\".enterprise]\nidp_token_endpoint = \"https://idp/token\"\n",
                "idp_issuer",
            ),
            ("grant = \"password\"\n", "unknown variant"),
            (
                "grant = \"jwt_bearer\"\nassertion = { file = \"/t\", env = \"X\" }\n",
                "",
            ),
        ] {
            let e = check(body)
                .err()
                .unwrap_or_else(|| panic!("accepted: {body}"));
            assert!(e.contains(says), "{body}: {e}");
        }
        let wif = check("grant = \"jwt_bearer\"\nassertion = { env = \"TOKEN\" }\n").unwrap();
        assert_eq!(
            wif.server("https://a/mcp", None).unwrap().auth_method(),
            "none"
        );
    }

    #[test]
    fn rejects_unknown_keys_with_the_line() {
        let e = toml::from_str::<Config>("secret_stor = \"file\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
