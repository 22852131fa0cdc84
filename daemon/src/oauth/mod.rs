//! OAuth 2.1 as the MCP authorization spec asks of a client: discovery, registration,
//! authorization code + PKCE, token requests.
//!
//! Hand-written on reqwest rather than on the `oauth2` crate: the MCP spec needs RFC 9728
//! discovery, RFC 8707 `resource` on every request, RFC 9207 `iss` checks and exact issuer
//! comparison, which that crate does not model, and every response must go through our
//! size and redirect limits.

pub mod device;
pub mod discovery;
pub mod dpop;
pub mod http;
pub mod id_token;
pub mod jwt;
pub mod pkce;
pub mod registration;
pub mod token;
pub mod www_authenticate;

use std::fmt;

/// Everything that can go wrong talking to an MCP server or an authorization server.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// Could not talk to a server at all (connection, timeout, TLS, oversized body).
    #[error("{url}: {reason}")]
    Transport { url: String, reason: String },
    /// The server answered with something we cannot use.
    #[error("{url} answered {detail}")]
    BadResponse { url: String, detail: String },
    /// Metadata that must not be trusted (wrong resource, wrong issuer, no PKCE, plain http).
    #[error("{0}")]
    Untrusted(String),
    /// Dynamic client registration refused.
    #[error("the authorization server refused to register mcp-authd as a client: {0}")]
    RegistrationRefused(String),
    /// The token endpoint answered with an OAuth error.
    #[error("the token endpoint answered {0}")]
    TokenError(OAuthErrorBody),
}

/// An RFC 6749 §5.2 error body.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct OAuthErrorBody {
    #[serde(skip)]
    pub status: u16,
    pub error: String,
    #[serde(default)]
    pub error_description: Option<String>,
}

impl fmt::Display for OAuthErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} {}", self.status, printable(&self.error, 64))?;
        if let Some(d) = &self.error_description {
            write!(f, " ({})", printable(d, 200))?;
        }
        Ok(())
    }
}

/// The one sanitizer of server-controlled text (shared with the clients): control
/// characters, ANSI escapes and bidi controls removed, length bounded.
pub use mcp_authd_ipc::text::printable;
