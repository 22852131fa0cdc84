//! The one HTTP client every outbound request goes through: no redirects followed, bounded
//! time, bounded body size.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mcp_authd_ipc::outbound;
use mcp_authd_ipc::transport::check_url;

use reqwest::{Response, StatusCode, header};
use serde::de::DeserializeOwned;
use url::Url;

use super::OAuthError;

/// The setting a certificate error points to.
const CA_SETTING: &str = "ca_file (in mcp-authd's config.toml)";

/// Largest response body read from any server.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Clone)]
pub struct Http {
    client: reqwest::Client,
}

/// A response whose body has been read (up to the cap).
pub struct Body {
    pub url: String,
    pub status: StatusCode,
    pub headers: header::HeaderMap,
    pub bytes: Vec<u8>,
}

impl Body {
    /// Decodes the body as JSON, naming the server and what it sent otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, OAuthError> {
        serde_json::from_slice(&self.bytes).map_err(|e| OAuthError::BadResponse {
            url: self.url.clone(),
            detail: format!(
                "HTTP {} with a body that is not the expected JSON ({e})",
                self.status.as_u16()
            ),
        })
    }
}

impl Http {
    /// Proxies come from the environment (loopback always direct); certificates are checked
    /// against the OS trust store plus `ca_file`.
    pub fn new(ca_file: Option<&Path>) -> anyhow::Result<Http> {
        let builder = outbound::configure(
            reqwest::Client::builder(),
            ca_file.map(|path| outbound::CaFile {
                path,
                setting: CA_SETTING,
            }),
        )?;
        let client = builder
            // A redirect could move a token request to another host: never follow one.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("mcp-authd/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Http { client })
    }

    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// Sends a request and reads its body, failing past [`MAX_BODY_BYTES`].
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Body, OAuthError> {
        let request = request.build().map_err(|e| OAuthError::Transport {
            url: String::new(),
            reason: e.to_string(),
        })?;
        let url = request.url().to_string();
        let response = self
            .client
            .execute(request)
            .await
            .map_err(|e| transport(&url, &e))?;
        read_body(url, response).await
    }

    pub async fn get(&self, url: &str) -> Result<Body, OAuthError> {
        self.send(
            self.client
                .get(url)
                .header(header::ACCEPT, "application/json"),
        )
        .await
    }
}

async fn read_body(url: String, mut response: Response) -> Result<Body, OAuthError> {
    let status = response.status();
    let headers = response.headers().clone();
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(too_large(&url));
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transport(&url, &e))? {
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large(&url));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Body {
        url,
        status,
        headers,
        bytes,
    })
}

fn too_large(url: &str) -> OAuthError {
    OAuthError::Transport {
        url: url.to_string(),
        reason: format!("response larger than {MAX_BODY_BYTES} bytes"),
    }
}

fn transport(url: &str, e: &reqwest::Error) -> OAuthError {
    let host = Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default();
    let reason = if let Some(problem) = outbound::certificate_problem(e, &host, CA_SETTING) {
        problem
    } else if e.is_timeout() {
        "no answer in time".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        // reqwest's Display names the URL, which is never a secret here (tokens go in
        // headers and bodies only); keep it for the cause chain.
        let mut reason = e.to_string();
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            reason = format!("{reason}: {s}");
            source = s.source();
        }
        reason
    };
    OAuthError::Transport {
        url: url.to_string(),
        reason,
    }
}

/// The transport rules for one operation (a login, a refresh, a revocation, a challenge)
/// on one MCP server: every URL it fetches or sends credentials to goes through
/// [`UrlPolicy::check`], i.e. through [`mcp_authd_ipc::transport::check_url`].
#[derive(Debug)]
pub struct UrlPolicy {
    server_url: String,
    allow_insecure_http: bool,
    warned: AtomicBool,
}

impl UrlPolicy {
    /// `allow_insecure_http` comes from the server's `[servers."…"]` entry.
    pub fn new(server_url: &str, allow_insecure_http: bool) -> UrlPolicy {
        UrlPolicy {
            server_url: server_url.to_string(),
            allow_insecure_http,
            warned: AtomicBool::new(false),
        }
    }

    /// Checks `raw` (the `what` of this server, named by `named_by`: the MCP server for its
    /// metadata and issuer, the issuer for its endpoints). Plain http let through by
    /// `allow_insecure_http` is logged as a warning, once per operation.
    pub fn check(&self, what: &str, raw: &str, named_by: Option<&str>) -> Result<Url, OAuthError> {
        let checked = check_url(
            what,
            raw,
            named_by,
            self.allow_insecure_http,
            &self.server_url,
        )
        .map_err(|e| OAuthError::Untrusted(e.to_string()))?;
        if checked.insecure && !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                server = %self.server_url,
                "plain http to {} ({what}) because allow_insecure_http = true: tokens and codes for this server travel unencrypted",
                super::printable(raw, 200)
            );
        }
        Ok(checked.url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_checks_and_marks_insecure_urls() {
        let strict = UrlPolicy::new("http://lab.example/mcp", false);
        assert!(
            strict
                .check("token endpoint", "https://as.example/token", None)
                .is_ok()
        );
        assert!(
            strict
                .check("token endpoint", "http://127.0.0.1:8080/token", None)
                .is_ok()
        );
        let e = strict
            .check("token endpoint", "http://as.example/token", None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("http://as.example/token")
                && e.contains("allow_insecure_http")
                && e.contains("[servers.\"http://lab.example/mcp\"]"),
            "{e}"
        );
        let lab = UrlPolicy::new("http://lab.example/mcp", true);
        assert!(
            lab.check("token endpoint", "http://as.example/token", None)
                .is_ok()
        );
        assert!(
            lab.check(
                "token endpoint",
                "http://127.0.0.1/token",
                Some("http://as.example")
            )
            .is_err(),
            "allow_insecure_http does not let a remote issuer name a loopback endpoint"
        );
    }
}
