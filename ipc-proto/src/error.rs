//! Error objects: a stable numeric code plus a machine-readable `data.kind`.

use serde::{Deserialize, Serialize};

/// What went wrong, in a form a program can branch on. Serialized as `data.kind`.
/// PROTOCOL.md lets a daemon add kinds without a new protocol version: a kind this build
/// does not know decodes as [`ErrorKind::Unknown`] instead of failing the whole reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line was not valid JSON.
    ParseError,
    /// Valid JSON but not a JSON-RPC 2.0 request, or a line over the size cap.
    InvalidRequest,
    /// No such method.
    MethodNotFound,
    /// The params did not fit the method.
    InvalidParams,
    /// A bug or an unexpected local failure in the daemon.
    Internal,
    /// No usable grant: the user must log in (`data.command` says how).
    AuthorizationRequired,
    /// The browser login was not completed in time.
    LoginTimeout,
    /// The user or the authorization server refused the login.
    LoginFailed,
    /// The MCP server or its authorization server answered wrongly or could not be reached.
    ServerError,
    /// Discovery found metadata that must not be trusted (mismatched resource or issuer, no PKCE).
    DiscoveryFailed,
    /// The authorization server refused to register a client.
    RegistrationFailed,
    /// No grant matches the given server URL or grant id.
    NotFound,
    /// The secret store (OS keychain or fallback file) could not be used.
    SecretStore,
    /// The server keeps refusing for lack of scope after step-up authorizations: the
    /// daemon stopped asking (retry cap) instead of looping through logins.
    InsufficientScope,
    /// A limit of the socket was hit (connections open, requests in flight on one
    /// connection): wait for replies or close idle connections, then retry.
    LimitExceeded,
    /// The peer is not the daemon's user; the connection is closed.
    PermissionDenied,
    /// The config file cannot be used (`message` names the line and the reason); the
    /// daemon keeps the config it had.
    ConfigInvalid,
    /// `confirm_clients`: nobody answered whether this program may have the grant's
    /// tokens in time (the dialog, or `mcp-auth approve`).
    ConfirmationTimeout,
    /// `confirm_clients`: the user denied this program the grant's tokens.
    ConfirmationDenied,
    /// A kind added after this build (its `code` and `message` still tell what happened).
    /// Never sent by this daemon.
    #[serde(other)]
    Unknown,
}

impl ErrorKind {
    /// The JSON-RPC error code for this kind: the standard ones for protocol errors and a
    /// stable range (-32001…) for the daemon's own.
    pub fn code(self) -> i64 {
        match self {
            ErrorKind::ParseError => -32700,
            ErrorKind::InvalidRequest => -32600,
            ErrorKind::MethodNotFound => -32601,
            ErrorKind::InvalidParams => -32602,
            ErrorKind::Internal => -32603,
            ErrorKind::AuthorizationRequired => -32001,
            ErrorKind::LoginTimeout => -32002,
            ErrorKind::LoginFailed => -32003,
            ErrorKind::ServerError => -32004,
            ErrorKind::DiscoveryFailed => -32005,
            ErrorKind::RegistrationFailed => -32006,
            ErrorKind::NotFound => -32007,
            ErrorKind::SecretStore => -32008,
            ErrorKind::InsufficientScope => -32009,
            ErrorKind::LimitExceeded => -32010,
            ErrorKind::PermissionDenied => -32011,
            ErrorKind::ConfigInvalid => -32012,
            ErrorKind::ConfirmationTimeout => -32020,
            ErrorKind::ConfirmationDenied => -32021,
            // JSON-RPC's first implementation-defined server error: no kind of ours.
            ErrorKind::Unknown => -32000,
        }
    }

    /// The kind that `code` stands for, if this build knows one (JSON-RPC's standard
    /// codes, and the daemon's own range).
    pub fn from_code(code: i64) -> Option<ErrorKind> {
        ErrorKind::ALL.iter().copied().find(|k| k.code() == code)
    }

    /// Every kind this build knows (not [`ErrorKind::Unknown`]).
    pub const ALL: &[ErrorKind] = &[
        ErrorKind::ParseError,
        ErrorKind::InvalidRequest,
        ErrorKind::MethodNotFound,
        ErrorKind::InvalidParams,
        ErrorKind::Internal,
        ErrorKind::AuthorizationRequired,
        ErrorKind::LoginTimeout,
        ErrorKind::LoginFailed,
        ErrorKind::ServerError,
        ErrorKind::DiscoveryFailed,
        ErrorKind::RegistrationFailed,
        ErrorKind::NotFound,
        ErrorKind::SecretStore,
        ErrorKind::InsufficientScope,
        ErrorKind::LimitExceeded,
        ErrorKind::PermissionDenied,
        ErrorKind::ConfigInvalid,
        ErrorKind::ConfirmationTimeout,
        ErrorKind::ConfirmationDenied,
    ];

    /// The snake_case name used in `data.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ParseError => "parse_error",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::MethodNotFound => "method_not_found",
            ErrorKind::InvalidParams => "invalid_params",
            ErrorKind::Internal => "internal",
            ErrorKind::AuthorizationRequired => "authorization_required",
            ErrorKind::LoginTimeout => "login_timeout",
            ErrorKind::LoginFailed => "login_failed",
            ErrorKind::ServerError => "server_error",
            ErrorKind::DiscoveryFailed => "discovery_failed",
            ErrorKind::RegistrationFailed => "registration_failed",
            ErrorKind::NotFound => "not_found",
            ErrorKind::SecretStore => "secret_store",
            ErrorKind::InsufficientScope => "insufficient_scope",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::ConfigInvalid => "config_invalid",
            ErrorKind::ConfirmationTimeout => "confirmation_timeout",
            ErrorKind::ConfirmationDenied => "confirmation_denied",
            ErrorKind::Unknown => "unknown",
        }
    }
}

/// A JSON-RPC error object as sent on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<ErrorData>,
}

/// The `data` member of every error the daemon sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorData {
    pub kind: ErrorKind,
    /// For `authorization_required`: the exact CLI command that fixes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The MCP server URL the error is about, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// The account (`--account`) the error is about; absent for the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

impl RpcError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        RpcError {
            code: kind.code(),
            message: message.into(),
            data: Some(ErrorData {
                kind,
                command: None,
                server: None,
                account: None,
            }),
        }
    }

    /// An `authorization_required` error naming the login command for `server`, each
    /// argument quoted for a POSIX shell.
    pub fn authorization_required(server: &str, scopes: &[String], why: &str) -> Self {
        let command = crate::next_step::login_command(server, scopes);
        RpcError {
            code: ErrorKind::AuthorizationRequired.code(),
            message: format!("{why}; run: {command}"),
            data: Some(ErrorData {
                kind: ErrorKind::AuthorizationRequired,
                command: Some(command),
                server: Some(server.to_string()),
                account: None,
            }),
        }
    }

    pub fn with_server(mut self, server: &str) -> Self {
        if let Some(data) = self.data.as_mut() {
            data.server = Some(server.to_string());
        }
        self
    }

    /// The error as it concerns `account` (none: the default account, unchanged): the
    /// `mcp-auth login <server>` commands in the message and in `data.command` gain
    /// `--account <account>`, and `data.account` names it.
    pub fn for_account(mut self, account: Option<&str>) -> Self {
        let (Some(account), Some(data)) = (account, self.data.as_mut()) else {
            return self;
        };
        if data.account.is_some() {
            return self;
        }
        data.account = Some(account.to_string());
        if let Some(server) = &data.server {
            // Both forms through the one quoting, so a server URL that needs quotes
            // is still found (and the account name stays one word).
            let login = crate::next_step::login_command_with(server, None, &[], &[]);
            let with_account =
                crate::next_step::login_command_with(server, Some(account), &[], &[]);
            self.message = self.message.replace(&login, &with_account);
            if let Some(command) = data.command.as_mut() {
                *command = command.replace(&login, &with_account);
            }
        }
        self
    }

    /// The kind: `data.kind`; for a peer that sent only a code (no `data`, as any plain
    /// JSON-RPC peer does), or a kind this build does not know, the kind its code stands
    /// for. `None` when neither tells.
    pub fn kind(&self) -> Option<ErrorKind> {
        match self.data.as_ref().map(|d| d.kind) {
            Some(ErrorKind::Unknown) => {
                Some(ErrorKind::from_code(self.code).unwrap_or(ErrorKind::Unknown))
            }
            Some(kind) => Some(kind),
            None => ErrorKind::from_code(self.code),
        }
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RpcError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A newer daemon's error, with a kind this build has never heard of, still decodes:
    /// the message and code reach the user, the kind reads as `Unknown`.
    #[test]
    fn an_error_of_a_new_kind_decodes() {
        let line = r#"{"code":-32030,"message":"the account is locked; run: mcp-auth unlock","data":{"kind":"account_locked","server":"https://mcp.example/mcp"}}"#;
        let e: RpcError = serde_json::from_str(line).unwrap();
        assert_eq!(e.kind(), Some(ErrorKind::Unknown));
        assert_eq!(e.code, -32030);
        assert_eq!(e.message, "the account is locked; run: mcp-auth unlock");
        let data = e.data.unwrap();
        assert_eq!(data.server.as_deref(), Some("https://mcp.example/mcp"));
        // So does a whole reply carrying it.
        let reply = format!(r#"{{"jsonrpc":"2.0","id":1,"error":{line}}}"#);
        let decoded: crate::Response = serde_json::from_str(&reply).unwrap();
        assert!(decoded.error.is_some());
    }

    /// Errors from peers that send only a code (no `data`) still have a kind; so does a
    /// new kind sent with one of the codes this build knows.
    #[test]
    fn the_kind_of_an_error_with_only_a_code() {
        for kind in ErrorKind::ALL {
            let bare: RpcError =
                serde_json::from_value(serde_json::json!({"code": kind.code(), "message": "x"}))
                    .unwrap();
            assert_eq!(bare.kind(), Some(*kind), "{kind:?}");
            // Each kind is named as the wire names it, and codes are unique.
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
            assert_eq!(ErrorKind::from_code(kind.code()), Some(*kind));
        }
        let e: RpcError = serde_json::from_str(
            r#"{"code":-32001,"message":"x","data":{"kind":"authorization_required_v2"}}"#,
        )
        .unwrap();
        assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired));
        let e: RpcError = serde_json::from_str(r#"{"code":-31999,"message":"x"}"#).unwrap();
        assert_eq!(e.kind(), None);
    }

    #[test]
    fn an_error_for_an_account_names_it_in_every_login_command() {
        let server = "https://mcp.example/mcp";
        let e = RpcError::authorization_required(server, &["read".into()], "not logged in")
            .for_account(Some("work"));
        let want = format!("mcp-auth login {server} --account work --scope read");
        assert_eq!(e.message, format!("not logged in; run: {want}"));
        let data = e.data.as_ref().unwrap();
        assert_eq!(data.command.as_deref(), Some(want.as_str()));
        assert_eq!(data.account.as_deref(), Some("work"));
        // Applied once only, and not at all for the default account.
        assert_eq!(e.clone().for_account(Some("work")), e);
        let plain = RpcError::authorization_required(server, &[], "x");
        assert_eq!(plain.clone().for_account(None), plain);
    }

    /// A server URL the shell must see quoted (`&`, `'`) still gets its `--account`, and
    /// the command stays one that a POSIX shell splits back into exactly those words.
    #[test]
    fn the_account_reaches_a_login_command_whose_server_is_quoted() {
        let server = "https://mcp.example/mcp?a=1&b='x'";
        let e = RpcError::authorization_required(server, &["read".into()], "not logged in")
            .for_account(Some("jane@corp.example"));
        let command = e.data.as_ref().unwrap().command.clone().unwrap();
        assert_eq!(
            command,
            crate::next_step::login_command_as(server, &["read".into()], Some("jane@corp.example"))
        );
        assert_eq!(
            shlex::split(&command).unwrap(),
            [
                "mcp-auth",
                "login",
                server,
                "--account",
                "jane@corp.example",
                "--scope",
                "read"
            ]
        );
        assert!(e.message.ends_with(&command), "{}", e.message);
    }
}
