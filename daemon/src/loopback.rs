//! The RFC 8252 loopback redirect: a one-shot axum listener on the loopback interface that
//! receives the authorization response from the user's browser.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use mcp_authd_ipc::next_step::LOGIN_ANY_SERVER;
use serde::Deserialize;
use tokio::sync::oneshot;

use crate::secret::Secret;

/// The parameters of the authorization response (RFC 6749 §4.1.2, RFC 9207).
#[derive(Debug, Deserialize)]
pub struct AuthorizationResponse {
    pub code: Option<Secret>,
    pub state: Option<String>,
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoopbackError {
    #[error("cannot listen on {host}:{port} for the login redirect: {source}")]
    Bind {
        host: String,
        port: u16,
        source: std::io::Error,
    },
    #[error("the browser login was not completed within {0} s")]
    Timeout(u64),
}

/// Why an authorization response was not taken; the login keeps waiting for the real one.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error(
        "this authorization response is not the one this login waits for (its `state` differs or is missing)"
    )]
    WrongState,
    #[error("this login already received its authorization response")]
    AlreadyUsed,
}

struct Shared {
    expected_state: String,
    deliver: Mutex<Option<oneshot::Sender<AuthorizationResponse>>>,
}

impl Shared {
    /// The one check every authorization response passes, whether the browser brought it
    /// to the listener or the user pasted it: our `state`, and only once.
    fn accept(&self, response: AuthorizationResponse) -> Result<(), Refused> {
        // A response without our state is someone else's (or a forged one): refuse it,
        // keep waiting for the real one.
        if response.state.as_deref() != Some(self.expected_state.as_str()) {
            tracing::warn!(
                "login redirect received a response with a wrong or missing state; ignored"
            );
            return Err(Refused::WrongState);
        }
        let deliver = self
            .deliver
            .lock()
            .ok()
            .and_then(|mut d| d.take())
            .ok_or(Refused::AlreadyUsed)?;
        let _ = deliver.send(response);
        Ok(())
    }
}

/// Another door into the same listener: authorization responses handed over by the
/// user (`login.paste`) go through the same checks as the browser's redirect.
#[derive(Clone)]
pub struct Inbox {
    shared: Arc<Shared>,
    redirect_uri: String,
    /// The authorization server adds `iss` to its responses (RFC 9207): a bare code,
    /// which cannot carry it, is not enough.
    iss_promised: bool,
}

/// Why a pasted value was not taken; the login keeps waiting.
#[derive(Debug, thiserror::Error)]
pub enum PasteError {
    #[error("nothing was pasted")]
    Empty,
    #[error("that is not the address the browser ended on: it must start with {0}")]
    NotTheRedirect(String),
    #[error("the pasted response names `{0}` twice")]
    Repeated(&'static str),
    #[error(
        "this authorization server adds `iss` to its response: paste the whole URL the browser ended on, not only the code"
    )]
    NeedsTheUrl,
    #[error("{0}")]
    Refused(#[from] Refused),
}

impl Inbox {
    /// Takes what the user pasted: the URL the browser ended on (it must be our redirect
    /// URI), its query string, or only the code.
    pub fn deliver_pasted(&self, pasted: &str) -> Result<(), PasteError> {
        let pasted = pasted.trim();
        if pasted.is_empty() {
            return Err(PasteError::Empty);
        }
        let query = match url::Url::parse(pasted) {
            Ok(url) if url.scheme() == "http" || url.scheme() == "https" => {
                let mut ended_on = url.clone();
                ended_on.set_query(None);
                ended_on.set_fragment(None);
                if ended_on.as_str() != self.redirect_uri {
                    return Err(PasteError::NotTheRedirect(self.redirect_uri.clone()));
                }
                url.query().unwrap_or_default().to_string()
            }
            _ if pasted.contains('=') => pasted.trim_start_matches('?').to_string(),
            // Only the code: nothing to compare a state with, and the user's own terminal
            // is the channel (the socket admits only this user), so it stands for the
            // response to this login's request.
            _ if self.iss_promised => return Err(PasteError::NeedsTheUrl),
            _ => {
                let response = AuthorizationResponse {
                    code: Some(Secret::new(pasted)),
                    state: Some(self.shared.expected_state.clone()),
                    iss: None,
                    error: None,
                    error_description: None,
                };
                return Ok(self.shared.accept(response)?);
            }
        };
        let response = parse_query(&query)?;
        Ok(self.shared.accept(response)?)
    }
}

/// An authorization response from a query string, each parameter at most once (as the
/// listener's `Query` extractor insists too).
fn parse_query(query: &str) -> Result<AuthorizationResponse, PasteError> {
    let mut response = AuthorizationResponse {
        code: None,
        state: None,
        iss: None,
        error: None,
        error_description: None,
    };
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        let (slot, name): (&mut Option<String>, &'static str) = match name.as_ref() {
            "state" => (&mut response.state, "state"),
            "iss" => (&mut response.iss, "iss"),
            "error" => (&mut response.error, "error"),
            "error_description" => (&mut response.error_description, "error_description"),
            "code" => {
                if response.code.replace(Secret::new(value)).is_some() {
                    return Err(PasteError::Repeated("code"));
                }
                continue;
            }
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(PasteError::Repeated(name));
        }
    }
    Ok(response)
}

/// A bound listener waiting for exactly one authorization response carrying our `state`.
pub struct LoopbackRedirect {
    pub redirect_uri: String,
    shared: Arc<Shared>,
    received: oneshot::Receiver<AuthorizationResponse>,
    stop: Option<tokio::sync::watch::Sender<()>>,
}

/// The host of a redirect URI, kept as the user or the registration wrote it: an
/// authorization server compares redirect URIs as strings, so `localhost` registered means
/// `localhost` sent (RFC 8252 §7.3 prefers the IP literal; §8.3 allows the name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedirectHost {
    /// An IP literal on loopback (`127.0.0.1`, `::1`).
    Ip(IpAddr),
    /// `localhost`: listened for on 127.0.0.1 and, where it can be had, on the same port of
    /// ::1, since a browser may resolve the name to either.
    Localhost,
}

impl RedirectHost {
    /// The default: `127.0.0.1` (no name resolution, no IPv6 ambiguity).
    pub const DEFAULT: RedirectHost = RedirectHost::Ip(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    fn in_uri(&self) -> String {
        match self {
            RedirectHost::Ip(IpAddr::V6(ip)) => format!("[{ip}]"),
            RedirectHost::Ip(ip) => ip.to_string(),
            RedirectHost::Localhost => "localhost".into(),
        }
    }

    fn first_address(&self) -> IpAddr {
        match self {
            RedirectHost::Ip(ip) => *ip,
            RedirectHost::Localhost => IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        }
    }
}

impl LoopbackRedirect {
    /// Binds `host`:`port` (0 for any free port) and serves `path`; the redirect URI names
    /// `host` as given.
    pub async fn bind(
        host: &RedirectHost,
        port: u16,
        path: &str,
        expected_state: &Secret,
    ) -> Result<LoopbackRedirect, LoopbackError> {
        let bind_error = |port, source| LoopbackError::Bind {
            host: host.in_uri(),
            port,
            source,
        };
        let listener = tokio::net::TcpListener::bind((host.first_address(), port))
            .await
            .map_err(|source| bind_error(port, source))?;
        let port = listener
            .local_addr()
            .map_err(|source| bind_error(port, source))?
            .port();
        // For `localhost`, also ::1 on the same port when free; without it the browser
        // falls back to 127.0.0.1.
        let second = match host {
            RedirectHost::Localhost => {
                tokio::net::TcpListener::bind((std::net::Ipv6Addr::LOCALHOST, port))
                    .await
                    .ok()
            }
            RedirectHost::Ip(_) => None,
        };
        let (deliver, received) = oneshot::channel();
        let shared = Arc::new(Shared {
            expected_state: expected_state.expose().to_string(),
            deliver: Mutex::new(Some(deliver)),
        });
        let app = axum::Router::new()
            .route(path, get(callback))
            .fallback(elsewhere)
            .with_state(shared.clone());
        // Dropping the sender (with the LoopbackRedirect) stops every listener.
        let (stop, stopped) = tokio::sync::watch::channel(());
        for listener in std::iter::once(listener).chain(second) {
            let (app, mut stopped) = (app.clone(), stopped.clone());
            tokio::spawn(async move {
                let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                    let _ = stopped.changed().await;
                });
                if let Err(e) = served.await {
                    tracing::warn!("login redirect listener failed: {e}");
                }
            });
        }
        drop(stopped);
        Ok(LoopbackRedirect {
            redirect_uri: format!("http://{}:{port}{path}", host.in_uri()),
            shared,
            received,
            stop: Some(stop),
        })
    }

    /// Where a pasted response enters (see [`Inbox`]); `iss_promised` as the
    /// authorization server's metadata says.
    pub fn inbox(&self, iss_promised: bool) -> Inbox {
        Inbox {
            shared: self.shared.clone(),
            redirect_uri: self.redirect_uri.clone(),
            iss_promised,
        }
    }

    /// Waits for the response; the listener closes when this returns, so the redirect can
    /// be used once only.
    pub async fn wait(mut self, timeout: Duration) -> Result<AuthorizationResponse, LoopbackError> {
        let result = tokio::time::timeout(timeout, &mut self.received).await;
        match result {
            Ok(Ok(response)) => Ok(response),
            _ => Err(LoopbackError::Timeout(timeout.as_secs())),
        }
    }
}

impl Drop for LoopbackRedirect {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn callback(
    State(shared): State<Arc<Shared>>,
    Query(response): Query<AuthorizationResponse>,
) -> (StatusCode, Html<String>) {
    let failed = response.error.is_some() || response.code.is_none();
    match shared.accept(response) {
        Err(Refused::WrongState) => page(
            StatusCode::BAD_REQUEST,
            "This sign-in response is not the one mcp-authd is waiting for",
            &format!("Start the login again from your terminal: {LOGIN_ANY_SERVER}"),
        ),
        Err(Refused::AlreadyUsed) => page(
            StatusCode::BAD_REQUEST,
            "This sign-in response was already used",
            "You can close this tab.",
        ),
        Ok(()) if failed => page(
            StatusCode::OK,
            "Sign-in was not completed",
            "The authorization server refused the login. Your terminal shows the reason; you can close this tab.",
        ),
        Ok(()) => page(
            StatusCode::OK,
            "mcp-authd received your sign-in",
            "You can close this tab and return to your terminal.",
        ),
    }
}

/// A request at another path: with a per-server redirect path, a sign-in response there was
/// sent for another authorization server (a mix-up attempt, RFC 9700 §4.4). Never
/// delivered, whatever state it carries; the login keeps waiting for its own.
async fn elsewhere(uri: axum::http::Uri) -> (StatusCode, Html<String>) {
    tracing::warn!(
        "login redirect received a request at {}, which is not this login's redirect path (a response meant for another authorization server?); ignored",
        crate::oauth::printable(uri.path(), 200)
    );
    page(
        StatusCode::NOT_FOUND,
        "This sign-in response is not for the login mcp-authd is waiting for",
        &format!(
            "It came back for another authorization server. Start the login again from your terminal: {LOGIN_ANY_SERVER}"
        ),
    )
}

fn page(status: StatusCode, title: &str, text: &str) -> (StatusCode, Html<String>) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body style=\"font-family:sans-serif;max-width:36em;margin:4em auto\"><h1>{title}</h1><p>{text}</p></body></html>",
        title = html_escape(title),
        text = html_escape(text)
    );
    (status, Html(body))
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepts_one_response_with_the_right_state_only() {
        let state = Secret::new("st4te");
        let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, "/callback", &state)
            .await
            .unwrap();
        let uri = redirect.redirect_uri.clone();
        let client = reqwest::Client::new();
        let wrong = client
            .get(format!("{uri}?code=c1&state=other"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 400);
        let right = client
            .get(format!("{uri}?code=c2&state=st4te&iss=https%3A%2F%2Fas"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        let got = redirect.wait(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.code.unwrap().expose(), "c2");
        assert_eq!(got.iss.as_deref(), Some("https://as"));
        // The listener is gone after use: a replay cannot reach it.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            client
                .get(format!("{uri}?code=c2&state=st4te"))
                .send()
                .await
                .is_err()
        );
    }

    /// The path is part of the check: a response with the right state at another path (the
    /// redirect URI registered for another authorization server) is never delivered.
    #[tokio::test]
    async fn a_response_at_another_path_is_refused() {
        let state = Secret::new("st4te");
        let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, "/callback/aaaa", &state)
            .await
            .unwrap();
        let other = redirect
            .redirect_uri
            .replace("/callback/aaaa", "/callback/bbbb");
        let client = reqwest::Client::new();
        for uri in [other.clone(), other.replace("/callback/bbbb", "/callback")] {
            let r = client
                .get(format!("{uri}?code=stolen&state=st4te"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 404, "{uri}");
        }
        assert!(matches!(
            redirect.wait(Duration::from_millis(200)).await,
            Err(LoopbackError::Timeout(_))
        ));
    }

    #[tokio::test]
    async fn a_localhost_redirect_uri_stays_localhost_and_answers_there() {
        let state = Secret::new("st4te");
        let redirect = LoopbackRedirect::bind(&RedirectHost::Localhost, 0, "/cb", &state)
            .await
            .unwrap();
        let uri = redirect.redirect_uri.clone();
        assert!(
            uri.starts_with("http://localhost:") && uri.ends_with("/cb"),
            "{uri}"
        );
        // Whichever address the browser resolves the name to.
        let right = reqwest::Client::new()
            .get(format!("{uri}?code=c&state=st4te"))
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200);
        assert_eq!(
            redirect
                .wait(Duration::from_secs(5))
                .await
                .unwrap()
                .code
                .unwrap()
                .expose(),
            "c"
        );
        let v6 =
            LoopbackRedirect::bind(&RedirectHost::Ip("::1".parse().unwrap()), 0, "/cb", &state)
                .await;
        if let Ok(v6) = v6 {
            assert!(
                v6.redirect_uri.starts_with("http://[::1]:"),
                "{}",
                v6.redirect_uri
            );
        }
    }

    #[tokio::test]
    async fn a_pasted_response_passes_the_same_state_check() {
        let state = Secret::new("st4te");
        let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, "/callback", &state)
            .await
            .unwrap();
        let uri = redirect.redirect_uri.clone();
        let inbox = redirect.inbox(true);
        for (pasted, refused) in [
            ("", "nothing was pasted"),
            ("c0de", "paste the whole URL"),
            (
                "https://as.example/callback?code=c&state=st4te",
                "must start with",
            ),
            ("?code=c&state=other", "`state` differs"),
            ("code=a&code=b&state=st4te", "names `code` twice"),
        ] {
            let e = inbox.deliver_pasted(pasted).unwrap_err().to_string();
            assert!(e.contains(refused), "{pasted}: {e}");
        }
        // Only the query, with surrounding blanks, is enough.
        inbox
            .deliver_pasted("  ?code=c2&state=st4te&iss=https%3A%2F%2Fas \n")
            .unwrap();
        let e = inbox
            .deliver_pasted(&format!("{uri}?code=c3&state=st4te"))
            .unwrap_err();
        assert!(e.to_string().contains("already received"), "{e}");
        let got = redirect.wait(Duration::from_secs(5)).await.unwrap();
        assert_eq!(
            (got.code.unwrap().expose(), got.iss.as_deref()),
            ("c2", Some("https://as"))
        );
        // Where the server sends no `iss`, the code alone is the response to our request.
        let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, "/callback", &state)
            .await
            .unwrap();
        redirect.inbox(false).deliver_pasted("c0de").unwrap();
        let got = redirect.wait(Duration::from_secs(5)).await.unwrap();
        assert_eq!(got.code.unwrap().expose(), "c0de");
    }

    #[tokio::test]
    async fn times_out() {
        let redirect =
            LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, "/callback", &Secret::new("s"))
                .await
                .unwrap();
        assert!(matches!(
            redirect.wait(Duration::from_millis(50)).await,
            Err(LoopbackError::Timeout(_))
        ));
    }
}
