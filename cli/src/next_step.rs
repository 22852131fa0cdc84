//! Every error `mcp-auth` prints names the command to run next. The daemon's messages
//! mostly do already; for those that do not (an older daemon, a kind with no obvious
//! fix), the hint is chosen here from the error's kind.

use mcp_authd_ipc::text::{MAX_QUOTED_CHARS, printable, shell_command};
use mcp_authd_ipc::{ClientError, ErrorKind};

/// What the failed command was about, for hints that repeat it.
pub struct Attempt {
    /// The subcommand, e.g. `login`.
    pub subcommand: &'static str,
    /// Its server URL or grant argument, if it has one.
    pub target: Option<String>,
}

/// The error's message, with a `; <what to do>: mcp-auth …` hint unless it names a
/// command already.
pub fn explain(e: &ClientError, attempt: &Attempt) -> String {
    let message = e.to_string();
    if names_a_command(&message) {
        return message;
    }
    format!("{message}; {}", hint(e, attempt))
}

/// Whether a message already tells which `mcp-auth …` or `mcp-authd` command to run.
pub fn names_a_command(message: &str) -> bool {
    message.contains("mcp-auth ") || message.contains(": mcp-authd")
}

fn hint(e: &ClientError, attempt: &Attempt) -> String {
    let server = match e {
        ClientError::Rpc(rpc) => rpc.data.as_ref().and_then(|d| d.server.clone()),
        _ => None,
    }
    .or_else(|| attempt.target.clone());
    // Commands that name the server are built (and quoted) by the one function for them.
    let login = |extra: &[&str]| match &server {
        Some(server) => {
            let mut args = vec!["mcp-auth", "login", server.as_str()];
            args.extend_from_slice(extra);
            shell_command(&args)
        }
        None => format!(
            "mcp-auth login <MCP server URL>{}",
            extra.iter().map(|a| format!(" {a}")).collect::<String>()
        ),
    };
    let kind = match e {
        ClientError::NotRunning { .. } => {
            return "start it: mcp-authd (or install the user service: mcp-auth service install)"
                .into();
        }
        ClientError::Io(_) => return "check that it still runs: mcp-auth status".into(),
        ClientError::Untrusted { .. } => {
            return "see what is wrong with the socket: mcp-auth doctor".into();
        }
        ClientError::Protocol(_) => {
            return "mcp-auth and mcp-authd may be different versions; compare: mcp-auth --version and mcp-auth status".into();
        }
        ClientError::Rpc(rpc) => rpc.kind(),
    };
    match kind {
        Some(ErrorKind::AuthorizationRequired | ErrorKind::InsufficientScope) => {
            format!("run: {}", login(&[]))
        }
        Some(ErrorKind::LoginTimeout) => {
            format!("run again with more time: {}", login(&["--timeout", "600"]))
        }
        Some(ErrorKind::LoginFailed) => {
            format!("run again once that is fixed: {}", login(&[]))
        }
        Some(ErrorKind::ServerError) => {
            "retry later; check the network and this machine's clock: mcp-auth doctor".into()
        }
        Some(ErrorKind::DiscoveryFailed) => {
            "check that the URL is the MCP endpoint itself, then: mcp-auth login <MCP server URL>"
                .into()
        }
        Some(ErrorKind::RegistrationFailed) => format!(
            "configure a pre-registered client_id under [servers.\"{}\"] in the config file, then run: mcp-auth reload && {}",
            printable(server.as_deref().unwrap_or("<MCP server URL>"), MAX_QUOTED_CHARS),
            login(&[])
        ),
        Some(ErrorKind::NotFound) => "see the grants: mcp-auth list".into(),
        Some(ErrorKind::SecretStore) => {
            "unlock the keychain and retry; see: mcp-auth doctor".into()
        }
        Some(ErrorKind::ConfigInvalid) => "fix the file, then run: mcp-auth reload".into(),
        Some(ErrorKind::ConfirmationTimeout) => {
            "run it again and answer the dialog, or from another terminal: mcp-auth approve".into()
        }
        Some(ErrorKind::ConfirmationDenied) => {
            "see the decisions: mcp-auth inspect <grant>; to be asked again: mcp-auth forget-client <grant> <program>".into()
        }
        Some(ErrorKind::LimitExceeded) => {
            "retry in a moment; see the daemon's state: mcp-auth status".into()
        }
        Some(ErrorKind::PermissionDenied) => {
            "the socket belongs to another user; start your own: mcp-authd (or: mcp-auth service install)".into()
        }
        Some(ErrorKind::InvalidParams) => {
            format!("see the arguments: mcp-auth {} --help", attempt.subcommand)
        }
        Some(ErrorKind::MethodNotFound) => {
            "mcp-authd is older than mcp-auth; compare: mcp-auth --version and mcp-auth status"
                .into()
        }
        Some(ErrorKind::ParseError | ErrorKind::InvalidRequest | ErrorKind::Internal) | None => {
            "see the daemon's log, and check: mcp-auth doctor".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use mcp_authd_ipc::RpcError;

    use super::*;

    fn attempt() -> Attempt {
        Attempt {
            subcommand: "login",
            target: Some("https://mcp.example/mcp".into()),
        }
    }

    /// Every kind the daemon can send, with a message that names no command, gets a hint
    /// that does.
    #[test]
    fn every_error_kind_gets_a_command() {
        let kinds = [
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
        for kind in kinds {
            let e = ClientError::Rpc(RpcError::new(kind, "something went wrong"));
            let text = explain(&e, &attempt());
            assert!(
                text.starts_with("something went wrong; ") && text.contains("mcp-auth "),
                "{kind:?}: {text}"
            );
        }
        let e = ClientError::Io(std::io::Error::other("broken pipe"));
        assert!(explain(&e, &attempt()).contains("mcp-auth status"));
        let e = ClientError::Protocol("garbage".into());
        assert!(explain(&e, &attempt()).contains("mcp-auth --version"));
    }

    #[test]
    fn a_message_with_a_command_is_left_alone() {
        let e = ClientError::Rpc(RpcError::authorization_required(
            "https://mcp.example/mcp",
            &[],
            "not logged in",
        ));
        assert_eq!(
            explain(&e, &attempt()),
            "not logged in; run: mcp-auth login https://mcp.example/mcp"
        );
    }

    /// A hostile server URL in a hint is one quoted word: running the hint runs mcp-auth.
    #[test]
    fn hints_quote_the_server() {
        let e = ClientError::Rpc(
            RpcError::new(ErrorKind::LoginFailed, "refused")
                .with_server("https://h.example/mcp;$(touch x)'"),
        );
        let text = explain(&e, &attempt());
        let command = text.split("fixed: ").nth(1).unwrap();
        assert_eq!(
            command,
            shell_command(&["mcp-auth", "login", "https://h.example/mcp;$(touch x)'"]),
            "{text}"
        );
        assert!(!command.contains(" https://h.example/mcp;$("), "{text}");
    }

    #[test]
    fn hints_name_the_server_the_error_is_about() {
        let e = ClientError::Rpc(
            RpcError::new(ErrorKind::LoginTimeout, "the browser login timed out")
                .with_server("https://other.example/mcp"),
        );
        assert!(
            explain(&e, &attempt())
                .ends_with("mcp-auth login https://other.example/mcp --timeout 600"),
            "{}",
            explain(&e, &attempt())
        );
    }
}
