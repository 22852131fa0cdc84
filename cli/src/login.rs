//! `mcp-auth login`: asks the daemon to log in, shows the URL and waits with progress.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::{GrantInfo, LOGIN, LOGIN_PENDING, LoginParams, LoginPending};
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
    /// Seconds to wait for the browser login [default: the daemon's login_timeout_secs]
    #[arg(long)]
    pub timeout: Option<u64>,
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

pub async fn run(client: &mut Client, args: Args, json: bool) -> Result<(), ClientError> {
    let params = LoginParams {
        server: args.server.clone(),
        scopes: crate::scope_args(&args.scopes),
        open_browser: Some(!args.no_browser),
        timeout_secs: args.timeout,
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
    let result: Result<GrantInfo, ClientError> = client
        .call_with_notifications(LOGIN, &params, |n| {
            if n.method != LOGIN_PENDING {
                return;
            }
            if let Ok(p) = serde_json::from_value::<LoginPending>(n.params) {
                warn_insecure();
                let how = if p.browser_opened {
                    "Your browser should open; if it does not, open"
                } else {
                    "Open"
                };
                eprintln!("{how} this URL to log in:\n\n  {}\n", p.authorization_url);
                if let Ok(mut w) = waiting.lock() {
                    *w = Some(Waiting {
                        since: Instant::now(),
                        timeout_secs: p.timeout_secs,
                    });
                }
            }
        })
        .await;
    progress.abort();
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
        let account = match (&grant.account_name, &grant.account) {
            (Some(name), Some(who)) => format!(" as account {name} ({who})"),
            (Some(name), None) => format!(" as account {name}"),
            (None, Some(who)) => format!(" as {who}"),
            (None, None) => String::new(),
        };
        println!(
            "Logged in to {}{account} in {}s (grant {}, scopes: {})",
            grant.server,
            started.elapsed().as_secs(),
            grant.id,
            scopes
        );
        if let Some(n) = &grant.no_refresh_token {
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

/// The browser login the daemon is waiting for, once it has sent the URL.
#[derive(Clone, Copy)]
struct Waiting {
    since: Instant,
    timeout_secs: u64,
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
                    progress_line(elapsed, w.timeout_secs, Some(frame))
                );
                let _ = std::io::stderr().flush();
            } else if elapsed >= next_plain {
                eprintln!("{}", progress_line(elapsed, w.timeout_secs, None));
                next_plain = elapsed + PLAIN_EVERY.as_secs();
            }
        }
    })
}

/// One progress line; `frame` is the spinner's step on a terminal, `None` elsewhere.
fn progress_line(elapsed_secs: u64, timeout_secs: u64, frame: Option<usize>) -> String {
    let times = format!(
        "{} of {}",
        crate::output::span(elapsed_secs),
        crate::output::span(timeout_secs)
    );
    match frame {
        Some(f) => format!(
            "{} waiting for the browser login… {times} (Ctrl-C to cancel)",
            SPINNER[f % SPINNER.len()]
        ),
        None => format!("still waiting for the browser login: {times}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_a_terminal_the_line_is_plain_text() {
        let line = progress_line(20, 300, None);
        assert_eq!(line, "still waiting for the browser login: 20 s of 5 min");
        assert!(!line.chars().any(char::is_control), "{line:?}");
    }

    #[test]
    fn on_a_terminal_the_spinner_turns() {
        let a = progress_line(12, 300, Some(1));
        let b = progress_line(12, 300, Some(2));
        assert_ne!(a, b);
        assert!(
            a.contains("12 s of 5 min") && a.contains("Ctrl-C to cancel"),
            "{a}"
        );
    }
}
