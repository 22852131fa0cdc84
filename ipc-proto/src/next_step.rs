//! What to run next: the one place that builds the `mcp-auth …` commands a message
//! suggests (the daemon's `data.command` and messages, the CLI's hints), and the advice
//! for each error kind. Every command goes through [`shell_command`], so pasting it — by
//! a person or by an agent with a shell tool — runs exactly that command.

use crate::text::{MAX_QUOTED_CHARS, printable, shell_command};
use crate::{ClientError, ErrorKind};

/// A login command where the server is not known (`mcp-auth login <MCP server URL>`).
pub const LOGIN_ANY_SERVER: &str = "mcp-auth login <MCP server URL>";

/// `mcp-auth login <server> [--account NAME] [--scope '<scopes>'] [flags…]`: the one
/// builder of login commands. `account` `None` is the default account.
pub fn login_command_with(
    server: &str,
    account: Option<&str>,
    scopes: &[String],
    flags: &[&str],
) -> String {
    let joined = scopes.join(" ");
    let mut args = vec!["mcp-auth", "login", server];
    if let Some(account) = account {
        args.extend(["--account", account]);
    }
    if !scopes.is_empty() {
        args.extend(["--scope", joined.as_str()]);
    }
    args.extend_from_slice(flags);
    shell_command(&args)
}

/// `mcp-auth login <server> [--scope '<scopes>']`.
pub fn login_command(server: &str, scopes: &[String]) -> String {
    login_command_with(server, None, scopes, &[])
}

/// [`login_command`] for one account of the server (`--account NAME`); `None` is the
/// default account. The name goes through the same quoting as everything else.
pub fn login_command_as(server: &str, scopes: &[String], account: Option<&str>) -> String {
    login_command_with(server, account, scopes, &[])
}

/// `mcp-auth forget-client <grant> <program>`: asks about the program again.
pub fn forget_client_command(grant: &str, program: &str) -> String {
    shell_command(&["mcp-auth", "forget-client", grant, program])
}

/// Whether a message already tells which `mcp-auth …` or `mcp-authd` command to run.
pub fn names_a_command(message: &str) -> bool {
    message.contains("mcp-auth ") || message.contains(": mcp-authd")
}

/// What the failed command was about, for hints that repeat it.
pub struct Attempt {
    /// The subcommand, e.g. `login`.
    pub subcommand: &'static str,
    /// Its server URL or grant argument, if it has one.
    pub target: Option<String>,
}

/// The error's message, with a `; <what to do>: mcp-auth …` hint unless it names a
/// command already (the daemon's messages mostly do; an older daemon's, or a kind with no
/// obvious fix, may not).
pub fn explain(e: &ClientError, attempt: &Attempt) -> String {
    let message = e.to_string();
    if names_a_command(&message) {
        return message;
    }
    format!("{message}; {}", hint(e, attempt))
}

fn hint(e: &ClientError, attempt: &Attempt) -> String {
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
    let server = match e {
        ClientError::Rpc(rpc) => rpc.data.as_ref().and_then(|d| d.server.clone()),
        _ => None,
    }
    .or_else(|| attempt.target.clone());
    for_kind(kind, server.as_deref(), attempt.subcommand)
}

/// The advice for an error of `kind` about `server` (if known), met by `mcp-auth
/// <subcommand>`: always names a command.
pub fn for_kind(kind: Option<ErrorKind>, server: Option<&str>, subcommand: &str) -> String {
    let login = |flags: &[&str]| match server {
        Some(server) => login_command_with(server, None, &[], flags),
        None => flags
            .iter()
            .fold(LOGIN_ANY_SERVER.to_string(), |cmd, f| format!("{cmd} {f}")),
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
            format!("check that the URL is the MCP endpoint itself, then: {LOGIN_ANY_SERVER}")
        }
        Some(ErrorKind::RegistrationFailed) => format!(
            "configure a pre-registered client_id under [servers.\"{}\"] in the config file, then run: mcp-auth reload && {}",
            printable(server.unwrap_or("<MCP server URL>"), MAX_QUOTED_CHARS),
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
            format!("see the arguments: mcp-auth {subcommand} --help")
        }
        Some(ErrorKind::MethodNotFound) => {
            "mcp-authd is older than mcp-auth; compare: mcp-auth --version and mcp-auth status"
                .into()
        }
        // A kind newer than this mcp-auth: its message is the daemon's; the versions may
        // differ.
        Some(ErrorKind::Unknown) => {
            "mcp-authd is newer than mcp-auth; compare: mcp-auth --version and mcp-auth status"
                .into()
        }
        Some(ErrorKind::ParseError | ErrorKind::InvalidRequest | ErrorKind::Internal) | None => {
            "see the daemon's log, and check: mcp-auth doctor".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::RpcError;

    use super::*;

    fn attempt() -> Attempt {
        Attempt {
            subcommand: "login",
            target: Some("https://mcp.example/mcp".into()),
        }
    }

    /// Every kind the daemon can send (and one it may send some day), with a message that
    /// names no command, gets a hint that does.
    #[test]
    fn every_error_kind_gets_a_command() {
        for &kind in ErrorKind::ALL.iter().chain([&ErrorKind::Unknown]) {
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
        let e = ClientError::Rpc(RpcError::new(ErrorKind::LoginTimeout, "timed out"));
        let nowhere = Attempt {
            subcommand: "list",
            target: None,
        };
        assert!(
            explain(&e, &nowhere).ends_with("mcp-auth login <MCP server URL> --timeout 600"),
            "{}",
            explain(&e, &nowhere)
        );
    }

    #[test]
    fn commands_quote_every_argument() {
        assert_eq!(
            login_command("https://h.example/mcp", &["a".into(), "b".into()]),
            "mcp-auth login https://h.example/mcp --scope 'a b'"
        );
        assert_eq!(
            login_command_with(
                "https://h.example/mcp",
                Some("work"),
                &["a".into()],
                &["--device"]
            ),
            "mcp-auth login https://h.example/mcp --account work --scope a --device"
        );
        let hostile = "x';touch /tmp/p;'$(id)`id`\"\n";
        assert_eq!(
            shlex::split(&forget_client_command("g_1", hostile)).unwrap(),
            ["mcp-auth", "forget-client", "g_1", hostile]
        );
    }
}
