//! Browser stand-in for end-to-end tests: `mcp-authd-test-browser <url>`.
//!
//! It plays a user who approves the login: it loads the authorization URL and
//! follows redirects, which ends at the daemon's loopback callback exactly as
//! a real browser would. Redirects are only followed to loopback hosts so that
//! a misbehaving test can never make this tool talk to the outside world.
//!
//! Diagnostics go to stderr only; stdout stays silent. Exit status: 0 if the
//! final response is 2xx, 1 if it is not, 2 on usage or transport errors
//! (including a refused non-loopback redirect).

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Url;
use reqwest::redirect::{Attempt, Policy};
use url::Host;

const MAX_REDIRECTS: usize = 10;
/// A PEM file of CA certificates this browser trusts besides the OS store.
const TRUST_ENV: &str = "MCP_AUTHD_TEST_BROWSER_CA";
/// How much of the final page to show; enough to recognise an error page.
const BODY_PREVIEW_BYTES: usize = 200;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), None) = (args.next(), args.next()) else {
        eprintln!("usage: mcp-authd-test-browser <url>");
        return ExitCode::from(2);
    };
    match visit(&url).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("mcp-authd-test-browser: {message}");
            ExitCode::from(2)
        }
    }
}

/// Loads `url`, reports the final response and returns whether it was 2xx.
async fn visit(url: &str) -> Result<bool, String> {
    let url = Url::parse(url).map_err(|err| format!("invalid URL: {err}"))?;
    if !is_loopback_http(&url) {
        return Err(format!(
            "refusing non-loopback URL host {:?}",
            url.host_str()
        ));
    }
    let mut builder = reqwest::Client::builder()
        .redirect(Policy::custom(follow_loopback_only))
        // A real identity provider (oidc-provider) ties its login and consent steps to
        // cookies it sets along the redirects, as a browser would keep them.
        .cookie_store(true)
        // Loopback traffic must never be routed through an HTTP(S)_PROXY.
        .no_proxy()
        .timeout(Duration::from_secs(30));
    // A test CA the user's browser would trust (tests with a TLS authorization server).
    if let Some(path) = std::env::var_os(TRUST_ENV) {
        let pem = std::fs::read(&path).map_err(|err| format!("cannot read {TRUST_ENV}: {err}"))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| format!("{TRUST_ENV} is not PEM: {err}"))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder
        .build()
        .map_err(|err| format!("cannot build HTTP client: {err}"))?;
    let response = client
        .get(url)
        .send()
        .await
        .map_err(|err| format!("request failed: {}", error_chain(&err.without_url())))?;
    let status = response.status();
    let body = response.bytes().await.map_err(|err| {
        format!(
            "reading the response body failed: {}",
            error_chain(&err.without_url())
        )
    })?;
    let preview = &body[..body.len().min(BODY_PREVIEW_BYTES)];
    eprintln!("final status: {status}");
    eprintln!("body: {}", String::from_utf8_lossy(preview));
    Ok(status.is_success())
}

fn follow_loopback_only(attempt: Attempt<'_>) -> reqwest::redirect::Action {
    if attempt.previous().len() > MAX_REDIRECTS {
        attempt.error("too many redirects")
    } else if !is_loopback_http(attempt.url()) {
        let host = attempt.url().host_str().unwrap_or_default().to_owned();
        attempt.error(format!("refusing redirect to non-loopback host {host:?}"))
    } else {
        attempt.follow()
    }
}

/// `http`/`https` to 127.0.0.0/8, `localhost`, `[::1]`, or a `.test` name that resolves to
/// loopback only (an `/etc/hosts` entry of a test).
fn is_loopback_http(url: &Url) -> bool {
    let loopback_host = match url.host() {
        Some(Host::Domain(domain)) if domain.ends_with(".test") => {
            let port = url.port_or_known_default().unwrap_or(443);
            std::net::ToSocketAddrs::to_socket_addrs(&(domain, port))
                .map(|addrs| addrs.collect::<Vec<_>>())
                .is_ok_and(|addrs| !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()))
        }
        Some(Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    loopback_host && matches!(url.scheme(), "http" | "https")
}

/// reqwest hides the interesting part (e.g. a refused redirect) in the
/// error's sources, so print the whole chain. Callers strip the URL first: it
/// may be a callback URL carrying an authorization code, and the tests scan
/// output for leaked secrets.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
