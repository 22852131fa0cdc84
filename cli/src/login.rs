//! `mcp-auth login`: asks the daemon to log in, shows the URL and waits with progress.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use std::path::{Path, PathBuf};

use mcp_authd_ipc::methods::{
    GrantInfo, GrantType, LOGIN, LOGIN_PASTE, LOGIN_PENDING, LoginFlow, LoginParams,
    LoginPasteParams, LoginPasteResult, LoginPending,
};
use mcp_authd_ipc::{Client, ClientError};

#[derive(clap::Args)]
pub struct Args {
    /// The MCP server URL, e.g. https://mcp.example.com/mcp
    pub server: String,
    /// Scope to request (repeat, or space-separate); default: what the server asks for
    #[arg(long = "scope", value_parser = crate::scope_value)]
    pub scopes: Vec<String>,
    /// Do not open a browser; open the printed URL yourself
    #[arg(long)]
    pub no_browser: bool,
    /// Seconds to wait for the login [default: the daemon's login_timeout_secs]
    #[arg(long)]
    pub timeout: Option<u64>,
    /// Device login (RFC 8628): enter a code on any device; the default in a remote
    /// session without a display when the server offers it
    #[arg(long, conflicts_with_all = ["manual", "browser"])]
    pub device: bool,
    /// Open the printed URL on any machine, then paste back the URL the browser ended on
    #[arg(long, conflicts_with = "browser")]
    pub manual: bool,
    /// The browser login with the loopback redirect, even in a remote session
    #[arg(long)]
    pub browser: bool,
    /// Log in as this account of the server (e.g. work, personal): only its grant is
    /// created or replaced; other accounts keep theirs [default: the default account]
    #[arg(long, value_name = "NAME", value_parser = crate::account_arg)]
    pub account: Option<String>,
    /// Ask the authorization server to pre-fill this user (OpenID Connect login_hint)
    /// [default: the account's last hint, else --account when it is an email]
    #[arg(long, value_name = "EMAIL")]
    pub login_hint: Option<String>,
    #[command(flatten)]
    pub callback: Callback,
}

/// A fixed redirect URI for the login, for authorization servers that accept only the one
/// registered with them (mcp-remote's port argument, `--host` and `--callback-path`).
#[derive(clap::Args, Clone, Default)]
pub struct Callback {
    /// Listen for the login redirect on this port only (http://127.0.0.1:PORT/PATH);
    /// a port in use fails the login instead of moving [default: the config's redirect_uri, else any free port]
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub callback_port: Option<u16>,
    /// The host of that redirect URI
    #[arg(long, value_name = "HOST", requires = "callback_port", value_parser = ["127.0.0.1", "localhost", "::1"])]
    pub callback_host: Option<String>,
    /// The path of that redirect URI [default: /callback for a pre-registered client;
    /// a dynamic registration's is /callback/<16 hex digits of the issuer>]
    #[arg(long, value_name = "PATH", requires = "callback_port", value_parser = callback_path)]
    pub callback_path: Option<String>,
}

impl Callback {
    /// The redirect URI the flags give, if any.
    pub fn redirect_uri(&self) -> Option<String> {
        let port = self.callback_port?;
        let host = match self.callback_host.as_deref() {
            Some("::1") => "[::1]",
            Some(h) => h,
            None => "127.0.0.1",
        };
        // Without --callback-path the daemon chooses the path: /callback for a client
        // registered by hand, the authorization server's own for a dynamic registration.
        let path = self.callback_path.as_deref().unwrap_or("");
        Some(format!("http://{host}:{port}{path}"))
    }
}

fn callback_path(path: &str) -> Result<String, String> {
    let fine = path.starts_with('/')
        && path
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/-._~".contains(c));
    if fine {
        Ok(path.to_string())
    } else {
        Err(
            "give a path such as /callback: a `/` then letters, digits, `-`, `.`, `_`, `~` or `/`"
                .into(),
        )
    }
}

/// What makes a session count as remote (any of them set and not empty).
const REMOTE_SESSION_VARS: [&str; 3] = ["SSH_CONNECTION", "SSH_CLIENT", "SSH_TTY"];
/// What makes a session count as having a display.
const DISPLAY_VARS: [&str; 2] = ["DISPLAY", "WAYLAND_DISPLAY"];

/// A remote session without a display: no browser here can reach the user, so the
/// device login is chosen when the server offers one. Decided from the environment of
/// `mcp-auth` (the daemon's is a service's): an SSH session (`SSH_CONNECTION`,
/// `SSH_CLIENT` or `SSH_TTY`) with neither `DISPLAY` nor `WAYLAND_DISPLAY` (X11
/// forwarding, or a desktop session, has one).
fn remote_without_display(var: impl Fn(&str) -> Option<String>) -> bool {
    let set = |name: &&str| var(name).is_some_and(|v| !v.is_empty());
    REMOTE_SESSION_VARS.iter().any(set) && !DISPLAY_VARS.iter().any(set)
}

fn flow(args: &Args) -> Option<LoginFlow> {
    if args.device {
        Some(LoginFlow::Device)
    } else if args.manual {
        Some(LoginFlow::Manual)
    } else if args.browser {
        Some(LoginFlow::Browser)
    } else if remote_without_display(|name| std::env::var(name).ok()) {
        Some(LoginFlow::DeviceIfSupported)
    } else {
        None
    }
}

pub async fn run(
    client: &mut Client,
    socket: &Path,
    args: Args,
    json: bool,
) -> Result<(), ClientError> {
    let params = LoginParams {
        server: args.server.clone(),
        scopes: crate::scope_args(&args.scopes),
        open_browser: Some(!args.no_browser),
        timeout_secs: args.timeout,
        flow: flow(&args),
        account: args.account.clone(),
        login_hint: args.login_hint.clone(),
        redirect_uri: args.callback.redirect_uri(),
    };
    match &args.account {
        Some(account) => eprintln!("Logging in to {} as account {account} …", args.server),
        None => eprintln!("Logging in to {} …", args.server),
    }
    // Plain http to another host gets this far only when the daemon's config allows it.
    let warning = crate::plain_http_warning(&args.server, "the login and the tokens");
    let warned = std::sync::atomic::AtomicBool::new(false);
    let warn_insecure = || {
        if let Some(w) = &warning
            && !warned.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            eprintln!("{w}");
        }
    };
    let started = Instant::now();
    let terminal = std::io::stderr().is_terminal();
    let waiting = Arc::new(Mutex::new(None::<Waiting>));
    let progress = spawn_progress(waiting.clone(), terminal);
    let mut paster: Option<tokio::task::JoinHandle<()>> = None;
    let result: Result<GrantInfo, ClientError> = client
        .call_with_notifications(LOGIN, &params, |n| {
            if n.method != LOGIN_PENDING {
                return;
            }
            let Ok(p) = serde_json::from_value::<LoginPending>(n.params) else {
                return;
            };
            warn_insecure();
            let flow = p.flow.unwrap_or_default();
            match flow {
                LoginFlow::Device => show_device_code(&p),
                LoginFlow::Manual => {
                    show_manual(&p);
                    if paster.is_none() {
                        paster = Some(spawn_paster(
                            socket.to_path_buf(),
                            p.server.clone(),
                            p.account.clone(),
                        ));
                    }
                }
                _ => {
                    let how = if p.browser_opened {
                        "Your browser should open; if it does not, open"
                    } else {
                        "Open"
                    };
                    eprintln!("{how} this URL to log in:\n\n  {}\n", p.authorization_url);
                }
            }
            // A manual login reads what the user types on this terminal: no spinner
            // drawing over it.
            if flow != LoginFlow::Manual
                && let Ok(mut w) = waiting.lock()
            {
                *w = Some(Waiting {
                    since: Instant::now(),
                    timeout_secs: p.timeout_secs,
                    device: flow == LoginFlow::Device,
                });
            }
        })
        .await;
    progress.abort();
    if let Some(paster) = paster {
        paster.abort();
    }
    if terminal {
        eprint!("\r\x1b[2K");
    }
    let grant = result?;
    warn_insecure();
    if json {
        crate::output::print_json(&grant);
    } else {
        let scopes = if grant.scopes.is_empty() {
            "(none)".to_string()
        } else {
            grant.scopes.join(" ")
        };
        let how = match &grant.grant_type {
            GrantType::AuthorizationCode => String::new(),
            other => format!(" with the {other} grant"),
        };
        let account = match (&grant.account_name, &grant.account) {
            (Some(name), Some(who)) => format!(" as account {name} ({who})"),
            (Some(name), None) => format!(" as account {name}"),
            (None, Some(who)) => format!(" as {who}"),
            (None, None) => String::new(),
        };
        println!(
            "Logged in to {}{account}{how} in {}s (grant {}, scopes: {})",
            grant.server,
            started.elapsed().as_secs(),
            grant.id,
            scopes
        );
        if !how.is_empty() {
            println!(
                "Its tokens are renewed by running the same grant again; no browser is needed."
            );
        } else if let Some(n) = &grant.no_refresh_token {
            println!("No refresh token: {}.", n.reason);
            println!(
                "{}",
                crate::grants::login_again(&grant, n, crate::output::now())
            );
            if let Some(fix) = &n.fix {
                println!("May fix it: {fix}");
            }
        }
    }
    Ok(())
}

/// Where and how to enter the device login's code.
fn show_device_code(p: &LoginPending) {
    let uri = p
        .verification_uri
        .as_deref()
        .unwrap_or(&p.authorization_url);
    eprintln!(
        "To log in, open this page on any device:\n\n  {uri}\n\nand enter the code:\n\n  {}\n",
        p.user_code.as_deref().unwrap_or("(none)")
    );
    if let Some(complete) = &p.verification_uri_complete {
        eprintln!("Or open this URL, which has the code filled in:\n\n  {complete}\n");
    }
}

/// The URL to open anywhere, and what to paste back.
fn show_manual(p: &LoginPending) {
    let redirect = reqwest::Url::parse(&p.authorization_url)
        .ok()
        .and_then(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "redirect_uri")
                .map(|(_, v)| v.into_owned())
        });
    eprintln!(
        "Open this URL in a browser on any machine and log in:\n\n  {}\n",
        p.authorization_url
    );
    if let Some(redirect) = redirect {
        eprintln!(
            "The browser then goes to an address starting with {redirect}; on another machine that page does not load, which is expected."
        );
    }
    eprintln!(
        "Copy that address from the browser's address bar, paste it here and press Enter (only the code works too, where the server sends no `iss`):"
    );
}

/// Reads pasted lines from stdin and hands each to the daemon (`login.paste`) over a
/// second connection (the first one waits for the login) until one is taken.
fn spawn_paster(
    socket: PathBuf,
    server: String,
    account: Option<String>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.trim().is_empty() {
                continue;
            }
            let params = LoginPasteParams {
                server: server.clone(),
                response: line,
                account: account.clone(),
            };
            let sent: Result<LoginPasteResult, ClientError> = async {
                let mut client = Client::connect(&socket).await?;
                client.call(LOGIN_PASTE, &params).await
            }
            .await;
            match sent {
                Ok(_) => {
                    eprintln!("Received; finishing the login …");
                    return;
                }
                Err(ClientError::Rpc(e)) => eprintln!("Not taken: {}", e.message),
                Err(e) => eprintln!("Not taken: {e}"),
            }
        }
    })
}

/// The login the daemon is waiting for, once it has sent the URL.
#[derive(Clone, Copy)]
struct Waiting {
    since: Instant,
    timeout_secs: u64,
    /// A device login: the user approves elsewhere.
    device: bool,
}

/// Plain progress lines off a terminal come this far apart (a log stays readable).
const PLAIN_EVERY: Duration = Duration::from_secs(10);
const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

/// Shows the wait on stderr: on a terminal a spinner line redrawn in place; elsewhere a
/// plain line every [`PLAIN_EVERY`], never a control character.
fn spawn_progress(
    waiting: Arc<Mutex<Option<Waiting>>>,
    terminal: bool,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let tick = Duration::from_millis(if terminal { 100 } else { 250 });
        let mut frame = 0;
        let mut next_plain = PLAIN_EVERY.as_secs();
        loop {
            tokio::time::sleep(tick).await;
            let Some(w) = waiting.lock().ok().and_then(|g| *g) else {
                continue;
            };
            let elapsed = w.since.elapsed().as_secs();
            if terminal {
                frame += 1;
                eprint!(
                    "\r\x1b[2K{}",
                    progress_line(elapsed, w.timeout_secs, w.device, Some(frame))
                );
                let _ = std::io::stderr().flush();
            } else if elapsed >= next_plain {
                eprintln!("{}", progress_line(elapsed, w.timeout_secs, w.device, None));
                next_plain = elapsed + PLAIN_EVERY.as_secs();
            }
        }
    })
}

/// One progress line; `frame` is the spinner's step on a terminal, `None` elsewhere.
fn progress_line(
    elapsed_secs: u64,
    timeout_secs: u64,
    device: bool,
    frame: Option<usize>,
) -> String {
    let times = format!(
        "{} of {}",
        crate::output::span(elapsed_secs),
        crate::output::span(timeout_secs)
    );
    let what = if device {
        "the device login"
    } else {
        "the browser login"
    };
    match frame {
        Some(f) => format!(
            "{} waiting for {what}… {times} (Ctrl-C to cancel)",
            SPINNER[f % SPINNER.len()]
        ),
        None => format!("still waiting for {what}: {times}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_means_ssh_without_a_display() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(remote_without_display(env(&[(
            "SSH_CONNECTION",
            "10.0.0.2 5 10.0.0.1 22"
        )])));
        assert!(remote_without_display(env(&[("SSH_TTY", "/dev/pts/3")])));
        assert!(!remote_without_display(env(&[
            ("SSH_CONNECTION", "a"),
            ("DISPLAY", "localhost:10.0")
        ])));
        assert!(!remote_without_display(env(&[
            ("SSH_CLIENT", "a"),
            ("WAYLAND_DISPLAY", "wayland-0")
        ])));
        assert!(!remote_without_display(env(&[("SSH_CONNECTION", "")])));
        assert!(!remote_without_display(env(&[])));
    }

    #[test]
    fn off_a_terminal_the_line_is_plain_text() {
        let line = progress_line(20, 300, false, None);
        assert_eq!(line, "still waiting for the browser login: 20 s of 5 min");
        assert_eq!(
            progress_line(20, 300, true, None),
            "still waiting for the device login: 20 s of 5 min"
        );
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    #[test]
    fn on_a_terminal_the_spinner_turns() {
        let a = progress_line(12, 300, false, Some(1));
        let b = progress_line(12, 300, false, Some(2));
        assert_ne!(a, b);
        assert!(
            a.contains("12 s of 5 min") && a.contains("Ctrl-C to cancel"),
            "{a}"
        );
    }
}
