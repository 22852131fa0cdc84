//! Opening the authorization URL: `$MCP_AUTHD_BROWSER` when set, else the platform's
//! default browser. Never through a shell, and only http(s) URLs (the authorization
//! endpoint passed the transport policy at discovery).

use url::Url;

/// Environment variable naming a program to run with the URL as its last argument.
pub const BROWSER_ENV: &str = "MCP_AUTHD_BROWSER";

/// Starts a browser on `url`; `false` when none could be started (the URL is shown to the
/// user anyway).
pub async fn open(url: &str) -> bool {
    match Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "https" | "http") => {}
        _ => {
            tracing::warn!("not opening the authorization URL: only http(s) URLs are opened");
            return false;
        }
    }
    if let Some(command) = std::env::var_os(BROWSER_ENV).filter(|c| !c.is_empty()) {
        let command = command.to_string_lossy().into_owned();
        let mut words = command.split_whitespace();
        let Some(program) = words.next() else {
            return false;
        };
        let spawned = tokio::process::Command::new(program)
            .args(words)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(false)
            .spawn();
        return match spawned {
            Ok(mut child) => {
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                true
            }
            Err(e) => {
                tracing::warn!("cannot run {BROWSER_ENV} program `{program}`: {e}");
                false
            }
        };
    }
    let url = url.to_string();
    let opened = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::task::spawn_blocking(move || webbrowser::open(&url)),
    )
    .await;
    match opened {
        Ok(Ok(Ok(()))) => true,
        _ => {
            tracing::info!("no browser could be opened; the user must open the URL by hand");
            false
        }
    }
}
