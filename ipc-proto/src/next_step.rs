//! What to run next: the one place that builds the `mcp-auth …` commands a message
//! suggests (the daemon's `data.command` and messages, the CLI's hints), and the advice
//! for each error kind. Every command goes through [`shell_command`], so pasting it — by
//! a person or by an agent with a shell tool — runs exactly that command.

use crate::text::{MAX_QUOTED_CHARS, printable, shell_command};
use crate::{ClientError, ErrorKind};

/// A login command where the server is not known (`mcp-auth login <MCP server URL>`).
pub const LOGIN_ANY_SERVER: &str = "mcp-auth login <MCP server URL>";
/// The daemon re-reads its config file (after an edit).
pub const RELOAD: &str = "mcp-auth reload";
/// The checks of the daemon, socket, secret store, database, clock and service.
pub const DOCTOR: &str = "mcp-auth doctor";
/// The daemon's state and where it keeps secrets.
pub const STATUS: &str = "mcp-auth status";
/// The grants.
pub const LIST: &str = "mcp-auth list";
/// The `confirm_clients` questions waiting for an answer.
pub const APPROVE: &str = "mcp-auth approve";
/// One grant, where the grant is not known (its programs, why it needs a login).
pub const INSPECT_ANY_GRANT: &str = "mcp-auth inspect <grant>";
/// A `confirm_clients` decision forgotten, where neither grant nor program is known.
pub const FORGET_ANY_CLIENT: &str = "mcp-auth forget-client <grant> <program>";
/// The per-user service (it starts the daemon).
pub const SERVICE_INSTALL: &str = "mcp-auth service install";
/// Whether the per-user service is installed, enabled and running.
pub const SERVICE_STATUS: &str = "mcp-auth service status";
/// The CLI's own version (to compare with the daemon's in `mcp-auth status`).
pub const VERSION: &str = "mcp-auth --version";
/// The flags that answer a `confirm_clients` question, one of them per answer.
pub const APPROVE_ANSWERS: [&str; 3] = ["--once", "--always", "--deny"];

/// `mcp-auth <subcommand> --help`.
pub fn help_command(subcommand: &str) -> String {
    shell_command(&["mcp-auth", subcommand, "--help"])
}

/// `mcp-auth inspect <grant>`: what is known of the grant, and what may help.
pub fn inspect_command(grant: &str) -> String {
    shell_command(&["mcp-auth", "inspect", grant])
}

/// `mcp-auth approve <request>`: answers a waiting `confirm_clients` question (`--once`
/// by default).
pub fn approve_command(request: u64) -> String {
    shell_command(&["mcp-auth", "approve", &request.to_string()])
}

/// `mcp-auth approve <request> --once | --always | --deny`: the ways to answer, for
/// `request` (a number, or a placeholder such as `<REQUEST>`).
pub fn approve_choices(request: &str) -> String {
    format!("{APPROVE} {request} {}", APPROVE_ANSWERS.join(" | "))
}

/// `mcp-auth secret set <name>`: stores a secret the config file names (read from
/// standard input).
pub fn secret_set_command(name: &str) -> String {
    shell_command(&["mcp-auth", "secret", "set", name])
}

/// `mcp-auth proxy <server>`: a client run through the proxy, which signs what it needs.
pub fn proxy_command(server: &str) -> String {
    shell_command(&["mcp-auth", "proxy", server])
}

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

/// Every command this module suggests, with sample arguments (`<…>` stands for one
/// argument): for the CLI's test that each one parses with its command line, so that a
/// renamed subcommand or flag cannot leave a hint behind. A new hint is added here.
pub fn every_command() -> Vec<String> {
    let mut all: Vec<String> = [
        LOGIN_ANY_SERVER,
        RELOAD,
        DOCTOR,
        STATUS,
        LIST,
        APPROVE,
        INSPECT_ANY_GRANT,
        FORGET_ANY_CLIENT,
        SERVICE_INSTALL,
        SERVICE_STATUS,
        VERSION,
    ]
    .map(str::to_string)
    .to_vec();
    let server = "https://mcp.example/mcp";
    let scopes = ["read".to_string(), "write".to_string()];
    all.extend([
        login_command(server, &scopes),
        login_command_as(server, &scopes, Some("work")),
        login_command_with(server, Some("work"), &[], &["--timeout", "600"]),
        login_command_with(server, None, &[], &["--device"]),
        forget_client_command("g_1", "/usr/bin/python3"),
        help_command("login"),
        inspect_command("g_1"),
        approve_command(7),
        secret_set_command("my-key"),
        proxy_command(server),
    ]);
    all.extend(
        APPROVE_ANSWERS
            .iter()
            .map(|answer| format!("{} {answer}", approve_command(7))),
    );
    all
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
            return format!("start it: mcp-authd (or install the user service: {SERVICE_INSTALL})");
        }
        ClientError::Io(_) => return format!("check that it still runs: {STATUS}"),
        ClientError::Untrusted { .. } => {
            return format!("see what is wrong with the socket: {DOCTOR}");
        }
        ClientError::Protocol(_) => {
            return format!(
                "mcp-auth and mcp-authd may be different versions; compare: {VERSION} and {STATUS}"
            );
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
            format!("retry later; check the network and this machine's clock: {DOCTOR}")
        }
        Some(ErrorKind::DiscoveryFailed) => {
            format!("check that the URL is the MCP endpoint itself, then: {LOGIN_ANY_SERVER}")
        }
        Some(ErrorKind::RegistrationFailed) => format!(
            "configure a pre-registered client_id under [servers.\"{}\"] in the config file, then run: {RELOAD} && {}",
            printable(server.unwrap_or("<MCP server URL>"), MAX_QUOTED_CHARS),
            login(&[])
        ),
        Some(ErrorKind::NotFound) => format!("see the grants: {LIST}"),
        Some(ErrorKind::SecretStore) => {
            format!("unlock the keychain and retry; see: {DOCTOR}")
        }
        Some(ErrorKind::ConfigInvalid) => format!("fix the file, then run: {RELOAD}"),
        Some(ErrorKind::ConfirmationTimeout) => {
            format!("run it again and answer the dialog, or from another terminal: {APPROVE}")
        }
        Some(ErrorKind::ConfirmationDenied) => {
            format!(
                "see the decisions: {INSPECT_ANY_GRANT}; to be asked again: {FORGET_ANY_CLIENT}"
            )
        }
        Some(ErrorKind::LimitExceeded) => {
            format!("retry in a moment; see the daemon's state: {STATUS}")
        }
        Some(ErrorKind::PermissionDenied) => {
            format!(
                "the socket belongs to another user; start your own: mcp-authd (or: {SERVICE_INSTALL})"
            )
        }
        Some(ErrorKind::InvalidParams) => {
            format!("see the arguments: {}", help_command(subcommand))
        }
        Some(ErrorKind::MethodNotFound) => {
            format!("mcp-authd is older than mcp-auth; compare: {VERSION} and {STATUS}")
        }
        // A kind newer than this mcp-auth: its message is the daemon's; the versions may
        // differ.
        Some(ErrorKind::Unknown) => {
            format!("mcp-authd is newer than mcp-auth; compare: {VERSION} and {STATUS}")
        }
        Some(ErrorKind::ParseError | ErrorKind::InvalidRequest | ErrorKind::Internal) | None => {
            format!("see the daemon's log, and check: {DOCTOR}")
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
        assert_eq!(
            shlex::split(&secret_set_command(hostile)).unwrap(),
            ["mcp-auth", "secret", "set", hostile]
        );
        assert_eq!(
            shlex::split(&inspect_command(hostile)).unwrap(),
            ["mcp-auth", "inspect", hostile]
        );
        assert_eq!(
            shlex::split(&proxy_command(hostile)).unwrap(),
            ["mcp-auth", "proxy", hostile]
        );
    }
}
