//! The HTTP side of the proxy: one session with the MCP server over Streamable HTTP, or
//! over the older HTTP+SSE transport ([`legacy`]). It carries the session id and the
//! protocol version header, presents the token (with a DPoP proof when it is bound), and
//! takes a 401 or 403 to the daemon for a new token, then retries. Every answer is
//! bounded: a JSON body or one event at most [`MAX_MESSAGE_BYTES`].

mod legacy;
mod sse;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use mcp_authd_ipc::outbound;
use reqwest::header::{self, HeaderMap};
use reqwest::{StatusCode, Url};
use serde_json::Value;

use super::args::{
    CA_SETTING, DPOP_HEADER, DPOP_NONCE_HEADER, SESSION_HEADER, Transport, VERSION_HEADER,
};
use super::daemon::{Refusal, Token, TokenSource};
use super::stdio::{Stdout, error_response, log};
use legacy::{Awaited, LegacyError};
use sse::Events;

/// Largest answer (a JSON body, or one SSE event) taken from a server: a hostile or broken
/// server must not make the proxy buffer without end.
pub(super) const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Where a stateless (2026-07-28) request names its protocol version.
const META_VERSION: &str = "/params/_meta/io.modelcontextprotocol~1protocolVersion";
/// JSON-RPC error code for a request the proxy could not deliver (implementation range).
const DELIVERY_FAILED: i64 = -32000;
/// JSON-RPC error code when the server needs an authorization the proxy could not get.
const UNAUTHORIZED: i64 = -32001;

/// The transport a proxy run settled on (with its first message).
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mode {
    Undecided,
    Streamable,
    /// HTTP+SSE: messages are POSTed to `endpoint`; answers come on the event stream.
    Legacy {
        endpoint: Url,
    },
}

/// One proxy run's session with the server, shared by the tasks forwarding messages.
pub(super) struct Session {
    http: reqwest::Client,
    server: String,
    server_url: Url,
    transport: Transport,
    tokens: TokenSource,
    out: Stdout,
    /// Headers from `--header` and the config, sent with every request to the server.
    extra_headers: HeaderMap,
    /// The server's session id (a header value: hyper bounds its size).
    session: Mutex<Option<String>>,
    /// The version `initialize` settled on (from a bounded answer).
    protocol_version: Mutex<Option<String>>,
    /// The latest `DPoP-Nonce` the server sent (RFC 9449 §9), for the next proof.
    dpop_nonce: Mutex<Option<String>>,
    mode: Mutex<Mode>,
    /// The task reading the HTTP+SSE event stream; it holds the session, so the run ends it.
    legacy_reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// HTTP+SSE: the requests whose answers are still to come on the stream.
    awaited: Mutex<Awaited>,
}

/// A mutex's value even when a task panicked holding it (the values here stay whole).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// A session with `server` (as the user gave it: the daemon knows it by that name).
    pub(super) fn new(
        http: reqwest::Client,
        server: String,
        server_url: Url,
        transport: Transport,
        tokens: TokenSource,
        out: Stdout,
        extra_headers: HeaderMap,
    ) -> Arc<Session> {
        Arc::new(Session {
            http,
            server,
            server_url,
            transport,
            tokens,
            out,
            extra_headers,
            session: Mutex::new(None),
            protocol_version: Mutex::new(None),
            dpop_nonce: Mutex::new(None),
            mode: Mutex::new(Mode::Undecided),
            legacy_reader: Mutex::new(None),
            awaited: Mutex::new(Awaited::default()),
        })
    }

    /// Whether the transport is settled (by the first message); until then messages go
    /// one at a time.
    pub(super) fn settled(&self) -> bool {
        self.mode() != Mode::Undecided
    }

    /// Whether the server gave a session id (then it may offer a stream of its own: see
    /// [`Self::listen`]).
    pub(super) fn has_session_id(&self) -> bool {
        lock(&self.session).is_some()
    }

    fn session_id(&self) -> Option<String> {
        lock(&self.session).clone()
    }

    fn mode(&self) -> Mode {
        lock(&self.mode).clone()
    }

    fn set_mode(&self, mode: Mode) {
        *lock(&self.mode) = mode;
    }

    /// Logs why a message could not be delivered and, for a request, answers it with a
    /// JSON-RPC error so the client is not left waiting.
    async fn fail(&self, id: Option<&Value>, code: i64, why: &str) {
        log(why);
        if let Some(id) = id {
            self.out.emit(&error_response(id, code, why)).await;
        }
    }

    /// Sends one message and delivers what the server answers; a request that fails gets
    /// a JSON-RPC error, so the client is never left waiting.
    pub(super) async fn forward(self: &Arc<Self>, message: Value) {
        let id = message
            .get("method")
            .and(message.get("id"))
            .cloned()
            .filter(|id| !id.is_null());
        let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        if is_initialize {
            // A new initialize starts a new session.
            *lock(&self.session) = None;
        }
        let version = message
            .pointer(META_VERSION)
            .and_then(Value::as_str)
            .map(str::to_string);
        let body = message.to_string();

        if self.mode() == Mode::Undecided
            && matches!(self.transport, Transport::SseFirst | Transport::SseOnly)
        {
            match self.open_legacy().await {
                Ok(()) => {}
                Err(LegacyError::Refused(status))
                    if self.transport == Transport::SseFirst
                        && matches!(status.as_u16(), 404 | 405) =>
                {
                    log(&format!(
                        "{} refused the HTTP+SSE transport (HTTP {}); using Streamable HTTP",
                        self.server,
                        status.as_u16()
                    ));
                    self.set_mode(Mode::Streamable);
                }
                Err(e) => {
                    let why = self.legacy_failure(e);
                    return self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
                }
            }
        }
        let mut token = self.tokens.token().await;
        let mut challenged: Option<StatusCode> = None;
        let mut nonce_retried = false;
        loop {
            let response = match self.post(&body, token.as_ref(), version.as_deref()).await {
                Ok(r) => r,
                Err(e) => {
                    let why = self.unreachable(&e);
                    return self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
                }
            };
            let status = response.status();
            // RFC 9449 §9: the server wants its nonce in the proof; once, with a new proof.
            if asks_for_nonce(&response, token.as_ref()) && !nonce_retried {
                nonce_retried = true;
                continue;
            }
            if self.mode() == Mode::Undecided {
                if matches!(status.as_u16(), 404 | 405) && self.transport == Transport::HttpFirst {
                    log(&format!(
                        "{} refused Streamable HTTP (HTTP {}); trying the HTTP+SSE transport",
                        self.server,
                        status.as_u16()
                    ));
                    if let Err(e) = self.open_legacy().await {
                        let why = self.legacy_failure(e);
                        return self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
                    }
                    token = self.tokens.token().await;
                    challenged = None;
                    continue;
                }
                if !matches!(status.as_u16(), 400 | 401 | 403) {
                    self.set_mode(Mode::Streamable);
                }
            }
            let may_challenge = matches!(status.as_u16(), 400 | 401 | 403);
            // One retry per kind of challenge: a 401 then a 403 is a login then a step-up;
            // the same challenge twice means the new token did not help.
            if !may_challenge || challenged == Some(status) {
                return self.deliver(response, id, is_initialize).await;
            }
            let www_authenticate = joined(response.headers(), header::WWW_AUTHENTICATE);
            let text = if status == StatusCode::UNAUTHORIZED {
                String::new()
            } else {
                bounded_text(response).await
            };
            // A 400 is a challenge only for servers that say `invalid_token` with it.
            if status == StatusCode::BAD_REQUEST && !text.contains("invalid_token") {
                return self.deliver_text(status, &text, id, is_initialize).await;
            }
            challenged = Some(status);
            let refusal = Refusal {
                status: status.as_u16(),
                www_authenticate,
                body: (!text.is_empty()).then(|| text.chars().take(2048).collect()),
                rejected_token: token.take().map(|t| t.value),
            };
            match self.tokens.challenge(refusal).await {
                Ok(t) => token = Some(t),
                Err(e) => return self.fail(id.as_ref(), UNAUTHORIZED, &e.to_string()).await,
            }
        }
    }

    /// Why the server could not be reached: a refused certificate says what to set.
    fn unreachable(&self, e: &reqwest::Error) -> String {
        let host = self.server_url.host_str().unwrap_or_default();
        match outbound::certificate_problem(e, host, CA_SETTING) {
            Some(problem) => format!("cannot reach {}: {problem}", self.server),
            None => format!("cannot reach {}: {}", self.server, outbound::chain(e)),
        }
    }

    async fn post(
        &self,
        body: &str,
        token: Option<&Token>,
        version: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let target = match self.mode() {
            Mode::Legacy { endpoint } => endpoint,
            _ => self.server_url.clone(),
        };
        let request = self
            .http
            .post(target.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        let request = self
            .common_headers(request, token, version, "POST", target.as_str())
            .await;
        let response = request.send().await?;
        if let Some(nonce) = response
            .headers()
            .get(DPOP_NONCE_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *lock(&self.dpop_nonce) = Some(nonce.to_string());
        }
        Ok(response)
    }

    /// The headers every request carries: the token (with a new DPoP proof for `method`
    /// when it is DPoP-bound), the session, the protocol version.
    async fn common_headers(
        &self,
        mut request: reqwest::RequestBuilder,
        token: Option<&Token>,
        version: Option<&str>,
        method: &str,
        url: &str,
    ) -> reqwest::RequestBuilder {
        request = request.headers(self.extra_headers.clone());
        match token {
            Some(t) if t.dpop => {
                request = request.header(header::AUTHORIZATION, format!("DPoP {}", t.value));
                let nonce = lock(&self.dpop_nonce).clone();
                if let Some(proof) = self.tokens.dpop_proof(method, url, &t.value, nonce).await {
                    request = request.header(DPOP_HEADER, proof);
                }
            }
            Some(t) => request = request.bearer_auth(&t.value),
            None => {}
        }
        if let Some(session) = self.session_id() {
            request = request.header(SESSION_HEADER, session);
        }
        let negotiated = lock(&self.protocol_version).clone();
        if let Some(v) = version.map(str::to_string).or(negotiated) {
            request = request.header(VERSION_HEADER, v);
        }
        request
    }

    /// Writes the server's answer to stdout: nothing for 202, the JSON body, or every
    /// event of an SSE stream as it arrives.
    async fn deliver(&self, response: reqwest::Response, id: Option<Value>, is_initialize: bool) {
        let status = response.status();
        if let Some(session) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *lock(&self.session) = Some(session.to_string());
        }
        if status.is_success() && matches!(self.mode(), Mode::Legacy { .. }) {
            // HTTP+SSE: the answer comes on the event stream; the POST's body is a receipt.
            if let Some(id) = id {
                lock(&self.awaited).taken(id.to_string());
            }
            return;
        }
        if status == StatusCode::ACCEPTED {
            return;
        }
        if is_event_stream(response.headers()) && status.is_success() {
            if let Err(why) = self
                .deliver_events(Events::of(response), is_initialize)
                .await
            {
                self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
            }
            return;
        }
        let text = bounded_text(response).await;
        self.deliver_text(status, &text, id, is_initialize).await;
    }

    /// Forwards every message of an SSE stream as it arrives, until the stream ends; why
    /// not, if it broke or sent an event over [`MAX_MESSAGE_BYTES`].
    async fn deliver_events(&self, mut events: Events, is_initialize: bool) -> Result<(), String> {
        loop {
            match events.next_message().await {
                Ok(Some(data)) => {
                    self.deliver_json(&data, is_initialize).await;
                }
                Ok(None) => return Ok(()),
                Err(e @ sse::SseError::Broke(_)) => {
                    return Err(format!("the event stream from {} broke: {e}", self.server));
                }
                Err(e) => {
                    return Err(format!(
                        "the event stream from {} was dropped: {e}",
                        self.server
                    ));
                }
            }
        }
    }

    /// Forwards the JSON-RPC message(s) of a plain answer; a request whose answer holds
    /// none (an HTTP error page) gets a JSON-RPC error instead.
    async fn deliver_text(
        &self,
        status: StatusCode,
        text: &str,
        id: Option<Value>,
        is_initialize: bool,
    ) {
        let delivered = self.deliver_json(text, is_initialize).await;
        if !status.is_success() && !delivered {
            let why = format!(
                "{} answered HTTP {}: {}",
                self.server,
                status.as_u16(),
                excerpt(text)
            );
            self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
        }
    }

    /// Forwards JSON-RPC message(s) in `text`; false when it holds none.
    async fn deliver_json(&self, text: &str, is_initialize: bool) -> bool {
        let Ok(value) = serde_json::from_str::<Value>(text) else {
            return false;
        };
        let messages = match value {
            Value::Array(items) => items,
            one => vec![one],
        };
        let mut any = false;
        for m in messages.iter().filter(|m| m.get("jsonrpc").is_some()) {
            if is_initialize
                && let Some(v) = m.pointer("/result/protocolVersion").and_then(Value::as_str)
            {
                *lock(&self.protocol_version) = Some(v.to_string());
            }
            if let Some(id) = m.get("id").filter(|_| m.get("method").is_none())
                && matches!(self.mode(), Mode::Legacy { .. })
            {
                lock(&self.awaited).answered(id.to_string());
            }
            self.out.emit(m).await;
            any = true;
        }
        any
    }

    /// The server-initiated stream (GET), while the session lasts and the server offers it.
    pub(super) async fn listen(&self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let token = self.tokens.token().await;
            let request = self
                .http
                .get(&self.server)
                .header(header::ACCEPT, "text/event-stream");
            let request = self
                .common_headers(request, token.as_ref(), None, "GET", &self.server)
                .await;
            match request.send().await {
                Ok(response) if response.status().is_success() => {
                    backoff = Duration::from_secs(1);
                    if let Err(why) = self.deliver_events(Events::of(response), false).await {
                        log(&why);
                    }
                }
                // 405: the server offers no stream; other refusals will not change.
                Ok(response) if response.status().is_client_error() => return,
                Ok(_) | Err(_) => {}
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Ends the run: waits a little for HTTP+SSE answers still on their way, stops the
    /// event stream's reader, and ends the session at the server.
    pub(super) async fn close(&self) {
        self.drain_legacy_answers().await;
        let reader = lock(&self.legacy_reader).take();
        if let Some(r) = reader {
            r.abort();
            let _ = r.await;
        }
        self.end_session().await;
    }

    /// Ends the session at the server (DELETE), as the transport asks of a client leaving.
    async fn end_session(&self) {
        if self.session_id().is_none() {
            return;
        }
        let token = self.tokens.token().await;
        let request = self
            .common_headers(
                self.http.delete(&self.server),
                token.as_ref(),
                None,
                "DELETE",
                &self.server,
            )
            .await;
        if let Err(e) = request.timeout(Duration::from_secs(5)).send().await {
            log(&format!("could not end the session: {e}"));
        }
    }
}

/// A 401 whose DPoP challenge says `use_dpop_nonce` and that came with a nonce.
fn asks_for_nonce(response: &reqwest::Response, token: Option<&Token>) -> bool {
    response.status() == StatusCode::UNAUTHORIZED
        && token.is_some_and(|t| t.dpop)
        && response.headers().contains_key(DPOP_NONCE_HEADER)
        && joined(response.headers(), header::WWW_AUTHENTICATE)
            .is_some_and(|w| w.contains("use_dpop_nonce"))
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
}

fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// The body of a non-streamed answer; JSON-RPC answers are small, and a hostile server
/// must not make the proxy buffer without end.
async fn bounded_text(mut response: reqwest::Response) -> String {
    const MAX: usize = MAX_MESSAGE_BYTES;
    let mut bytes = Vec::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        if bytes.len() + chunk.len() > MAX {
            log(&format!("an answer over {MAX} bytes was cut"));
            break;
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

fn excerpt(text: &str) -> String {
    let t = mcp_authd_ipc::text::printable(text.trim(), 300);
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}
