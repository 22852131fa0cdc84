//! Params and results of every method, and the names of methods and notifications.

use serde::{Deserialize, Serialize};

pub use crate::domain::{
    GrantState, GrantType, HeldToken, RegistrationKind, RemoteRevocation, RevocationOutcome,
    SecretBackend, TokenType,
};

pub const STATUS: &str = "status";
pub const TOKEN_GET: &str = "token.get";
pub const LOGIN: &str = "login";
pub const GRANTS_LIST: &str = "grants.list";
pub const GRANTS_GET: &str = "grants.get";
pub const GRANTS_REVOKE: &str = "grants.revoke";
pub const TOKEN_CHALLENGE: &str = "token.challenge";
/// Signs a DPoP proof (RFC 9449) with a DPoP-bound grant's key, which never leaves the
/// daemon.
pub const TOKEN_DPOP_PROOF: &str = "token.dpop_proof";
/// Self-checks for `mcp-auth doctor`: database integrity, schema, clock skew.
pub const DOCTOR: &str = "doctor";
/// Re-reads the config file (as SIGHUP does).
pub const CONFIG_RELOAD: &str = "config.reload";
/// Stores a secret the config file references as `{ keychain = "name" }` (a private key,
/// an ID token), in the daemon's secret store.
pub const SECRET_SET: &str = "secret.set";
/// Removes such a secret.
pub const SECRET_DELETE: &str = "secret.delete";
/// The extra HTTP headers the config file gives for an MCP server (`mcp-auth proxy` sends them).
pub const SERVER_HEADERS: &str = "server.headers";
/// Notification sent on the connection that called `login`, once the browser URL is known.
pub const LOGIN_PENDING: &str = "login.pending";
/// Hands a `manual` login the authorization response the user pasted.
pub const LOGIN_PASTE: &str = "login.paste";

/// How `login` gets the user's consent (`LoginParams::flow`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFlow {
    /// Authorization code + PKCE through the loopback redirect (the default).
    #[default]
    Browser,
    /// RFC 8628 device authorization: a code the user enters on any device.
    Device,
    /// Authorization code + PKCE; the user pastes back the URL the browser ended on
    /// (`login.paste`). The loopback redirect still listens, whichever comes first.
    Manual,
    /// The caller has no usable browser (a remote session without a display): `device`
    /// when the authorization server offers it, else `browser` without opening one.
    DeviceIfSupported,
}

/// Seconds of validity `token.get` guarantees when the caller does not say.
pub const DEFAULT_MIN_VALID_SECS: u64 = 60;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusResult {
    pub version: String,
    pub protocol_version: u32,
    pub pid: u32,
    pub uptime_secs: u64,
    pub socket: String,
    pub data_dir: String,
    pub config_file: String,
    /// Version of the SQLite schema (number of migrations applied).
    pub database_schema: i64,
    pub secret_store: SecretStoreStatus,
    pub grants: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretStoreStatus {
    /// `keychain` or `file`.
    pub backend: SecretBackend,
    /// Which keychain, or which file.
    pub detail: String,
    /// Set when secrets are not in the OS keychain: a user should see it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Grants whose newest (rotated) refresh token the store has not taken yet (a keychain
    /// waiting for an unlock): it is kept in memory and written again until stored, and
    /// lost if the daemon stops before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refresh_tokens_not_stored: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TokenGetParams {
    /// The MCP server URL (or a grant id).
    pub server: String,
    /// Scopes the caller needs; a grant lacking one answers `authorization_required`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The token handed out stays valid at least this long (default 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_valid_secs: Option<u64>,
    /// The account of the server to use (see [`check_account_name`]); absent: the
    /// default account, the one logged in to without `--account`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

/// Its `Debug` shows `access_token: "***"`, and the token's bytes are zeroed when it is
/// dropped (take it with `std::mem::take` to keep it).
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenGetResult {
    pub access_token: String,
    /// `Bearer`, or `DPoP` for a DPoP-bound token: sent as `Authorization: DPoP <token>`
    /// with a fresh proof from `token.dpop_proof` on every request.
    pub token_type: TokenType,
    /// Unix time, seconds.
    pub expires_at: i64,
    pub expires_in: i64,
    pub scopes: Vec<String>,
    pub grant: String,
}

impl std::fmt::Debug for TokenGetResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenGetResult")
            .field("access_token", &"***")
            .field("token_type", &self.token_type)
            .field("expires_at", &self.expires_at)
            .field("expires_in", &self.expires_in)
            .field("scopes", &self.scopes)
            .field("grant", &self.grant)
            .finish()
    }
}

impl Drop for TokenGetResult {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.access_token);
    }
}

/// A `token.get` result borrowed from where the daemon keeps the token and the grant: it
/// goes on the wire exactly as [`TokenGetResult`] does (a test holds them together), with
/// no copy of the token or the grant's words. The daemon's answer from memory is written
/// from it, under the lock that holds the token.
#[derive(Serialize)]
pub struct TokenGetReply<'a> {
    pub access_token: &'a str,
    pub token_type: &'a TokenType,
    pub expires_at: i64,
    pub expires_in: i64,
    /// The granted scopes as stored, separated by spaces; a JSON array on the wire.
    #[serde(serialize_with = "scope_words")]
    pub scopes: &'a str,
    pub grant: &'a str,
}

fn scope_words<S: serde::Serializer>(scopes: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(scopes.split_ascii_whitespace())
}

/// Params of `token.dpop_proof`: the request a proof is for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DpopProofParams {
    /// The MCP server URL (or a grant id) whose grant signs.
    pub server: String,
    /// The HTTP method of the request (`htm`), e.g. `POST`.
    pub method: String,
    /// The request URL (`htu`; query and fragment are dropped). Must be at the grant's MCP
    /// server origin.
    pub url: String,
    /// The access token the request carries; the proof's `ath` is its hash. Give this or
    /// `ath`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// base64url(SHA-256(access token)), for a caller that would rather not send the
    /// token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ath: Option<String>,
    /// The `DPoP-Nonce` the server sent; omitted, the latest nonce the daemon saw for the
    /// URL's origin is used (if any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// The account whose grant signs (see [`check_account_name`]); absent: the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DpopProofResult {
    /// The proof JWT, for the request's `DPoP` header. Good for one request.
    pub proof: String,
    /// The grant whose key signed.
    pub grant: String,
}

/// Params of `token.challenge`: a client reports the 401 or 403 an MCP server answered,
/// and gets back a token to retry with (or an error saying why there is none). Its `Debug`
/// masks `rejected_token`.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ChallengeParams {
    /// The MCP server URL the request went to.
    pub server: String,
    /// The HTTP status: 401 (token missing, expired or revoked), 403 (insufficient
    /// scope), or 400 when its body says `invalid_token` (some servers' way of saying 401).
    pub status: u16,
    /// The `WWW-Authenticate` header value(s) of the response, verbatim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub www_authenticate: Option<String>,
    /// The start of the response body (a few KiB at most), for servers that explain
    /// themselves only there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// The access token the server refused, if one was sent: a token another caller has
    /// already replaced is not refreshed again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_token: Option<String>,
    /// Run a browser login when one is needed (default false: answer
    /// `authorization_required`). Concurrent callers share one login per server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactive: Option<bool>,
    /// As in `login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_browser: Option<bool>,
    /// As in `login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// As in `token.get`: the account whose grant is renewed (or logged in to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// As in `login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
}

impl std::fmt::Debug for ChallengeParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChallengeParams")
            .field("server", &self.server)
            .field("status", &self.status)
            .field("www_authenticate", &self.www_authenticate)
            .field("body", &self.body)
            .field(
                "rejected_token",
                &self.rejected_token.as_ref().map(|_| "***"),
            )
            .field("interactive", &self.interactive)
            .field("open_browser", &self.open_browser)
            .field("timeout_secs", &self.timeout_secs)
            .field("account", &self.account)
            .field("redirect_uri", &self.redirect_uri)
            .finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerHeadersParams {
    /// The MCP server URL, as given to the proxy.
    pub server: String,
}

/// Header names and values; values may be API keys, so `Debug` shows names only.
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct ServerHeadersResult {
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

impl std::fmt::Debug for ServerHeadersResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHeadersResult")
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginParams {
    pub server: String,
    /// Scopes to request instead of the ones discovery chooses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// Open the user's browser (default true); the URL is always sent in `login.pending`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_browser: Option<bool>,
    /// How long to wait for the browser (default: the daemon's `login_timeout_secs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
    /// How the user consents (default `browser`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<LoginFlow>,
    /// The account to log in as (see [`check_account_name`]): only its grant is created or
    /// replaced. Absent: the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// OpenID Connect `login_hint` for the authorization request (an email or user name
    /// the authorization server may pre-fill). Absent: the hint the account's last login
    /// sent, else the account name when it looks like an email, else none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_hint: Option<String>,
    /// The loopback redirect URI to log in with (`http://127.0.0.1:<port>/<path>`, or
    /// `localhost`, `[::1]`), for authorization servers that accept only a registered one;
    /// default: the server's `redirect_uri` in the config, else any free port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
}

/// Params of the `login.pending` notification.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginPending {
    pub server: String,
    /// The URL to open: the authorization URL, or for a device login its
    /// `verification_uri_complete` (else `verification_uri`).
    pub authorization_url: String,
    pub timeout_secs: u64,
    /// Whether the daemon managed to start a browser.
    pub browser_opened: bool,
    /// The account being logged in to; absent for the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// The flow this login runs (`browser`, `device` or `manual`); absent means `browser`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flow: Option<LoginFlow>,
    /// Device login: the code the user enters at `verification_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_code: Option<String>,
    /// Device login: where the user enters `user_code`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri: Option<String>,
    /// Device login: the same page with the code filled in, when the server offers one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verification_uri_complete: Option<String>,
}

/// Params of `login.paste`. Its `Debug` masks `response` (it carries the code).
#[derive(Clone, Default, Serialize, Deserialize)]
pub struct LoginPasteParams {
    /// The MCP server URL of the `manual` login in progress.
    pub server: String,
    /// What the user pasted: the URL the browser ended on, its query, or only the code.
    pub response: String,
    /// The account of the `manual` login (as in its `login` call); absent: the default one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl std::fmt::Debug for LoginPasteParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginPasteParams")
            .field("server", &self.server)
            .field("response", &"***")
            .field("account", &self.account)
            .finish()
    }
}

/// Result of `login.paste`: the login took the response (its outcome is the `login`
/// call's result).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginPasteResult {
    pub accepted: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GrantRef {
    /// A grant id or an MCP server URL.
    pub grant: String,
    /// With a server URL: the account's grant instead of the default account's. With a
    /// grant id: the grant must be of this account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeParams {
    pub grant: String,
    /// Also revoke at the authorization server (RFC 7009) when it offers it (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<bool>,
    /// As in `grants.get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokeResult {
    pub grant: GrantInfo,
    /// `revoked` (the server took at least one token and refused none; an access token it
    /// does not revoke, `unsupported_token_type`, is no failure), `nothing_to_revoke` (no
    /// token was held), `not_supported` (no revocation endpoint), `skipped`, or `failed: …`
    /// (a token's revocation failed; `tokens` says which).
    pub remote: RemoteRevocation,
    /// What happened to each token at the authorization server, refresh token first (in
    /// the order they were sent); empty when nothing was sent (`skipped`, `not_supported`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenRevocation>,
}

/// One token's RFC 7009 revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevocation {
    /// `refresh_token` or `access_token`.
    pub token: HeldToken,
    /// `revoked`; `not_supported` (the server answered `unsupported_token_type`: it does
    /// not revoke this kind of token, which then stays valid until it expires); `not_held`
    /// (the daemon had no such token, nothing was sent); `failed`.
    pub outcome: RevocationOutcome,
    /// What the server answered, for `not_supported` and `failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantsList {
    pub grants: Vec<GrantInfo>,
}

/// Everything about a grant that is not secret.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantInfo {
    pub id: String,
    /// The MCP server URL the user logged in to.
    pub server: String,
    /// The protected resource (RFC 9728 `resource`).
    pub resource: String,
    pub issuer: String,
    pub client_id: String,
    /// `dynamic` (RFC 7591), `pre-registered` or `metadata-document` (a Client ID
    /// Metadata Document URL); `missing` when the grant's registration is gone.
    pub registration: RegistrationKind,
    pub scopes: Vec<String>,
    /// `active` or `needs_login`.
    pub state: GrantState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needs_login_reason: Option<String>,
    pub has_refresh_token: bool,
    /// Unix seconds; absent when no access token is held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_expires_at: Option<i64>,
    pub created_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_refresh_at: Option<i64>,
    /// Who the grant is for (`email`, else `preferred_username`, else `sub` of the OpenID
    /// Connect id_token of the last login or refresh; not verified, for display only);
    /// absent when the authorization server issued no id_token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Present exactly when the grant holds no refresh token: why, as far as the daemon
    /// can tell, what may fix it, and when a new login will be needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_refresh_token: Option<NoRefreshToken>,
    /// How the grant's tokens are obtained and renewed: `authorization_code` (the browser
    /// login), `client_credentials`, `jwt_bearer` or `enterprise` (see README).
    #[serde(default = "default_grant_type")]
    pub grant_type: GrantType,
    /// The account name the user gave at login (`--account`); absent for the default
    /// account. Grants are kept per (resource, issuer, account name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
}

/// Why a grant has no refresh token, so its user is not surprised by the next login.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoRefreshToken {
    /// Whether the login asked for one (its scopes include `offline_access`).
    pub offline_access_requested: bool,
    /// One sentence: what the daemon asked for and what the server did.
    pub reason: String,
    /// The setting that may get a refresh token from this provider, and the commands to
    /// run after it; absent when nothing on this side can help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// Unix seconds: when the access token in memory expires and a new browser login is
    /// needed (sooner if the daemon restarts: access tokens live in its memory only);
    /// absent when none is held (a login is needed now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login_again_at: Option<i64>,
}

fn default_grant_type() -> GrantType {
    GrantType::AuthorizationCode
}

/// Longest account name, in bytes.
pub const MAX_ACCOUNT_NAME_LEN: usize = 64;

/// An account name (`--account`, `account` in params): 1 to 64 ASCII letters, digits and
/// `.`, `_`, `-`, `@`, `+`, starting with a letter or digit. Narrow on purpose: the name
/// is pasted into suggested commands (`mcp-auth login URL --account NAME`) and shown in
/// tables, so it must need no shell quoting and hold no control character. Emails fit.
pub fn check_account_name(name: &str) -> Result<(), String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_@+".contains(c);
    if name.is_empty() {
        return Err("the account name is empty; omit it for the default account".into());
    }
    if name.len() > MAX_ACCOUNT_NAME_LEN {
        return Err(format!(
            "the account name is longer than {MAX_ACCOUNT_NAME_LEN} characters"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(allowed) {
        return Err(format!(
            "`{}` is not an account name: use letters, digits and . _ - @ +, starting with a letter or digit",
            name.escape_default()
        ));
    }
    Ok(())
}

/// What only the daemon can check, for `mcp-auth doctor`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoctorResult {
    /// `ok`, or what SQLite's `PRAGMA quick_check` found first.
    pub database_integrity: String,
    /// Schema version of `state.db` (migrations applied).
    pub database_schema: i64,
    /// Schema version this daemon was built for.
    pub database_schema_expected: i64,
    /// One entry per authorization server the grants use (at most a few).
    pub clock: Vec<ClockCheck>,
}

/// This machine's clock against an authorization server's `Date` header.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClockCheck {
    pub issuer: String,
    /// The URL asked (the issuer's metadata).
    pub url: String,
    /// Server time minus local time, in seconds: positive when this clock is behind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skew_secs: Option<i64>,
    /// Why no skew could be measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A config file put in force by `config.reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadResult {
    pub config_file: String,
    /// Servers configured under `[servers."…"]`.
    pub servers: u32,
    /// Changes that take effect only at the next start (e.g. `secret_store`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart_needed: Vec<String>,
}

/// `secret.set`: a named secret for the config file to reference.
#[derive(Clone, Serialize, Deserialize)]
pub struct SecretSetParams {
    /// 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
    pub name: String,
    pub value: String,
}

impl std::fmt::Debug for SecretSetParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretSetParams {{ name: {:?}, value: *** }}", self.name)
    }
}

/// `secret.delete`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretRef {
    pub name: String,
}

/// What `secret.set` and `secret.delete` did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SecretResult {
    pub name: String,
    /// `keychain` or `file`, as `status` reports the secret store.
    pub secret_store: SecretBackend,
    /// `secret.delete`: whether there was such a secret. Absent for `secret.set`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub existed: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{Request, RequestId, Response};

    const TOKEN: &str = "at_do-not-print-me";

    #[test]
    fn account_names_need_no_quoting() {
        for good in ["work", "jane@corp.example", "tenant-2", "a.b_c+d", "X"] {
            assert_eq!(check_account_name(good), Ok(()), "{good}");
        }
        let long = "a".repeat(MAX_ACCOUNT_NAME_LEN + 1);
        for bad in ["", "-work", "a b", "a'b", "a;b", "a\nb", "ä", "$(x)", &long] {
            assert!(check_account_name(bad).is_err(), "{bad:?}");
        }
    }

    /// What the daemon sends goes through the typed results and out of `mcp-auth … --json`
    /// unchanged, word for word, and the words are read as the enums they name.
    #[test]
    fn typed_results_pass_json_through_unchanged() {
        let grant = serde_json::json!({
            "id": "g_1", "server": "https://h.example/mcp", "resource": "https://h.example/mcp",
            "issuer": "https://as.example", "client_id": "c", "registration": "pre-registered",
            "scopes": ["a"], "state": "needs_login", "needs_login_reason": "refresh token rejected",
            "has_refresh_token": false, "created_at": 1, "grant_type": "client_credentials",
            "account_name": "work",
        });
        let g: GrantInfo = serde_json::from_value(grant.clone()).unwrap();
        assert_eq!(serde_json::to_value(&g).unwrap(), grant);
        assert_eq!(
            (&g.state, &g.registration, &g.grant_type),
            (
                &GrantState::NeedsLogin,
                &RegistrationKind::PreRegistered,
                &GrantType::ClientCredentials
            )
        );
        let revoked = serde_json::json!({
            "grant": grant,
            "remote": "failed: refresh_token: HTTP 503",
            "tokens": [
                {"token": "refresh_token", "outcome": "failed", "detail": "HTTP 503"},
                {"token": "access_token", "outcome": "not_held"},
            ],
        });
        let r: RevokeResult = serde_json::from_value(revoked.clone()).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap(), revoked);
        assert_eq!(
            r.remote,
            RemoteRevocation::Failed("refresh_token: HTTP 503".into())
        );
        assert_eq!(
            (&r.tokens[1].token, &r.tokens[1].outcome),
            (&HeldToken::AccessToken, &RevocationOutcome::NotHeld)
        );
        let token = serde_json::json!({
            "access_token": "at", "token_type": "DPoP", "expires_at": 2, "expires_in": 1,
            "scopes": [], "grant": "g_1",
        });
        let t: TokenGetResult = serde_json::from_value(token.clone()).unwrap();
        assert_eq!(serde_json::to_value(&t).unwrap(), token);
        assert_eq!(t.token_type, TokenType::DPoP);
        // A daemon from before `grant_type`: a browser login's grant.
        let mut old = g.clone();
        old.grant_type = GrantType::JwtBearer;
        let mut json = serde_json::to_value(&old).unwrap();
        json.as_object_mut().unwrap().remove("grant_type");
        let read: GrantInfo = serde_json::from_value(json).unwrap();
        assert_eq!(read.grant_type, GrantType::AuthorizationCode);
    }

    /// The borrowed reply and the owned result are one wire shape: the daemon writes one,
    /// clients read the other.
    #[test]
    fn a_borrowed_token_reply_is_written_as_the_result_reads() {
        for (words, list) in [
            ("read write", vec!["read", "write"]),
            ("  read\twrite ", vec!["read", "write"]),
            ("", vec![]),
        ] {
            for token_type in [TokenType::Bearer, TokenType::DPoP] {
                let reply = TokenGetReply {
                    access_token: "at\"1",
                    token_type: &token_type,
                    expires_at: 1_700_000_300,
                    expires_in: 300,
                    scopes: words,
                    grant: "g_1",
                };
                let result = TokenGetResult {
                    access_token: "at\"1".into(),
                    token_type: token_type.clone(),
                    expires_at: 1_700_000_300,
                    expires_in: 300,
                    scopes: list.iter().map(|s| s.to_string()).collect(),
                    grant: "g_1".into(),
                };
                assert_eq!(
                    serde_json::to_string(&reply).unwrap(),
                    serde_json::to_string(&result).unwrap()
                );
            }
        }
    }

    #[test]
    fn debug_output_never_shows_an_access_token() {
        let result = TokenGetResult {
            access_token: TOKEN.into(),
            token_type: TokenType::Bearer,
            expires_at: 1,
            expires_in: 1,
            scopes: vec!["read".into()],
            grant: "g_1".into(),
        };
        let challenge = ChallengeParams {
            server: "https://mcp.example/mcp".into(),
            status: 401,
            rejected_token: Some(TOKEN.into()),
            ..Default::default()
        };
        let reply = Response::ok(RequestId::Number(1), serde_json::to_value(&result).unwrap());
        let request = Request::new(
            2,
            TOKEN_CHALLENGE,
            serde_json::to_value(&challenge).unwrap(),
        );
        let paste = LoginPasteParams {
            server: "https://mcp.example/mcp".into(),
            response: format!("http://127.0.0.1:1/callback?code={TOKEN}"),
            account: None,
        };
        let printed = format!("{result:?} {challenge:?} {reply:?} {request:#?} {paste:?}");
        assert!(!printed.contains(TOKEN), "{printed}");
        // The rest is still there to debug with.
        assert!(
            printed.contains("g_1") && printed.contains("mcp.example"),
            "{printed}"
        );
        assert!(printed.matches("***").count() >= 5, "{printed}");
        // Masking is for printing only: the wire form keeps the token.
        assert!(serde_json::to_string(&result).unwrap().contains(TOKEN));
    }
}
