//! An OAuth-protected MCP server (Streamable HTTP transport, JSON responses
//! only) for end-to-end tests.
//!
//! It implements the resource-server half of the MCP authorization spec:
//! RFC 9728 protected-resource metadata at the path-based well-known URL, and
//! RFC 6750 bearer challenges that point clients at that metadata. Tokens are
//! checked directly against the [`AuthServer`]'s in-process state, with the
//! advertised `resource` as the required audience, so a client that requests
//! tokens for the wrong resource is caught.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::auth_server::{AuthServer, Shared};
use crate::net::{ServerHandle, bind_loopback, spawn_server};

const PRM_PATH: &str = "/.well-known/oauth-protected-resource/mcp";
/// Protocol version answered when the client does not name one.
const DEFAULT_PROTOCOL_VERSION: &str = "2025-11-25";

/// What the protected resource demands and advertises.
#[derive(Debug, Clone)]
pub struct McpOptions {
    /// Scopes every request's token must carry; otherwise 403.
    pub required_scopes: Vec<String>,
    /// `scope=` of the 401 challenge; `None` omits it so the client must fall
    /// back to the metadata's `scopes_supported`.
    pub challenge_scope: Option<String>,
    /// `scopes_supported` in the protected-resource metadata.
    pub scopes_supported: Vec<String>,
    /// Advertised `resource`; `None` uses the MCP URL. Setting a different
    /// value lets tests check that clients reject mismatched metadata.
    pub resource_override: Option<String>,
    /// Answer every token with 403 `insufficient_scope`, whatever it carries: a server
    /// no login can satisfy, for testing that clients do not loop through logins.
    pub always_insufficient: bool,
    /// Full Streamable HTTP: a session id from `initialize` that later requests must
    /// carry with the negotiated `MCP-Protocol-Version`, answers as SSE, a server stream
    /// on GET with one notification, and DELETE ending the session.
    pub streaming: bool,
    /// Answer an invalid or expired token with this status and a JSON body saying
    /// `invalid_token`, without `WWW-Authenticate` (as some gateways do), instead of 401.
    pub invalid_token_status: Option<u16>,
    /// Serve under this host name instead of `127.0.0.1` (see [`crate::host_alias`]).
    pub host: Option<String>,
    /// The origin clients reach this server at behind a TLS front; `None`: its own
    /// loopback address.
    pub public_origin: Option<String>,
    /// RFC 9449 §9: a DPoP proof without the server's nonce is answered 401
    /// `use_dpop_nonce` with a `DPoP-Nonce` header.
    pub dpop_nonce: bool,
    /// Only the older HTTP+SSE transport (2024-11-05): POST to the MCP URL is 404, a GET
    /// opens the event stream whose `endpoint` event names `/messages?sessionId=…`, and
    /// answers to what is POSTed there come on that stream.
    pub legacy_sse: bool,
    /// With `legacy_sse`, the `endpoint` event's data instead of the server's own
    /// `/messages?sessionId=…`: a hostile server pointing messages (and the token) elsewhere.
    pub legacy_endpoint: Option<String>,
}

impl Default for McpOptions {
    fn default() -> Self {
        Self {
            required_scopes: vec!["mcp:read".into()],
            challenge_scope: Some("mcp:read".into()),
            scopes_supported: vec!["mcp:read".into(), "mcp:write".into()],
            resource_override: None,
            always_insufficient: false,
            streaming: false,
            invalid_token_status: None,
            host: None,
            public_origin: None,
            dpop_nonce: false,
            legacy_sse: false,
            legacy_endpoint: None,
        }
    }
}

/// A running MCP server; shuts down when dropped.
pub struct McpServer {
    url: String,
    state: Arc<McpState>,
    listen_addr: std::net::SocketAddr,
    _server: ServerHandle,
}

impl McpServer {
    /// Binds an ephemeral loopback port and starts serving, trusting `auth`.
    ///
    /// Panics if the options cannot be expressed in an HTTP header (a test
    /// bug).
    pub async fn start(auth: &AuthServer, opts: McpOptions) -> McpServer {
        let (listener, origin) = bind_loopback().await;
        let listen_addr = listener.local_addr().expect("a bound listener's address");
        let origin = opts
            .public_origin
            .clone()
            .unwrap_or_else(|| crate::net::named(&origin, opts.host.as_deref()));
        let url = format!("{origin}/mcp");
        let challenges = Challenges::new(&format!("{origin}{PRM_PATH}"), &opts);
        let state = Arc::new(McpState {
            auth: auth.shared(),
            resource: opts
                .resource_override
                .clone()
                .unwrap_or_else(|| url.clone()),
            challenges,
            opts,
            authorized: AtomicU32::new(0),
            streams: AtomicU32::new(0),
            deleted: AtomicU32::new(0),
            dpop_requests: AtomicU32::new(0),
            dpop_nonce_challenges: AtomicU32::new(0),
            url: url.clone(),
            last_token: Default::default(),
            seen_headers: Mutex::new(Vec::new()),
            legacy_stream: Mutex::new(None),
        });
        let app = Router::new()
            .route(PRM_PATH, get(protected_resource_metadata))
            // Explicitly absent: clients must use the path-based URL (RFC 9728
            // section 3.1) or the one from the challenge.
            .route(
                "/.well-known/oauth-protected-resource",
                get(|| async { StatusCode::NOT_FOUND }),
            )
            .route("/mcp", get(mcp_get).post(mcp_post).delete(mcp_delete))
            .route(LEGACY_MESSAGES_PATH, post(legacy_post))
            .with_state(Arc::clone(&state));
        McpServer {
            url,
            state,
            listen_addr,
            _server: spawn_server(listener, app),
        }
    }

    /// The loopback address it listens on (what a TLS front forwards to).
    pub fn listen_addr(&self) -> std::net::SocketAddr {
        self.listen_addr
    }

    /// The MCP endpoint, `http://127.0.0.1:PORT/mcp`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Requests that passed authorization (valid token with the required
    /// scopes).
    pub fn authorized_requests(&self) -> u32 {
        self.state.authorized.load(Ordering::SeqCst)
    }

    /// Requests admitted with a DPoP-bound token and a valid proof.
    pub fn dpop_requests(&self) -> u32 {
        self.state.dpop_requests.load(Ordering::SeqCst)
    }

    /// `use_dpop_nonce` answers, with `dpop_nonce`.
    pub fn dpop_nonce_challenges(&self) -> u32 {
        self.state.dpop_nonce_challenges.load(Ordering::SeqCst)
    }

    /// The access token of the last request this server authorized (for a test to ask the
    /// authorization server whose it is: [`crate::AuthServer::subject_of`]).
    pub fn last_authorized_token(&self) -> Option<String> {
        self.state
            .last_token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The values of header `name` on every request to the MCP endpoint (and the
    /// HTTP+SSE message endpoint) so far, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.state
            .seen_headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|h| {
                h.get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            })
            .collect()
    }

    /// Server streams (GET) opened, with `streaming` or `legacy_sse`.
    pub fn streams_opened(&self) -> u32 {
        self.state.streams.load(Ordering::SeqCst)
    }

    /// Sessions ended by DELETE, with `streaming`.
    pub fn sessions_deleted(&self) -> u32 {
        self.state.deleted.load(Ordering::SeqCst)
    }

    /// The HTTP status of a `tools/list` call carrying `token`, sent as any MCP client
    /// would: 200 when this server accepts the token.
    pub async fn status_with_token(&self, token: &str) -> reqwest::StatusCode {
        reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("an HTTP client")
            .post(&self.url)
            .bearer_auth(token)
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}))
            .send()
            .await
            .expect("the MCP server on 127.0.0.1 answers")
            .status()
    }
}

struct McpState {
    auth: Arc<Shared>,
    /// The audience tokens must be bound to: the advertised PRM resource.
    resource: String,
    challenges: Challenges,
    opts: McpOptions,
    authorized: AtomicU32,
    streams: AtomicU32,
    deleted: AtomicU32,
    dpop_requests: AtomicU32,
    dpop_nonce_challenges: AtomicU32,
    /// The MCP endpoint: what a DPoP proof's `htu` must name.
    url: String,
    /// The token of the last authorized request (whose account made it).
    last_token: Mutex<Option<String>>,
    seen_headers: Mutex<Vec<HeaderMap>>,
    /// With `legacy_sse`: where answers go, to the open event stream.
    legacy_stream: Mutex<Option<mpsc::UnboundedSender<String>>>,
}

impl McpState {
    fn record(&self, headers: &HeaderMap) {
        self.seen_headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(headers.clone());
    }
}

const LEGACY_MESSAGES_PATH: &str = "/messages";

const SESSION_ID: &str = "session-1";

/// With `streaming`, a request after `initialize` must carry the session and the version.
fn session_problem(state: &McpState, headers: &HeaderMap) -> Option<&'static str> {
    if !state.opts.streaming {
        return None;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if header("mcp-session-id") != Some(SESSION_ID) {
        return Some("missing or unknown Mcp-Session-Id");
    }
    if header("mcp-protocol-version") != Some(DEFAULT_PROTOCOL_VERSION) {
        return Some("missing or wrong MCP-Protocol-Version");
    }
    None
}

fn sse(message: &Value) -> Response {
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        format!("event: message\nid: 1\ndata: {message}\n\n"),
    )
        .into_response()
}

/// The three `WWW-Authenticate` values, built once at startup so request
/// handling cannot fail on header construction.
struct Challenges {
    /// No (usable) credentials: RFC 6750 section 3.1 says no error code.
    missing: HeaderValue,
    invalid_token: HeaderValue,
    insufficient_scope: HeaderValue,
}

impl Challenges {
    fn new(metadata_url: &str, opts: &McpOptions) -> Self {
        let scope = opts
            .challenge_scope
            .as_ref()
            .map(|s| format!(", scope=\"{s}\""))
            .unwrap_or_default();
        let header = |value: String| {
            HeaderValue::from_str(&value)
                .unwrap_or_else(|_| panic!("invalid WWW-Authenticate value {value:?}"))
        };
        Self {
            missing: header(format!(
                "Bearer resource_metadata=\"{metadata_url}\"{scope}"
            )),
            invalid_token: header(format!(
                "Bearer error=\"invalid_token\", resource_metadata=\"{metadata_url}\"{scope}"
            )),
            insufficient_scope: header(format!(
                "Bearer error=\"insufficient_scope\", scope=\"{}\", resource_metadata=\"{metadata_url}\"",
                opts.required_scopes.join(" ")
            )),
        }
    }
}

/// RFC 9728 metadata.
/// This server checks DPoP proofs whenever its authorization server binds tokens to keys,
/// and says so (RFC 9728 §2).
async fn protected_resource_metadata(State(state): State<Arc<McpState>>) -> Response {
    let mut body = json!({
        "resource": state.resource,
        "authorization_servers": [state.auth.issuer()],
        "scopes_supported": state.opts.scopes_supported,
        "bearer_methods_supported": ["header"],
    });
    if state.auth.offers_dpop() {
        body["dpop_signing_alg_values_supported"] = json!(["ES256"]);
    }
    axum::Json(body).into_response()
}

/// Why a request was not admitted; each maps to one challenge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    MissingToken,
    InvalidToken,
    InsufficientScope,
    /// A DPoP proof without the server's nonce (RFC 9449 §9).
    UseDpopNonce,
}

/// Admits a request only with a valid token carrying the required scopes, counting
/// admitted requests: a bearer token as `Bearer`, a DPoP-bound one as `DPoP` with a fresh
/// proof for this request by the key it is bound to (RFC 9449 §7).
fn authorize(state: &McpState, headers: &HeaderMap, method: &str) -> Result<(), Rejection> {
    authorize_at(state, headers, method, &state.url)
}

/// [`authorize`] for a request to `url` (a DPoP proof's `htu`, without query).
fn authorize_at(
    state: &McpState,
    headers: &HeaderMap,
    method: &str,
    url: &str,
) -> Result<(), Rejection> {
    let (scheme, token) = authorization(headers).ok_or(Rejection::MissingToken)?;
    let scopes = state
        .auth
        .validate_access_token(token, &state.resource)
        .map_err(|_| Rejection::InvalidToken)?;
    match state.auth.dpop_binding(token) {
        None if scheme.eq_ignore_ascii_case("bearer") => {}
        Some(jkt) if scheme.eq_ignore_ascii_case("dpop") => {
            let proof = crate::dpop::header(headers)
                .ok()
                .flatten()
                .ok_or(Rejection::InvalidToken)?;
            let proof = crate::dpop::verify(proof, method, url, Some(token))
                .map_err(|_| Rejection::InvalidToken)?;
            if proof.jkt != jkt || !state.auth.fresh_jti(&proof.jti) {
                return Err(Rejection::InvalidToken);
            }
            if state.opts.dpop_nonce && proof.nonce.as_deref() != Some(state.auth.dpop_nonce()) {
                state.dpop_nonce_challenges.fetch_add(1, Ordering::SeqCst);
                return Err(Rejection::UseDpopNonce);
            }
            state.dpop_requests.fetch_add(1, Ordering::SeqCst);
        }
        // A bound token sent as a bearer one, or the other way round.
        _ => return Err(Rejection::InvalidToken),
    }
    if state.opts.always_insufficient
        || !state
            .opts
            .required_scopes
            .iter()
            .all(|s| scopes.contains(s))
    {
        return Err(Rejection::InsufficientScope);
    }
    state.authorized.fetch_add(1, Ordering::SeqCst);
    *state
        .last_token
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token.to_string());
    Ok(())
}

/// The RFC 6750 challenge response for a rejection.
fn challenge(state: &McpState, rejection: Rejection) -> Response {
    if let (Rejection::InvalidToken, Some(status)) = (rejection, state.opts.invalid_token_status) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        return (status, axum::Json(json!({"error": "invalid_token"}))).into_response();
    }
    if rejection == Rejection::UseDpopNonce {
        return (
            StatusCode::UNAUTHORIZED,
            [
                (
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("DPoP error=\"use_dpop_nonce\", algs=\"ES256\""),
                ),
                (
                    header::HeaderName::from_static("dpop-nonce"),
                    HeaderValue::from_str(state.auth.dpop_nonce()).expect("a header-safe nonce"),
                ),
            ],
            axum::Json(json!({"error": "use_dpop_nonce"})),
        )
            .into_response();
    }
    let (status, value, error) = match rejection {
        Rejection::MissingToken => (
            StatusCode::UNAUTHORIZED,
            &state.challenges.missing,
            "unauthorized",
        ),
        Rejection::InvalidToken => (
            StatusCode::UNAUTHORIZED,
            &state.challenges.invalid_token,
            "invalid_token",
        ),
        Rejection::InsufficientScope => (
            StatusCode::FORBIDDEN,
            &state.challenges.insufficient_scope,
            "insufficient_scope",
        ),
        Rejection::UseDpopNonce => unreachable!("answered above"),
    };
    let body = axum::Json(json!({"error": error}));
    (status, [(header::WWW_AUTHENTICATE, value.clone())], body).into_response()
}

/// The scheme and token of an `Authorization: <scheme> <token>` header (the scheme is
/// case-insensitive per RFC 9110 section 11.1; the caller checks it).
fn authorization(headers: &HeaderMap) -> Option<(&str, &str)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (!token.is_empty()).then_some((scheme, token))
}

/// The server offers no SSE stream, which the transport allows with a 405.
async fn mcp_get(State(state): State<Arc<McpState>>, headers: HeaderMap) -> Response {
    state.record(&headers);
    if let Err(rejection) = authorize(&state, &headers, "GET") {
        return challenge(&state, rejection);
    }
    if state.opts.legacy_sse {
        return legacy_stream(&state);
    }
    if !state.opts.streaming {
        return method_not_allowed();
    }
    if let Some(problem) = session_problem(&state, &headers) {
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32600, problem);
    }
    state.streams.fetch_add(1, Ordering::SeqCst);
    sse(&json!({"jsonrpc": "2.0", "method": "notifications/message",
                "params": {"level": "info", "data": "from the server stream"}}))
}

async fn mcp_delete(State(state): State<Arc<McpState>>, headers: HeaderMap) -> Response {
    state.record(&headers);
    if let Err(rejection) = authorize(&state, &headers, "DELETE") {
        return challenge(&state, rejection);
    }
    if !state.opts.streaming {
        return method_not_allowed();
    }
    if let Some(problem) = session_problem(&state, &headers) {
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32600, problem);
    }
    state.deleted.fetch_add(1, Ordering::SeqCst);
    StatusCode::NO_CONTENT.into_response()
}

fn method_not_allowed() -> Response {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [(header::ALLOW, HeaderValue::from_static("POST"))],
    )
        .into_response()
}

async fn mcp_post(State(state): State<Arc<McpState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.record(&headers);
    if state.opts.legacy_sse {
        // An HTTP+SSE server has no POST on its stream URL: what makes clients fall back.
        return StatusCode::NOT_FOUND.into_response();
    }
    if let Err(rejection) = authorize(&state, &headers, "POST") {
        return challenge(&state, rejection);
    }
    let message = match serde_json::from_slice::<Value>(&body) {
        Ok(message) => message,
        Err(_) => return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32700, "parse error"),
    };
    if !state.opts.streaming {
        return handle_message(&message);
    }
    let is_initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
    if !is_initialize && let Some(problem) = session_problem(&state, &headers) {
        return rpc_error(StatusCode::BAD_REQUEST, Value::Null, -32600, problem);
    }
    let id = message.get("id").filter(|id| !id.is_null());
    let method = message.get("method").and_then(Value::as_str);
    let mut response = match (method, id) {
        (Some(method), Some(id)) => match dispatch(method, &message["params"]) {
            Some(result) => sse(&json!({"jsonrpc": "2.0", "id": id, "result": result})),
            None => rpc_error(StatusCode::OK, id.clone(), -32601, "method not found"),
        },
        _ => handle_message(&message),
    };
    if is_initialize {
        response
            .headers_mut()
            .insert("mcp-session-id", HeaderValue::from_static(SESSION_ID));
    }
    response
}

/// The HTTP+SSE event stream: the `endpoint` event, then every answer to what is POSTed
/// to it.
fn legacy_stream(state: &McpState) -> Response {
    state.streams.fetch_add(1, Ordering::SeqCst);
    let (tx, rx) = mpsc::unbounded_channel::<String>();
    let endpoint = state
        .opts
        .legacy_endpoint
        .clone()
        .unwrap_or_else(|| format!("{LEGACY_MESSAGES_PATH}?sessionId=legacy-1"));
    let _ = tx.send(format!("event: endpoint\ndata: {endpoint}\n\n"));
    *state
        .legacy_stream
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = Some(tx);
    let events = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(events),
    )
        .into_response()
}

/// A message for the HTTP+SSE transport: 202 here, the answer on the event stream.
async fn legacy_post(
    State(state): State<Arc<McpState>>,
    axum::extract::Query(query): axum::extract::Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    state.record(&headers);
    let messages = url::Url::parse(&state.url)
        .and_then(|u| u.join(LEGACY_MESSAGES_PATH))
        .map(String::from)
        .unwrap_or_default();
    if let Err(rejection) = authorize_at(&state, &headers, "POST", &messages) {
        return challenge(&state, rejection);
    }
    if query.get("sessionId").map(String::as_str) != Some("legacy-1") {
        return (StatusCode::NOT_FOUND, "unknown session").into_response();
    }
    let Ok(message) = serde_json::from_slice::<Value>(&body) else {
        return (StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let id = message.get("id").filter(|id| !id.is_null());
    let method = message.get("method").and_then(Value::as_str);
    let answer = match (method, id) {
        (Some(method), Some(id)) => match dispatch(method, &message["params"]) {
            Some(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            None => json!({"jsonrpc": "2.0", "id": id,
                           "error": {"code": -32601, "message": "method not found"}}),
        },
        _ => return StatusCode::ACCEPTED.into_response(),
    };
    let stream = state
        .legacy_stream
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match stream.as_ref() {
        Some(tx)
            if tx
                .send(format!("event: message\ndata: {answer}\n\n"))
                .is_ok() =>
        {
            StatusCode::ACCEPTED.into_response()
        }
        _ => (StatusCode::CONFLICT, "no open event stream").into_response(),
    }
}

/// Answers one JSON-RPC message: requests get a response, notifications and
/// client responses are acknowledged with 202 as the transport requires.
fn handle_message(message: &Value) -> Response {
    let invalid = || {
        rpc_error(
            StatusCode::BAD_REQUEST,
            Value::Null,
            -32600,
            "invalid request",
        )
    };
    let Some(object) = message.as_object() else {
        return invalid();
    };
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return invalid();
    }
    let id = object.get("id").filter(|id| !id.is_null());
    let method = object.get("method").and_then(Value::as_str);
    match (method, id) {
        (Some(method), Some(id)) => {
            let params = object.get("params").unwrap_or(&Value::Null);
            match dispatch(method, params) {
                Some(result) => axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result}))
                    .into_response(),
                None => rpc_error(StatusCode::OK, id.clone(), -32601, "method not found"),
            }
        }
        (Some(_), None) => StatusCode::ACCEPTED.into_response(),
        (None, Some(_)) if object.contains_key("result") || object.contains_key("error") => {
            StatusCode::ACCEPTED.into_response()
        }
        (None, _) => invalid(),
    }
}

/// Results of the few methods this server implements.
fn dispatch(method: &str, params: &Value) -> Option<Value> {
    match method {
        "initialize" => {
            let version = params
                .get("protocolVersion")
                .and_then(Value::as_str)
                .unwrap_or(DEFAULT_PROTOCOL_VERSION);
            Some(json!({
                "protocolVersion": version,
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "test-mcp", "version": "0"},
            }))
        }
        "ping" => Some(json!({})),
        "tools/list" => Some(json!({
            "tools": [{
                "name": "whoami",
                "description": "Answers \"ok\" to prove the call was authorized",
                "inputSchema": {"type": "object"},
            }],
        })),
        "tools/call" => Some(json!({"content": [{"type": "text", "text": "ok"}]})),
        _ => None,
    }
}

fn rpc_error(status: StatusCode, id: Value, code: i64, message: &str) -> Response {
    let body = json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}});
    (status, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::AsOptions;
    use crate::test_support::{http, obtain_tokens};

    async fn post(server: &McpServer, token: Option<&str>, body: Value) -> reqwest::Response {
        let mut request = http()
            .post(server.url())
            .header(
                reqwest::header::ACCEPT,
                "application/json, text/event-stream",
            )
            .json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.unwrap()
    }

    fn www_authenticate(response: &reqwest::Response) -> &str {
        response.headers()[reqwest::header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn challenges_without_token_and_serves_with_one() {
        let auth = AuthServer::start(AsOptions::default()).await;
        let mcp = McpServer::start(&auth, McpOptions::default()).await;
        let origin = mcp.url().trim_end_matches("/mcp").to_owned();
        let initialize = json!({
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                       "clientInfo": {"name": "t", "version": "0"}},
        });

        let response = post(&mcp, None, initialize.clone()).await;
        assert_eq!(response.status(), 401);
        assert_eq!(
            www_authenticate(&response),
            format!(
                "Bearer resource_metadata=\"{origin}/.well-known/oauth-protected-resource/mcp\", scope=\"mcp:read\""
            )
        );

        let metadata: Value = http()
            .get(format!("{origin}{PRM_PATH}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(metadata["resource"], mcp.url());
        assert_eq!(metadata["authorization_servers"], json!([auth.issuer()]));
        let root = http()
            .get(format!("{origin}/.well-known/oauth-protected-resource"))
            .send()
            .await
            .unwrap();
        assert_eq!(root.status(), 404);

        let (_, tokens) = obtain_tokens(&auth, mcp.url(), "mcp:read").await;
        let token = tokens["access_token"].as_str().unwrap();
        let response = post(&mcp, Some(token), initialize).await;
        assert_eq!(response.status(), 200);
        let result: Value = response.json().await.unwrap();
        assert_eq!(result["id"], 1);
        assert_eq!(result["result"]["protocolVersion"], "2025-06-18");

        let notification = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
        assert_eq!(post(&mcp, Some(token), notification).await.status(), 202);
        let call = json!({"jsonrpc": "2.0", "id": "c", "method": "tools/call",
                          "params": {"name": "whoami", "arguments": {}}});
        let result: Value = post(&mcp, Some(token), call).await.json().await.unwrap();
        assert_eq!(result["result"]["content"][0]["text"], "ok");
        let unknown = json!({"jsonrpc": "2.0", "id": 2, "method": "nope"});
        let result: Value = post(&mcp, Some(token), unknown).await.json().await.unwrap();
        assert_eq!(result["error"]["code"], -32601);
        assert_eq!(mcp.authorized_requests(), 4);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn rejects_foreign_revoked_and_underscoped_tokens() {
        let auth = AuthServer::start(AsOptions::default()).await;
        let mcp = McpServer::start(
            &auth,
            McpOptions {
                required_scopes: vec!["mcp:read".into(), "mcp:write".into()],
                challenge_scope: None,
                ..McpOptions::default()
            },
        )
        .await;
        let ping = json!({"jsonrpc": "2.0", "id": 1, "method": "ping"});

        // Token for another resource.
        let (_, tokens) = obtain_tokens(&auth, "http://127.0.0.1:1/mcp", "mcp:read").await;
        let response = post(&mcp, tokens["access_token"].as_str(), ping.clone()).await;
        assert_eq!(response.status(), 401);
        assert!(
            www_authenticate(&response)
                .starts_with("Bearer error=\"invalid_token\", resource_metadata=\"")
        );
        assert!(!www_authenticate(&response).contains("scope="));

        // Right resource, too few scopes.
        let (client_id, tokens) = obtain_tokens(&auth, mcp.url(), "mcp:read").await;
        let token = tokens["access_token"].as_str().unwrap();
        let response = post(&mcp, Some(token), ping.clone()).await;
        assert_eq!(response.status(), 403);
        assert!(www_authenticate(&response).starts_with(
            "Bearer error=\"insufficient_scope\", scope=\"mcp:read mcp:write\", resource_metadata=\""
        ));

        // Revoked through RFC 7009.
        let revoked = http()
            .post(format!("{}/revoke", auth.issuer()))
            .form(&[("token", token), ("client_id", &client_id)])
            .send()
            .await
            .unwrap();
        assert_eq!(revoked.status(), 200);
        let response = post(&mcp, Some(token), ping).await;
        assert_eq!(response.status(), 401);
        assert_eq!(mcp.authorized_requests(), 0);
    }
}
