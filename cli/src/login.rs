//! `mcp-auth login`: asks the daemon to log in, shows the URL and waits with progress.

use std::io::{IsTerminal, Write};
use std::time::Instant;

use mcp_authd_ipc::methods::{GrantInfo, LOGIN, LOGIN_PENDING, LoginParams, LoginPending};
use mcp_authd_ipc::{Client, ClientError};

#[derive(clap::Args)]
pub struct Args {
    /// The MCP server URL, e.g. https://mcp.example.com/mcp
    pub server: String,
    /// Scope to request (repeat, or space-separate); default: what the server asks for
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Do not open a browser; open the printed URL yourself
    #[arg(long)]
    pub no_browser: bool,
    /// Seconds to wait for the browser login [default: the daemon's login_timeout_secs]
    #[arg(long)]
    pub timeout: Option<u64>,
}

pub async fn run(client: &mut Client, args: Args, json: bool) -> Result<(), ClientError> {
    let params = LoginParams {
        server: args.server.clone(),
        scopes: crate::scope_args(&args.scopes),
        open_browser: Some(!args.no_browser),
        timeout_secs: args.timeout,
    };
    eprintln!("Logging in to {} …", args.server);
    let started = Instant::now();
    let progress = std::sync::Arc::new(std::sync::Mutex::new(None::<u64>));
    let ticker = spawn_ticker(progress.clone(), started);
    let result: Result<GrantInfo, ClientError> = client
        .call_with_notifications(LOGIN, &params, |n| {
            if n.method != LOGIN_PENDING {
                return;
            }
            if let Ok(p) = serde_json::from_value::<LoginPending>(n.params) {
                let how = if p.browser_opened {
                    "Your browser should open; if it does not, open"
                } else {
                    "Open"
                };
                eprintln!("{how} this URL to log in:\n\n  {}\n", p.authorization_url);
                if let Ok(mut g) = progress.lock() {
                    *g = Some(p.timeout_secs);
                }
            }
        })
        .await;
    ticker.abort();
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[2K");
    }
    let grant = result?;
    if json {
        crate::output::print_json(&grant);
    } else {
        let scopes = if grant.scopes.is_empty() {
            "(none)".to_string()
        } else {
            grant.scopes.join(" ")
        };
        println!(
            "Logged in to {} in {}s (grant {}, scopes: {})",
            grant.server,
            started.elapsed().as_secs(),
            grant.id,
            scopes
        );
        if !grant.has_refresh_token {
            println!(
                "Note: the authorization server issued no refresh token; you will have to log in again when the token expires."
            );
        }
    }
    Ok(())
}

/// Shows `waiting… 12s / 300s` on a terminal while the browser login is pending.
fn spawn_ticker(
    progress: std::sync::Arc<std::sync::Mutex<Option<u64>>>,
    started: Instant,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        const SPIN: [char; 4] = ['|', '/', '-', '\\'];
        let mut i = 0;
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            let Some(timeout) = progress.lock().ok().and_then(|g| *g) else {
                continue;
            };
            i += 1;
            eprint!(
                "\r{} waiting for the browser login… {}s / {}s",
                SPIN[i % 4],
                started.elapsed().as_secs(),
                timeout
            );
            let _ = std::io::stderr().flush();
        }
    })
}
