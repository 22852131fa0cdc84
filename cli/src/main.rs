//! mcp-auth: the command-line client of mcp-authd.

mod clients;
mod color;
mod docs;
mod doctor;
mod grants;
mod login;
mod output;
mod proxy;
mod secret;
mod service;
mod status;
mod table;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mcp_authd_ipc::{Client, ClientError, ErrorKind, next_step};

/// Log in to MCP servers once and hand their tokens to every local client, through mcp-authd.
#[derive(Parser)]
#[command(name = "mcp-auth", version, after_help = output::EXIT_CODES_HELP)]
struct Cli {
    /// mcp-authd's socket [default: $MCP_AUTHD_SOCKET, else $XDG_RUNTIME_DIR/mcp-authd/mcp-authd.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Print JSON instead of text
    #[arg(long, global = true)]
    json: bool,
    /// Colour the output: auto (on a terminal, unless NO_COLOR is set), always, never
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    color: color::When,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Log in to an MCP server (browser, device code, paste-back, or the grant its config names) and keep the grant
    Login(login::Args),
    /// Print an access token for an MCP server (only the token, for scripts)
    Token(token::Args),
    /// Print {"Authorization": "Bearer …"} for an MCP server (Claude Code's headersHelper); refuses a DPoP-bound grant
    Headers(token::Args),
    /// Bridge stdio to an MCP server over Streamable HTTP, with tokens from mcp-authd
    Proxy(proxy::Args),
    /// List the grants
    List,
    /// Show one grant (never its secrets)
    Inspect(GrantArgs),
    /// Revoke a grant at the authorization server and forget it here
    Revoke(GrantArgs),
    /// Forget a grant here without telling the authorization server
    Logout(GrantArgs),
    /// confirm_clients: list the programs waiting for approval, or answer one (--once, --always, --deny)
    Approve(clients::ApproveArgs),
    /// confirm_clients: forget what was answered for a program on a grant (it is asked again)
    ForgetClient {
        /// The grant id or MCP server URL
        grant: String,
        /// The program as `mcp-auth inspect` lists it
        program: String,
        /// With a server URL: this account's grant instead of the default account's
        #[arg(long, value_name = "NAME", value_parser = account_arg)]
        account: Option<String>,
    },
    /// Show the daemon's state and where it keeps secrets
    Status,
    /// Check the daemon, socket, secret store, database, clock and service; one line each, with the fix (exit 1 when a check fails)
    Doctor,
    /// Make the daemon re-read its config file (as SIGHUP does); an invalid file is refused and the old config stays
    Reload,
    /// Store or delete a secret the config file references as { keychain = "<name>" } (a private key, an ID token)
    #[command(subcommand)]
    Secret(secret::Action),
    /// Install, remove or check the per-user service (systemd units, LaunchAgent)
    #[command(subcommand)]
    Service(service::Action),
    /// Print the shell completion script for bash, zsh, fish, elvish or powershell
    Completions { shell: clap_complete::Shell },
    /// Print the man page (roff); with --dir, write it and one page per subcommand there
    Man(docs::ManArgs),
}

/// A grant, by id or by server URL (and account).
#[derive(clap::Args)]
struct GrantArgs {
    /// The grant id, or the MCP server URL
    grant: String,
    /// With a server URL: this account's grant instead of the default account's
    #[arg(long, value_name = "NAME", value_parser = account_arg)]
    account: Option<String>,
}

/// `--account NAME`, checked as the daemon will (see `check_account_name`).
pub fn account_arg(name: &str) -> Result<String, String> {
    mcp_authd_ipc::methods::check_account_name(name).map(|()| name.to_string())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Service(action) => return service::main(action, cli.socket, cli.json),
        Command::Completions { shell } => return docs::completions(shell),
        Command::Man(args) => return docs::man(args),
        command => Cli { command, ..cli },
    };
    // Every command left talks to the daemon and may hold an access token (token, headers,
    // proxy): no core file. The process stays dumpable on purpose: PR_SET_DUMPABLE 0 would
    // make /proc/<pid>/exe unreadable to the daemon, whose audit of hand-outs names the
    // receiving program.
    let _ = mcp_authd_ipc::hygiene::disable_core_dumps(false);
    let path = mcp_authd_ipc::socket::resolve(cli.socket);
    if let Command::Doctor = cli.command {
        return doctor::run(&path, cli.json).await;
    }
    if let Command::Proxy(args) = cli.command {
        return match proxy::run(path, args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mcp-auth proxy: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let secret_value = match &cli.command {
        Command::Secret(secret::Action::Set { .. }) => match secret::read_value() {
            Ok(value) => value,
            Err(e) => {
                eprintln!("mcp-auth: {e}");
                return ExitCode::from(1);
            }
        },
        _ => String::new(),
    };
    let color = color::for_stdout(cli.color);
    let attempt = attempt(&cli.command);
    let result = async {
        let mut client = Client::connect(&path).await?;
        match cli.command {
            Command::Login(args) => login::run(&mut client, &path, args, cli.json).await,
            Command::Token(args) => token::run(&mut client, args, cli.json).await,
            Command::Headers(args) => token::headers(&mut client, args).await,
            Command::Proxy(_) => unreachable!("handled before connecting"),
            Command::List => grants::list(&mut client, cli.json, color).await,
            Command::Inspect(g) => {
                grants::inspect(&mut client, &g.grant, g.account, cli.json, color).await
            }
            Command::Revoke(g) => {
                grants::revoke(&mut client, &g.grant, g.account, true, cli.json).await
            }
            Command::Logout(g) => {
                grants::revoke(&mut client, &g.grant, g.account, false, cli.json).await
            }
            Command::Approve(args) => clients::approve(&mut client, args, cli.json).await,
            Command::ForgetClient {
                grant,
                program,
                account,
            } => clients::forget(&mut client, &grant, &program, account, cli.json).await,
            Command::Status => status::run(&mut client, cli.json).await,
            Command::Reload => status::reload(&mut client, cli.json).await,
            Command::Secret(action) => {
                secret::run(&mut client, action, secret_value, cli.json).await
            }
            Command::Service(_) | Command::Completions { .. } | Command::Man(_) => {
                unreachable!("handled without a connection")
            }
            Command::Doctor => unreachable!("handled before connecting"),
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-auth: {}", next_step::explain(&e, &attempt));
            ExitCode::from(exit_code(&e))
        }
    }
}

/// The subcommand and its server or grant argument, for error hints.
fn attempt(command: &Command) -> next_step::Attempt {
    let (subcommand, target) = match command {
        Command::Login(a) => ("login", Some(&a.server)),
        Command::Token(a) => ("token", Some(&a.server)),
        Command::Headers(a) => ("headers", Some(&a.server)),
        Command::Inspect(g) => ("inspect", Some(&g.grant)),
        Command::Revoke(g) => ("revoke", Some(&g.grant)),
        Command::Logout(g) => ("logout", Some(&g.grant)),
        Command::List => ("list", None),
        Command::Status => ("status", None),
        Command::Approve(_) => ("approve", None),
        Command::ForgetClient { grant, .. } => ("forget-client", Some(grant)),
        Command::Reload => ("reload", None),
        Command::Secret(_) => ("secret", None),
        _ => ("help", None),
    };
    next_step::Attempt {
        subcommand,
        target: target.cloned(),
    }
}

/// The warning for a server URL that is plain http to a host that is not loopback: the
/// daemon serves one only where its config says `allow_insecure_http = true`, and every
/// use says so on stderr.
pub fn plain_http_warning(server: &str, what: &str) -> Option<String> {
    use mcp_authd_ipc::transport::{UrlRefused, check_url};
    matches!(
        check_url("MCP server URL", server, None, false, server),
        Err(UrlRefused::PlainHttp { .. })
    )
    .then(|| {
        format!(
            "warning: {server} is plain http, allowed by allow_insecure_http in the daemon's config: {what} travel unencrypted"
        )
    })
}

/// One `--scope` value: space-separated RFC 6749 scope tokens, checked before anything is
/// sent (a clear error instead of a scope no server could grant).
pub fn scope_value(value: &str) -> Result<String, String> {
    mcp_authd_ipc::text::parse_scopes(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

/// `--scope` values, each of which may hold several space-separated scopes; `None` when
/// none were given, so the daemon chooses.
pub fn scope_args(values: &[String]) -> Option<Vec<String>> {
    let scopes: Vec<String> = values
        .iter()
        .flat_map(|s| s.split_whitespace())
        .map(str::to_string)
        .collect();
    (!scopes.is_empty()).then_some(scopes)
}

/// Documented in `mcp-auth --help` and the README.
fn exit_code(e: &ClientError) -> u8 {
    match e {
        ClientError::NotRunning { .. } => 3,
        ClientError::Rpc(rpc) => match rpc.kind() {
            Some(ErrorKind::AuthorizationRequired | ErrorKind::InsufficientScope) => 4,
            Some(ErrorKind::LoginTimeout | ErrorKind::LoginFailed) => 5,
            Some(ErrorKind::NotFound) => 6,
            Some(
                ErrorKind::ServerError | ErrorKind::DiscoveryFailed | ErrorKind::RegistrationFailed,
            ) => 7,
            Some(ErrorKind::ConfirmationDenied | ErrorKind::ConfirmationTimeout) => 8,
            _ => 1,
        },
        _ => 1,
    }
}

#[cfg(test)]
mod hint_tests {
    use clap::Parser;
    use clap::error::ErrorKind as ClapError;

    use super::{Cli, next_step};

    /// A suggested command as the shell would split it, each `<…>` placeholder one
    /// argument (here `1`, which every positional accepts).
    fn words(command: &str) -> Vec<String> {
        let mut filled = String::new();
        let mut rest = command;
        while let Some(open) = rest.find('<') {
            let close = open + rest[open..].find('>').expect("an unclosed <");
            filled.push_str(&rest[..open]);
            filled.push('1');
            rest = &rest[close + 1..];
        }
        filled.push_str(rest);
        shlex::split(&filled).unwrap_or_else(|| panic!("not shell words: {command}"))
    }

    fn parses(argv: &[String]) -> Result<(), clap::Error> {
        match Cli::try_parse_from(argv) {
            Ok(_) => Ok(()),
            // `--help` and `--version` end the parse by printing: they parsed.
            Err(e) if matches!(e.kind(), ClapError::DisplayHelp | ClapError::DisplayVersion) => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Every command a hint suggests (`next_step`, the one place that builds them) parses
    /// with mcp-auth's own command line: a renamed subcommand or flag fails here rather
    /// than in front of a user.
    #[test]
    fn every_suggested_command_parses_with_the_cli() {
        let all = next_step::every_command();
        assert!(all.len() > 20, "{all:?}");
        for command in all {
            let argv = words(&command);
            assert_eq!(argv[0], "mcp-auth", "{command}");
            if let Err(e) = parses(&argv) {
                panic!("`{command}` does not parse with mcp-auth's command line:\n{e}");
            }
        }
        // The check can fail: a flag or subcommand that does not exist is refused.
        assert!(parses(&words("mcp-auth reload --no-such-flag")).is_err());
        assert!(parses(&words("mcp-auth approve <REQUEST> --sometimes")).is_err());
        assert!(parses(&words("mcp-auth forget-clients <grant> <program>")).is_err());
    }

    /// The choices shown for a waiting question are the approve commands, one per answer.
    #[test]
    fn the_approve_choices_are_commands_that_parse() {
        let choices = next_step::approve_choices("7");
        for choice in choices
            .trim_start_matches("mcp-auth approve 7 ")
            .split(" | ")
        {
            parses(&words(&format!("mcp-auth approve 7 {choice}"))).unwrap();
        }
    }
}
