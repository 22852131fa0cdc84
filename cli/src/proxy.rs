//! `mcp-auth proxy <url>`: a stdio ↔ Streamable HTTP bridge for MCP clients that only speak
//! stdio. One JSON-RPC message per line on stdin is POSTed to the server with a token from
//! mcp-authd; JSON and SSE answers go to stdout, one message per line. A 401 or 403 is
//! reported to the daemon (`token.challenge`), which refreshes, steps up or logs in; the
//! request is then retried with the new token. stdout carries protocol messages only.
//!
//! Servers that only speak the older HTTP+SSE transport (protocol 2024-11-05: a GET opens
//! an event stream whose `endpoint` event names where to POST; answers come back on the
//! stream) are reached too: `--transport` chooses, and the default tries Streamable HTTP
//! first and falls back when the server refuses it with 404 or 405, as mcp-remote does.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcp_authd_ipc::methods::{
    ChallengeParams, DpopProofParams, DpopProofResult, LOGIN_PENDING, LoginPending,
    TOKEN_CHALLENGE, TOKEN_DPOP_PROOF, TOKEN_GET, TokenGetParams, TokenGetResult,
};
use mcp_authd_ipc::methods::{SERVER_HEADERS, ServerHeadersParams, ServerHeadersResult};
use mcp_authd_ipc::text::printable;
use mcp_authd_ipc::transport::{UrlRefused, check_url};
use mcp_authd_ipc::{Client, ClientError, ErrorKind, outbound};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{StatusCode, Url, header};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;

const SESSION_HEADER: &str = "mcp-session-id";
/// RFC 9449: the proof header, and the header a server's nonce comes in.
const DPOP_HEADER: &str = "dpop";
const DPOP_NONCE_HEADER: &str = "dpop-nonce";
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
    /// An extra HTTP header for every request to the server, as 'Name: value' (repeat);
    /// `${VAR}` in the value is replaced by that environment variable. Added to the
    /// server's `headers` in the config file, replacing one of the same name
    #[arg(long = "header", value_name = "NAME: VALUE")]
    pub headers: Vec<String>,
    /// Which MCP transport to use: Streamable HTTP, the older HTTP+SSE (2024-11-05), or
    /// one then the other when the server refuses the first (HTTP 404 or 405)
    #[arg(long, value_enum, default_value_t = Transport::HttpFirst)]
    pub transport: Transport,
    #[command(flatten)]
    pub callback: crate::login::Callback,
}

/// The transport strategies of mcp-remote's `--transport`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    HttpFirst,
    SseFirst,
    HttpOnly,
    SseOnly,
}

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

/// Why the HTTP+SSE transport could not be opened.
enum LegacyError {
    /// The server answered the GET with this status, or without an event stream.
    Refused(StatusCode),
    Failed(String),
}

/// The setting a certificate error points to.
const CA_SETTING: &str = "--ca-file (or MCP_AUTH_CA_FILE)";

/// State shared by the tasks of one proxy run.
struct Proxy {
    http: reqwest::Client,
    server: String,
    server_url: Url,
    socket: PathBuf,
    args: Args,
    /// The connection `token.get` goes through (challenges open their own: they may wait
    /// minutes for a browser login).
    daemon: tokio::sync::Mutex<Option<Client>>,
    session: Mutex<Option<String>>,
    protocol_version: Mutex<Option<String>>,
    /// The latest `DPoP-Nonce` the server sent (RFC 9449 §9), for the next proof.
    dpop_nonce: Mutex<Option<String>>,
    out: Stdout,
    /// Headers from `--header` and the config, sent with every request to the server.
    extra_headers: HeaderMap,
    mode: Mutex<Mode>,
    /// The task reading the HTTP+SSE event stream; it holds the proxy, so the run ends it.
    legacy_reader: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// HTTP+SSE: ids of the requests the server took, and of the answers delivered; when
    /// stdin closes, the run waits a little for the difference (answers come later there).
    legacy_requests: Mutex<(HashSet<String>, HashSet<String>)>,
}

/// How long a closed stdin waits for HTTP+SSE answers still on their way.
const LEGACY_DRAIN: Duration = Duration::from_secs(10);

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

/// An access token from the daemon and how to present it.
struct Token {
    value: String,
    /// DPoP-bound: sent as `Authorization: DPoP …` with a proof the daemon signs.
    dpop: bool,
}

impl From<TokenGetResult> for Token {
    fn from(mut t: TokenGetResult) -> Token {
        Token {
            dpop: t.token_type == mcp_authd_ipc::methods::TokenType::DPoP,
            // Taken out: the rest of the result zeroes its copy when dropped.
            value: std::mem::take(&mut t.access_token),
        }
    }
}

/// Parses `--header` values (`Name: value`, `${VAR}` expanded); why not, naming the flag.
pub fn parse_header_args(args: &[String]) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    for arg in args {
        let Some((name, value)) = arg.split_once(':') else {
            // Not echoed: what was meant as a value may be a credential.
            anyhow::bail!("a --header argument is not `Name: value` (it has no `:`)");
        };
        let (name, value) = (name.trim(), expand_env(value.trim())?);
        insert_header(&mut headers, name, &value)
            .map_err(|why| anyhow::anyhow!("--header `{name}`: {why}"))?;
    }
    Ok(headers)
}

/// Adds one header; why not: an invalid name or value, or one the proxy owns.
fn insert_header(headers: &mut HeaderMap, name: &str, value: &str) -> Result<(), String> {
    let parsed = HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| format!("`{name}` is not a valid HTTP header name"))?;
    if parsed == header::AUTHORIZATION {
        return Err(
            "Authorization cannot be set: mcp-authd sends the access token itself; to use a fixed credential instead of a login, give it another header name if the server accepts one".into(),
        );
    }
    if [SESSION_HEADER, VERSION_HEADER].contains(&parsed.as_str()) {
        return Err(format!("{name} cannot be set: the transport sets it"));
    }
    let value = HeaderValue::from_str(value)
        .map_err(|_| "the value holds a line break or a control character".to_string())?;
    headers.insert(parsed, value);
    Ok(())
}

/// Replaces `${NAME}` with the environment variable NAME: MCP clients start the proxy
/// without a shell, but can set its environment, and not every client expands `${…}` in
/// arguments itself. An unset variable is an error rather than an empty header.
fn expand_env(value: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start + 2..].find('}') else {
            break;
        };
        let name = &rest[start + 2..start + 2 + len];
        let Ok(found) = std::env::var(name) else {
            anyhow::bail!("--header: the environment variable `{name}` is not set");
        };
        out.push_str(&rest[..start]);
        out.push_str(&found);
        rest = &rest[start + 3 + len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The config file's headers for `server`, through the daemon (the one reader of the
/// config); none when the daemon cannot be reached (the first request will say so).
async fn config_headers(socket: &std::path::Path, server: &str) -> anyhow::Result<HeaderMap> {
    let mut headers = HeaderMap::new();
    let Ok(mut client) = Client::connect(socket).await else {
        return Ok(headers);
    };
    let params = ServerHeadersParams {
        server: server.to_string(),
    };
    let result: ServerHeadersResult = match client.call(SERVER_HEADERS, &params).await {
        Ok(r) => r,
        // An older daemon without the method: no configured headers.
        Err(ClientError::Rpc(e)) if e.kind() == Some(ErrorKind::MethodNotFound) => {
            return Ok(headers);
        }
        Err(e) => anyhow::bail!("cannot read the configured headers for {server}: {e}"),
    };
    for (name, value) in &result.headers {
        insert_header(&mut headers, name, value)
            .map_err(|why| anyhow::anyhow!("config file, headers of {server}: `{name}`: {why}"))?;
    }
    Ok(headers)
}

pub async fn run(socket: PathBuf, args: Args) -> anyhow::Result<()> {
    check_transport(&socket, &args.server).await?;
    let server_url = Url::parse(&args.server)
        .map_err(|e| anyhow::anyhow!("`{}` is not a URL: {e}", args.server))?;
    let cli_headers = parse_header_args(&args.headers)?;
    let mut extra_headers = config_headers(&socket, &args.server).await?;
    extra_headers.extend(cli_headers);
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
        server_url,
        socket,
        args,
        daemon: tokio::sync::Mutex::new(None),
        session: Mutex::new(None),
        protocol_version: Mutex::new(None),
        dpop_nonce: Mutex::new(None),
        out,
        extra_headers,
        mode: Mutex::new(Mode::Undecided),
        legacy_reader: Mutex::new(None),
        legacy_requests: Mutex::new(Default::default()),
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
        // The first message settles the transport; the rest may then go concurrently.
        if proxy.mode() == Mode::Undecided {
            proxy.forward(message).await;
            continue;
        }
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
    proxy.drain_legacy_answers().await;
    let reader = proxy
        .legacy_reader
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(r) = reader {
        r.abort();
        let _ = r.await;
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

    fn mode(&self) -> Mode {
        self.mode.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap_or_else(|p| p.into_inner()) = mode;
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
    async fn forward(self: &Arc<Self>, message: Value) {
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

        if self.mode() == Mode::Undecided
            && matches!(
                self.args.transport,
                Transport::SseFirst | Transport::SseOnly
            )
        {
            match self.open_legacy().await {
                Ok(()) => {}
                Err(LegacyError::Refused(status))
                    if self.args.transport == Transport::SseFirst
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
        let mut token = self.token().await;
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
            if self.asks_for_nonce(&response, token.as_ref()) && !nonce_retried {
                nonce_retried = true;
                continue;
            }
            if self.mode() == Mode::Undecided {
                if matches!(status.as_u16(), 404 | 405)
                    && self.args.transport == Transport::HttpFirst
                {
                    log(&format!(
                        "{} refused Streamable HTTP (HTTP {}); trying the HTTP+SSE transport",
                        self.server,
                        status.as_u16()
                    ));
                    if let Err(e) = self.open_legacy().await {
                        let why = self.legacy_failure(e);
                        return self.fail(id.as_ref(), DELIVERY_FAILED, &why).await;
                    }
                    token = self.token().await;
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
            let excerpt = (!text.is_empty()).then(|| text.chars().take(2048).collect());
            match self
                .challenge(
                    status,
                    www_authenticate,
                    excerpt,
                    token.take().map(|t| t.value),
                )
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
            *self.dpop_nonce.lock().unwrap_or_else(|p| p.into_inner()) = Some(nonce.to_string());
        }
        Ok(response)
    }

    /// A 401 whose DPoP challenge says `use_dpop_nonce` and that came with a nonce.
    fn asks_for_nonce(&self, response: &reqwest::Response, token: Option<&Token>) -> bool {
        response.status() == StatusCode::UNAUTHORIZED
            && token.is_some_and(|t| t.dpop)
            && response.headers().contains_key(DPOP_NONCE_HEADER)
            && joined(response.headers(), header::WWW_AUTHENTICATE)
                .is_some_and(|w| w.contains("use_dpop_nonce"))
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
                if let Some(proof) = self.dpop_proof(method, url, &t.value).await {
                    request = request.header(DPOP_HEADER, proof);
                }
            }
            Some(t) => request = request.bearer_auth(&t.value),
            None => {}
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
        if status.is_success() && matches!(self.mode(), Mode::Legacy { .. }) {
            // HTTP+SSE: the answer comes on the event stream; the POST's body is a receipt.
            if let Some(id) = id {
                self.legacy_requests().0.insert(id.to_string());
            }
            return;
        }
        if status == StatusCode::ACCEPTED {
            return;
        }
        let is_sse = is_event_stream(response.headers());
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
        self.deliver_events_with(response, SseParser::default(), is_initialize)
            .await
    }

    /// As [`Self::deliver_events`], going on with a parser that has read the start.
    async fn deliver_events_with(
        &self,
        response: &mut reqwest::Response,
        mut events: SseParser,
        is_initialize: bool,
    ) -> Result<(), String> {
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
            if let Some(id) = m.get("id").filter(|_| m.get("method").is_none()) {
                self.legacy_requests().1.insert(id.to_string());
            }
            self.emit(m).await;
            any = true;
        }
        any
    }

    fn legacy_requests(&self) -> std::sync::MutexGuard<'_, (HashSet<String>, HashSet<String>)> {
        self.legacy_requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits (up to [`LEGACY_DRAIN`]) for the HTTP+SSE answers to requests the server has
    /// taken: with that transport they arrive after the POST, and a client that closes
    /// stdin right after its last request still wants the answer.
    async fn drain_legacy_answers(&self) {
        let until = tokio::time::Instant::now() + LEGACY_DRAIN;
        loop {
            let waiting = {
                let requests = self.legacy_requests();
                requests.0.difference(&requests.1).count()
            };
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

    /// Opens the HTTP+SSE transport: a GET for the event stream (through the daemon's
    /// challenge on 401/403, as any request), whose first `endpoint` event names where
    /// messages go; the stream is then read in the background for the answers.
    async fn open_legacy(self: &Arc<Self>) -> Result<(), LegacyError> {
        let mut token = self.token().await;
        let mut challenged: Option<StatusCode> = None;
        let mut response = loop {
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
                let www_authenticate = joined(response.headers(), header::WWW_AUTHENTICATE);
                match self
                    .challenge(
                        status,
                        www_authenticate,
                        None,
                        token.take().map(|t| t.value),
                    )
                    .await
                {
                    Ok(t) => token = Some(t),
                    Err(e) => return Err(LegacyError::Failed(e.to_string())),
                }
                continue;
            }
            if !status.is_success() || !is_event_stream(response.headers()) {
                return Err(LegacyError::Refused(status));
            }
            break response;
        };
        let mut events = SseParser::default();
        let wait = Duration::from_secs(30);
        let endpoint = tokio::time::timeout(wait, async {
            loop {
                let bytes = match response.chunk().await {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => {
                        return Err("the event stream ended before its endpoint event".into());
                    }
                    Err(e) => return Err(format!("the event stream broke: {e}")),
                };
                let pushed = events.push_events(&bytes).map_err(|e| e.to_string())?;
                for (event, data) in pushed {
                    if event.as_deref() == Some("endpoint") {
                        return Ok(data);
                    }
                }
            }
        })
        .await
        .map_err(|_| format!("no endpoint event within {} s", wait.as_secs()))
        .and_then(|r| r)
        .map_err(|why| LegacyError::Failed(format!("{}: {why}", self.server)))?;
        let endpoint = self.legacy_endpoint(endpoint.trim())?;
        self.set_mode(Mode::Legacy { endpoint });
        let p = self.clone();
        let reader = tokio::spawn(async move {
            let why = match p.deliver_events_with(&mut response, events, false).await {
                Ok(()) => format!("{} closed the event stream", p.server),
                Err(why) => why,
            };
            log(&format!(
                "{why}; answers can no longer arrive, restart the proxy"
            ));
        });
        *self.legacy_reader.lock().unwrap_or_else(|p| p.into_inner()) = Some(reader);
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

    fn legacy_failure(&self, e: LegacyError) -> String {
        match e {
            LegacyError::Refused(status) => format!(
                "{} refused the HTTP+SSE transport (GET answered HTTP {} without an event stream); try --transport http-only",
                self.server,
                status.as_u16()
            ),
            LegacyError::Failed(why) => why,
        }
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
            let request = self
                .common_headers(request, token.as_ref(), None, "GET", &self.server)
                .await;
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

    /// A token from the daemon, or none (not logged in yet, or the daemon is away: the
    /// request goes without one, and a challenge will say what the server needs).
    async fn token(&self) -> Option<Token> {
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
                Ok(t) => return Some(t.into()),
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
    ) -> Result<Token, ClientError> {
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
            redirect_uri: self.args.callback.redirect_uri(),
        };
        let token: TokenGetResult = client
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
        Ok(token.into())
    }

    /// A DPoP proof for one request, signed by the daemon (the key never comes here);
    /// `None` when the daemon cannot sign, so the server's answer says what is wrong.
    async fn dpop_proof(&self, method: &str, url: &str, token: &str) -> Option<String> {
        let nonce = self
            .dpop_nonce
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let params = DpopProofParams {
            server: self.server.clone(),
            method: method.to_string(),
            url: url.to_string(),
            access_token: Some(token.to_string()),
            ath: None,
            nonce,
            account: self.args.account.clone(),
        };
        let mut daemon = self.daemon.lock().await;
        if daemon.is_none() {
            *daemon = Client::connect(&self.socket).await.ok();
        }
        let client = daemon.as_mut()?;
        match client
            .call::<_, DpopProofResult>(TOKEN_DPOP_PROOF, &params)
            .await
        {
            Ok(r) => Some(r.proof),
            Err(e) => {
                log(&format!("mcp-authd signed no DPoP proof: {e}"));
                if !matches!(e, ClientError::Rpc(_)) {
                    *daemon = None;
                }
                None
            }
        }
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
    /// The `data` of the JSON-RPC messages (event type `message` or none) completed by `bytes`.
    fn push(&mut self, bytes: &[u8]) -> Result<Vec<String>, EventTooLong> {
        Ok(self
            .push_events(bytes)?
            .into_iter()
            .filter(|(event, _)| event.as_deref().is_none_or(|e| e == "message"))
            .map(|(_, data)| data)
            .collect())
    }

    /// Every event completed by `bytes`, as (event type, data).
    fn push_events(&mut self, bytes: &[u8]) -> Result<Vec<(Option<String>, String)>, EventTooLong> {
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
                if !data.is_empty() {
                    out.push((event, data.join("\n")));
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

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"))
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
    fn header_values_expand_environment_variables() {
        // SAFETY: no other thread of this test reads or writes the environment.
        unsafe { std::env::set_var("MCP_AUTH_PROXY_TEST_VAR", "v1") };
        assert_eq!(
            expand_env("a ${MCP_AUTH_PROXY_TEST_VAR}-${MCP_AUTH_PROXY_TEST_VAR} $x ${").unwrap(),
            "a v1-v1 $x ${"
        );
        assert!(expand_env("${MCP_AUTH_PROXY_TEST_UNSET}").is_err());
        let h = parse_header_args(&["X-A:  b: c ".into()]).unwrap();
        assert_eq!(h["x-a"], "b: c");
    }

    #[test]
    fn parse_errors_answer_with_a_null_id() {
        let e = error_response(&Value::Null, -32700, "parse error");
        assert_eq!(e["id"], Value::Null);
        assert_eq!(e["error"]["code"], -32700);
    }
}
