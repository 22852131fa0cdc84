//! The older HTTP+SSE transport (protocol 2024-11-05): a GET opens an event stream whose
//! `endpoint` event names where to POST; answers come back on that stream, read by a
//! task of their own, so a POST's success is only a receipt.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::text::printable;
use reqwest::header;
use reqwest::{StatusCode, Url};

use super::sse::Events;
use super::{Mode, Session, joined, lock};
use crate::proxy::daemon::Refusal;
use crate::proxy::stdio::log;

/// How a closed stdin waits for HTTP+SSE answers still on their way.
const LEGACY_DRAIN: Duration = Duration::from_secs(10);
/// How long the opened stream has to name its endpoint.
const ENDPOINT_WAIT: Duration = Duration::from_secs(30);
/// Requests (and early answers) tracked at most: a server that never answers, or answers
/// ids nobody sent, cannot grow the sets; past this, the drain at exit waits for fewer.
const MAX_AWAITED: usize = 4096;

/// Why the HTTP+SSE transport could not be opened.
pub(super) enum LegacyError {
    /// The server answered the GET with this status, or without an event stream.
    Refused(StatusCode),
    Failed(String),
}

/// The requests the server took whose answers have not come yet. An answer may come on
/// the stream before its POST's receipt: it waits in `early` for it.
#[derive(Default)]
pub(super) struct Awaited {
    taken: HashSet<String>,
    early: HashSet<String>,
}

impl Awaited {
    /// The server took the request `id` (its JSON text).
    pub(super) fn taken(&mut self, id: String) {
        if !self.early.remove(&id) && self.taken.len() < MAX_AWAITED {
            self.taken.insert(id);
        }
    }

    /// The answer to `id` came.
    pub(super) fn answered(&mut self, id: String) {
        if !self.taken.remove(&id) && self.early.len() < MAX_AWAITED {
            self.early.insert(id);
        }
    }

    fn waiting(&self) -> usize {
        self.taken.len()
    }
}

impl Session {
    /// Opens the HTTP+SSE transport: a GET for the event stream (through the daemon's
    /// challenge on 401/403, as any request), whose first `endpoint` event names where
    /// messages go; the stream is then read in the background for the answers.
    pub(super) async fn open_legacy(self: &Arc<Self>) -> Result<(), LegacyError> {
        let mut token = self.tokens.token().await;
        let mut challenged: Option<StatusCode> = None;
        let response = loop {
            let request = self
                .http
                .get(self.server_url.clone())
                .header(header::ACCEPT, "text/event-stream");
            let request = self
                .common_headers(
                    request,
                    token.as_ref(),
                    None,
                    "GET",
                    self.server_url.as_str(),
                )
                .await;
            let response = request
                .send()
                .await
                .map_err(|e| LegacyError::Failed(format!("cannot reach {}: {e}", self.server)))?;
            let status = response.status();
            if matches!(status.as_u16(), 401 | 403) && challenged != Some(status) {
                challenged = Some(status);
                let refusal = Refusal {
                    status: status.as_u16(),
                    www_authenticate: joined(response.headers(), header::WWW_AUTHENTICATE),
                    body: None,
                    rejected_token: token.take().map(|t| t.value),
                };
                match self.tokens.challenge(refusal).await {
                    Ok(t) => token = Some(t),
                    Err(e) => return Err(LegacyError::Failed(e.to_string())),
                }
                continue;
            }
            if !status.is_success() || !super::is_event_stream(response.headers()) {
                return Err(LegacyError::Refused(status));
            }
            break response;
        };
        let mut events = Events::of(response);
        let endpoint = tokio::time::timeout(ENDPOINT_WAIT, async {
            loop {
                match events.next_event().await {
                    Ok(Some(event)) if event.kind.as_deref() == Some("endpoint") => {
                        return Ok(event.data);
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        return Err("the event stream ended before its endpoint event".into());
                    }
                    Err(e @ super::sse::SseError::Broke(_)) => {
                        return Err(format!("the event stream broke: {e}"));
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        })
        .await
        .map_err(|_| format!("no endpoint event within {} s", ENDPOINT_WAIT.as_secs()))
        .and_then(|r| r)
        .map_err(|why| LegacyError::Failed(format!("{}: {why}", self.server)))?;
        let endpoint = self.legacy_endpoint(endpoint.trim())?;
        self.set_mode(Mode::Legacy { endpoint });
        let session = self.clone();
        let reader = tokio::spawn(async move {
            let why = match session.deliver_events(events, false).await {
                Ok(()) => format!("{} closed the event stream", session.server),
                Err(why) => why,
            };
            log(&format!(
                "{why}; answers can no longer arrive, restart the proxy"
            ));
        });
        *lock(&self.legacy_reader) = Some(reader);
        Ok(())
    }

    /// Where the `endpoint` event says to POST, resolved against the server URL. Only on
    /// the server's own origin: the token goes there.
    fn legacy_endpoint(&self, given: &str) -> Result<Url, LegacyError> {
        let url = self.server_url.join(given).map_err(|e| {
            LegacyError::Failed(format!(
                "{} named an endpoint that is not a URL ({}): {e}",
                self.server,
                printable(given, 200)
            ))
        })?;
        if url.origin() != self.server_url.origin() {
            return Err(LegacyError::Failed(format!(
                "{} named an endpoint on another origin ({}); the token is not sent there",
                self.server,
                printable(url.as_str(), 200)
            )));
        }
        Ok(url)
    }

    pub(super) fn legacy_failure(&self, e: LegacyError) -> String {
        match e {
            LegacyError::Refused(status) => format!(
                "{} refused the HTTP+SSE transport (GET answered HTTP {} without an event stream); try --transport http-only",
                self.server,
                status.as_u16()
            ),
            LegacyError::Failed(why) => why,
        }
    }

    /// Waits (up to [`LEGACY_DRAIN`]) for the HTTP+SSE answers to requests the server has
    /// taken: with that transport they arrive after the POST, and a client that closes
    /// stdin right after its last request still wants the answer.
    pub(super) async fn drain_legacy_answers(&self) {
        let until = tokio::time::Instant::now() + LEGACY_DRAIN;
        loop {
            let waiting = lock(&self.awaited).waiting();
            if waiting == 0 {
                return;
            }
            if tokio::time::Instant::now() >= until {
                log(&format!(
                    "stdin closed; {waiting} answer(s) from {} did not come within {} s",
                    self.server,
                    LEGACY_DRAIN.as_secs()
                ));
                return;
            }
            // Polling: the reader task owns the stream, and this runs once, at exit.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_before_or_after_their_receipt_both_count() {
        let mut a = Awaited::default();
        a.taken("1".into());
        a.answered("2".into());
        assert_eq!(a.waiting(), 1);
        a.taken("2".into());
        a.answered("1".into());
        assert_eq!(a.waiting(), 0);
        assert!(a.early.is_empty());
    }

    #[test]
    fn a_server_that_never_answers_or_answers_noise_grows_nothing() {
        let mut a = Awaited::default();
        for n in 0..3 * MAX_AWAITED {
            a.taken(format!("\"t{n}\""));
            a.answered(format!("\"noise{n}\""));
        }
        assert_eq!(a.waiting(), MAX_AWAITED);
        assert_eq!(a.early.len(), MAX_AWAITED);
    }
}
