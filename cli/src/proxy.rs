//! `mcp-auth proxy <url>`: a stdio ↔ Streamable HTTP bridge for MCP clients that only speak
//! stdio. One JSON-RPC message per line on stdin is POSTed to the server with a token from
//! mcp-authd; JSON and SSE answers go to stdout, one message per line. A 401 or 403 is
//! reported to the daemon (`token.challenge`), which refreshes, steps up or logs in; the
//! request is then retried with the new token. stdout carries protocol messages only.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_authd_ipc::methods::{
    ChallengeParams, LOGIN_PENDING, LoginPending, TOKEN_CHALLENGE, TOKEN_GET, TokenGetParams,
    TokenGetResult,
};
use mcp_authd_ipc::text::printable;
use mcp_authd_ipc::transport::{UrlRefused, check_url};
use mcp_authd_ipc::{Client, ClientError, ErrorKind, outbound};
use reqwest::{StatusCode, header};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";
/// Where a stateless (2026-07-28) request names its protocol version.
const META_VERSION: &str = "/params/_meta/io.modelcontextprotocol~1protocolVersion";
/// JSON-RPC error code for a request the proxy could not deliver (implementation range).
const DELIVERY_FAILED: i64 = -32000;
/// JSON-RPC error code when the server needs an authorization the proxy could not get.
const UNAUTHORIZED: i64 = -32001;
/// Largest answer (a JSON body, or one SSE event) taken from a server: a hostile or broken
/// server must not make the proxy buffer without end.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// Bytes of messages waiting for stdout at most: when the client reads slower than the
/// server sends, the proxy stops reading from the server instead of growing.
const STDOUT_BUDGET_BYTES: usize = 8 * 1024 * 1024;

#[derive(clap::Args)]
pub struct Args {
    /// The MCP server URL (Streamable HTTP), e.g. https://mcp.example.com/mcp
    pub server: String,
    /// Never start a browser login: answer requests that need one with an error instead
    #[arg(long)]
    pub no_login: bool,
    /// Do not open a browser for a login; the URL is printed on stderr
    #[arg(long)]
    pub no_browser: bool,
    /// Seconds to wait for a browser login [default: the daemon's login_timeout_secs]
    #[arg(long)]
    pub login_timeout: Option<u64>,
    /// A PEM file of CA certificates to trust besides the OS trust store when talking to
    /// the server (a TLS-inspecting proxy's CA, a company CA)
    #[arg(long, env = "MCP_AUTH_CA_FILE", value_name = "PEM_FILE")]
    pub ca_file: Option<PathBuf>,
    /// The account of the server to use (and to log in as) [default: the default account]
    #[arg(long, value_name = "NAME", value_parser = crate::account_arg)]
    pub account: Option<String>,
}

/// The setting a certificate error points to.
const CA_SETTING: &str = "--ca-file (or MCP_AUTH_CA_FILE)";

/// State shared by the tasks of one proxy run.
struct Proxy {
    http: reqwest::Client,
    server: String,
    socket: PathBuf,
    args: Args,
    /// The connection `token.get` goes through (challenges open their own: they may wait
    /// minutes for a browser login).
    daemon: tokio::sync::Mutex<Option<Client>>,
    session: Mutex<Option<String>>,
    protocol_version: Mutex<Option<String>>,
    out: Stdout,
}

/// The lines on their way to stdout, bounded in bytes: each holds its share of the budget
/// until it is written.
struct Stdout {
    lines: mpsc::UnboundedSender<(String, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
}

impl Stdout {
    /// Queues a line, waiting while the budget is spent (a line bigger than the whole
    /// budget waits for all of it).
    async fn send(&self, line: String) {
        let share = (line.len() + 1).min(STDOUT_BUDGET_BYTES) as u32;
        let Ok(permit) = self.budget.clone().acquire_many_owned(share).await else {
            return;
        };
        let _ = self.lines.send((line, permit));
    }
}

pub async fn run(socket: PathBuf, args: Args) -> anyhow::Result<()> {
    check_transport(&socket, &args.server).await?;
    // Proxies from HTTPS_PROXY / HTTP_PROXY / NO_PROXY, loopback always direct.
    let builder = outbound::configure(
        reqwest::Client::builder(),
        args.ca_file.as_deref().map(|path| outbound::CaFile {
            path,
            setting: CA_SETTING,
        }),
    )?;
    let http = builder
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(String, OwnedSemaphorePermit)>();
    let out = Stdout {
        lines: lines_tx,
        budget: Arc::new(Semaphore::new(STDOUT_BUDGET_BYTES)),
    };
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        // The permit goes when the line is written: its bytes leave the budget.
        while let Some((line, _permit)) = lines.recv().await {
            if stdout.write_all(line.as_bytes()).await.is_err()
                || stdout.write_all(b"\n").await.is_err()
                || stdout.flush().await.is_err()
            {
                break;
            }
        }
    });
    let proxy = Arc::new(Proxy {
        http,
        server: args.server.clone(),
        socket,
        args,
        daemon: tokio::sync::Mutex::new(None),
        session: Mutex::new(None),
        protocol_version: Mutex::new(None),
        out,
    });

    let mut in_flight = JoinSet::new();
    let mut listener: Option<tokio::task::JoinHandle<()>> = None;
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = stdin.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        let message: Value = match serde_json::from_str(&line) {
            Ok(m) => m,
            Err(e) => {
                log(&format!("ignoring a line of stdin that is not JSON: {e}"));
                proxy
                    .emit(&error_response(
                        &Value::Null,
                        -32700,
                        "parse error: not JSON",
                    ))
                    .await;
                continue;
            }
        };
        let p = proxy.clone();
        in_flight.spawn(async move { p.forward(message).await });
        while let Some(done) = in_flight.try_join_next() {
            done?;
        }
        if listener.is_none() && proxy.session().is_some() {
            let p = proxy.clone();
            listener = Some(tokio::spawn(async move { p.listen().await }));
        }
    }
    while let Some(done) = in_flight.join_next().await {
        done?;
    }
    if let Some(l) = listener {
        l.abort();
    }
    proxy.end_session().await;
    drop(proxy);
    let _ = writer.await;
    Ok(())
}

impl Proxy {
    fn session(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn emit(&self, message: &Value) {
        self.out.send(message.to_string()).await;
    }

    /// Logs why a message could not be delivered and, for a request, answers it with a
    /// JSON-RPC error so the client is not left waiting.
    async fn fail(&self, id: Option<&Value>, code: i64, why: &str) {
        log(why);
        if let Some(id) = id {
            self.emit(&error_response(id, code, why)).await;
        }
    }

    /// Sends one message and delivers what the server answers; a request that fails gets
    /// a JSON-RPC error, so the client is never left waiting.
    async fn forward(&self, message: Value) {
        let id = message
            .get("method")
            .and(message.get("id"))
            .cloned()
            .filter(|id| !id.is_null());
        let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        if is_initialize {
            // A new initialize starts a new session.
            *self.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        let version = message
            .pointer(META_VERSION)
            .and_then(Value::as_str)
            .map(str::to_string);
        let body = message.to_string();

        let mut token = self.token().await;
        let mut challenged: Option<StatusCode> = None;
        loop {
            let response = match self.post(&body, token.as_deref(), version.as_deref()).await {
                Ok(r) => r,
                Err(e) => {
                    let why = self.unreachable(&e);
                    return self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
                }
            };
            let status = response.status();
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
            let excerpt = (!text.is_empty()).then(|| text.chars().take(2048).collect());
            match self
                .challenge(status, www_authenticate, excerpt, token.take())
                .await
            {
                Ok(t) => token = Some(t),
                Err(e) => return self.fail(id.as_ref(), UNAUTHORIZED, &e.to_string()).await,
            }
        }
    }

    /// Why the server could not be reached: a refused certificate says what to set.
    fn unreachable(&self, e: &reqwest::Error) -> String {
        let host = reqwest::Url::parse(&self.server)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        match outbound::certificate_problem(e, &host, CA_SETTING) {
            Some(problem) => format!("cannot reach {}: {problem}", self.server),
            None => format!("cannot reach {}: {}", self.server, outbound::chain(e)),
        }
    }

    async fn post(
        &self,
        body: &str,
        token: Option<&str>,
        version: Option<&str>,
    ) -> reqwest::Result<reqwest::Response> {
        let mut request = self
            .http
            .post(&self.server)
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json, text/event-stream")
            .body(body.to_string());
        request = self.common_headers(request, token, version);
        request.send().await
    }

    fn common_headers(
        &self,
        mut request: reqwest::RequestBuilder,
        token: Option<&str>,
        version: Option<&str>,
    ) -> reqwest::RequestBuilder {
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(session) = self.session() {
            request = request.header(SESSION_HEADER, session);
        }
        let negotiated = self
            .protocol_version
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(v) = version.map(str::to_string).or(negotiated) {
            request = request.header(VERSION_HEADER, v);
        }
        request
    }

    /// Writes the server's answer to stdout: nothing for 202, the JSON body, or every
    /// event of an SSE stream as it arrives.
    async fn deliver(
        &self,
        mut response: reqwest::Response,
        id: Option<Value>,
        is_initialize: bool,
    ) {
        let status = response.status();
        if let Some(session) = response
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
        {
            *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(session.to_string());
        }
        if status == StatusCode::ACCEPTED {
            return;
        }
        let is_sse = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if is_sse && status.is_success() {
            if let Err(why) = self.deliver_events(&mut response, is_initialize).await {
                self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
            }
            return;
        }
        let text = bounded_text(response).await;
        self.deliver_text(status, &text, id, is_initialize).await;
    }

    /// Forwards every message of an SSE stream as it arrives, until the stream ends; why
    /// not, if it broke or sent an event over [`MAX_MESSAGE_BYTES`].
    async fn deliver_events(
        &self,
        response: &mut reqwest::Response,
        is_initialize: bool,
    ) -> Result<(), String> {
        let mut events = SseParser::default();
        loop {
            match response.chunk().await {
                Ok(Some(bytes)) => {
                    let messages = events.push(&bytes).map_err(|e| {
                        format!("the event stream from {} was dropped: {e}", self.server)
                    })?;
                    for data in messages {
                        self.deliver_json(&data, is_initialize).await;
                    }
                }
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("the event stream from {} broke: {e}", self.server)),
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
                *self
                    .protocol_version
                    .lock()
                    .unwrap_or_else(|p| p.into_inner()) = Some(v.to_string());
            }
            self.emit(m).await;
            any = true;
        }
        any
    }

    /// The server-initiated stream (GET), while the session lasts and the server offers it.
    async fn listen(&self) {
        let mut backoff = Duration::from_secs(1);
        loop {
            let token = self.token().await;
            let request = self
                .http
                .get(&self.server)
                .header(header::ACCEPT, "text/event-stream");
            let request = self.common_headers(request, token.as_deref(), None);
            match request.send().await {
                Ok(mut response) if response.status().is_success() => {
                    backoff = Duration::from_secs(1);
                    if let Err(why) = self.deliver_events(&mut response, false).await {
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

    /// Ends the session at the server (DELETE), as the transport asks of a client leaving.
    async fn end_session(&self) {
        if self.session().is_none() {
            return;
        }
        let token = self.token().await;
        let request = self.common_headers(self.http.delete(&self.server), token.as_deref(), None);
        if let Err(e) = request.timeout(Duration::from_secs(5)).send().await {
            log(&format!("could not end the session: {e}"));
        }
    }

    /// A token from the daemon, or none (not logged in yet, or the daemon is away: the
    /// request goes without one, and a challenge will say what the server needs).
    async fn token(&self) -> Option<String> {
        let mut daemon = self.daemon.lock().await;
        let params = TokenGetParams {
            server: self.server.clone(),
            account: self.args.account.clone(),
            ..Default::default()
        };
        // A kept connection may have been closed meanwhile (the daemon closes connections
        // idle for 15 minutes, or restarted): then once more on a new one.
        let mut fresh = false;
        loop {
            if daemon.is_none() {
                match Client::connect(&self.socket).await {
                    Ok(client) => *daemon = Some(client),
                    // Not the user's daemon: said every time, never silently retried past.
                    Err(e @ ClientError::Untrusted { .. }) => log(&e.to_string()),
                    Err(_) => {}
                }
                fresh = true;
            }
            let client = daemon.as_mut()?;
            match client.call::<_, TokenGetResult>(TOKEN_GET, &params).await {
                Ok(mut t) => return Some(std::mem::take(&mut t.access_token)),
                Err(ClientError::Rpc(e))
                    if e.kind() == Some(ErrorKind::LimitExceeded) && !fresh =>
                {
                    *daemon = None;
                }
                Err(ClientError::Rpc(e)) => {
                    if e.kind() != Some(ErrorKind::AuthorizationRequired) {
                        log(&e.message);
                    }
                    return None;
                }
                Err(_) if !fresh => *daemon = None,
                Err(e) => {
                    log(&e.to_string());
                    *daemon = None;
                    return None;
                }
            }
        }
    }

    async fn challenge(
        &self,
        status: StatusCode,
        www_authenticate: Option<String>,
        body: Option<String>,
        rejected_token: Option<String>,
    ) -> Result<String, ClientError> {
        let mut client = Client::connect(&self.socket).await?;
        let params = ChallengeParams {
            server: self.server.clone(),
            status: status.as_u16(),
            www_authenticate,
            body,
            rejected_token,
            interactive: Some(!self.args.no_login),
            open_browser: Some(!self.args.no_browser),
            timeout_secs: self.args.login_timeout,
            account: self.args.account.clone(),
        };
        let mut token: TokenGetResult = client
            .call_with_notifications(TOKEN_CHALLENGE, &params, |n| {
                if n.method != LOGIN_PENDING {
                    return;
                }
                if let Ok(p) = serde_json::from_value::<LoginPending>(n.params) {
                    log(&format!(
                        "{} needs a login; waiting up to {} s. Open this URL if no browser opened:\n  {}",
                        p.server, p.timeout_secs, p.authorization_url
                    ));
                }
            })
            .await?;
        Ok(std::mem::take(&mut token.access_token))
    }
}

/// Splits an SSE byte stream into the `data` of its events (event type `message` or none).
/// An event (its unfinished line and the data lines before it) over
/// [`MAX_MESSAGE_BYTES`] is an error, not a buffer that grows without end.
#[derive(Default)]
struct SseParser {
    buffer: Vec<u8>,
    /// How much of `buffer` is known to hold no newline.
    scanned: usize,
    data: Vec<String>,
    data_bytes: usize,
    event: Option<String>,
}

#[derive(Debug)]
struct EventTooLong;

impl std::fmt::Display for EventTooLong {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "an event longer than {MAX_MESSAGE_BYTES} bytes")
    }
}

impl SseParser {
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, EventTooLong> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        loop {
            let Some(at) = self.buffer[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buffer.len();
                if self.data_bytes + self.buffer.len() > MAX_MESSAGE_BYTES {
                    return Err(EventTooLong);
                }
                return Ok(out);
            };
            let end = self.scanned + at;
            self.scanned = 0;
            let raw: Vec<u8> = self.buffer.drain(..=end).collect();
            let line = String::from_utf8_lossy(&raw);
            let line = line.trim_end_matches(['\n', '\r']);
            if line.is_empty() {
                let data = std::mem::take(&mut self.data);
                self.data_bytes = 0;
                let event = self.event.take();
                if !data.is_empty() && event.as_deref().is_none_or(|e| e == "message") {
                    out.push(data.join("\n"));
                }
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line, ""),
            };
            match field {
                "data" => {
                    self.data_bytes += value.len() + 1;
                    if self.data_bytes > MAX_MESSAGE_BYTES {
                        return Err(EventTooLong);
                    }
                    self.data.push(value.to_string());
                }
                "event" => self.event = Some(value.to_string()),
                _ => {}
            }
        }
    }
}

fn joined(headers: &header::HeaderMap, name: header::HeaderName) -> Option<String> {
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

fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn excerpt(text: &str) -> String {
    let t = printable(text.trim(), 300);
    if t.is_empty() {
        "(empty body)".into()
    } else {
        t
    }
}

/// A line on stderr; what it quotes from a server has no control character left.
fn log(message: &str) {
    eprintln!("mcp-auth proxy: {}", printable(message, 4000));
}

/// Bearer tokens go to the server only over TLS or loopback. Plain http to another host is
/// for labs and only the daemon's config may allow it (`allow_insecure_http`): the daemon
/// is asked before any request reaches the server, and every run says so on stderr.
async fn check_transport(socket: &std::path::Path, server: &str) -> anyhow::Result<()> {
    let refused = match check_url("MCP server URL", server, None, false, server) {
        Ok(_) => return Ok(()),
        Err(refused @ UrlRefused::PlainHttp { .. }) => refused,
        Err(other) => anyhow::bail!("{other}"),
    };
    let mut daemon = Client::connect(socket).await.map_err(|e| {
        anyhow::anyhow!("{refused} (and the daemon, which may allow it, cannot be asked: {e})")
    })?;
    let asked: Result<TokenGetResult, ClientError> = daemon
        .call(
            TOKEN_GET,
            &TokenGetParams {
                server: server.to_string(),
                ..Default::default()
            },
        )
        .await;
    match asked {
        Err(ClientError::Rpc(e)) if e.kind() == Some(ErrorKind::InvalidParams) => {
            anyhow::bail!("{}", e.message)
        }
        Err(ClientError::Rpc(_)) | Ok(_) => {
            if let Some(w) = crate::plain_http_warning(server, "bearer tokens for it") {
                log(&w);
            }
            Ok(())
        }
        Err(e) => {
            anyhow::bail!("{refused} (and the daemon, which may allow it, cannot be asked: {e})")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_across_chunks() {
        let mut p = SseParser::default();
        assert!(
            p.push(b"event: message\r\ndata: {\"a\"")
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            p.push(b":1}\r\n\r\nid: 7\ndata: x\n").unwrap(),
            vec!["{\"a\":1}".to_string()]
        );
        assert_eq!(
            p.push(b"data: y\n\n: comment\n\n").unwrap(),
            vec!["x\ny".to_string()]
        );
        let mut p = SseParser::default();
        assert_eq!(
            p.push(b"data: {\"a\":1}\n\nevent: ping\ndata: z\n\n")
                .unwrap(),
            vec!["{\"a\":1}".to_string()]
        );
    }

    #[test]
    fn an_endless_line_or_event_is_an_error_not_a_growing_buffer() {
        let chunk = vec![b'x'; 1024 * 1024];
        let mut p = SseParser::default();
        p.push(b"data: ").unwrap();
        let mut pushed = 0;
        let err = loop {
            match p.push(&chunk) {
                Ok(out) => assert!(out.is_empty()),
                Err(e) => break e,
            }
            pushed += 1;
            assert!(pushed <= 16, "still buffering after {pushed} MiB");
        };
        assert!(err.to_string().contains("longer than"), "{err}");
        // Many short data lines of one event that never ends count too.
        let mut p = SseParser::default();
        let line = format!("data: {}\n", "y".repeat(64 * 1024));
        let too_long = (0..1000).find_map(|_| p.push(line.as_bytes()).err());
        assert!(too_long.is_some());
        // Each event starts from nothing again.
        let mut p = SseParser::default();
        for _ in 0..100 {
            assert_eq!(p.push(line.as_bytes()).unwrap().len(), 0);
            assert_eq!(p.push(b"\n").unwrap().len(), 1);
        }
    }

    #[test]
    fn parse_errors_answer_with_a_null_id() {
        let e = error_response(&Value::Null, -32700, "parse error");
        assert_eq!(e["id"], Value::Null);
        assert_eq!(e["error"]["code"], -32700);
    }
}
