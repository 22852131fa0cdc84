//! How a login fails: what happened, and the command to run next.

use mcp_authd_ipc::next_step::{login_command, login_command_with};
use mcp_authd_ipc::{ErrorKind, RpcError};

use crate::oauth::OAuthError;

/// A login that failed for `why`; the user runs it again once that is fixed.
pub(super) fn login_failed(server: &str, why: &str) -> RpcError {
    login_failed_again(server, why, "")
}

/// As [`login_failed`], naming the flag (`" --manual"`) to run the same login again with.
pub(super) fn login_failed_again(server: &str, why: &str, flag: &str) -> RpcError {
    RpcError::new(
        ErrorKind::LoginFailed,
        format!(
            "login to {server} failed: {why}; run again once that is fixed: {}",
            again_command(server, flag)
        ),
    )
    .with_server(server)
}

/// `mcp-auth login <server>` with `flags` (e.g. `" --device --timeout 600"`), built by
/// the one command builder.
pub(super) fn again_command(server: &str, flags: &str) -> String {
    let flags: Vec<&str> = flags.split_whitespace().collect();
    login_command_with(server, None, &[], &flags)
}

/// Discovery failed: untrusted metadata is the server operator's to fix; anything else
/// may be the URL or the network.
pub(super) fn discovery_error(server: &str, e: OAuthError) -> RpcError {
    let kind = match e {
        OAuthError::Untrusted(_) => ErrorKind::DiscoveryFailed,
        _ => ErrorKind::ServerError,
    };
    let command = login_command(server, &[]);
    let next = match kind {
        ErrorKind::DiscoveryFailed => format!(
            "check that {server} is the MCP endpoint itself; if it is, its operator must fix the metadata, then run: {command}"
        ),
        _ => format!("check the URL and the network, then retry: {command}"),
    };
    RpcError::new(
        kind,
        format!("cannot discover how to log in to {server}: {e}; {next}"),
    )
    .with_server(server)
}
