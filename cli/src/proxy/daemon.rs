//! The token source: mcp-authd, over its socket. It hands out access tokens (`token.get`),
//! answers a server's refusal with a new one (`token.challenge`: refresh, step-up or a
//! browser login), signs DPoP proofs (`token.dpop_proof`: the key never comes here), and
//! reads the config file's headers for the server (`server.headers`). The proxy holds no
//! refresh token, key or client secret: only the access token of the moment.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use mcp_authd_ipc::methods::{
    ChallengeParams, DpopProofParams, DpopProofResult, LOGIN_PENDING, LoginPending, SERVER_HEADERS,
    ServerHeadersParams, ServerHeadersResult, TOKEN_CHALLENGE, TOKEN_DPOP_PROOF, TOKEN_GET,
    TokenGetParams, TokenGetResult, TokenType,
};
use mcp_authd_ipc::transport::{UrlRefused, check_url};
use mcp_authd_ipc::{Client, ClientError, ErrorKind};
use tokio::sync::Mutex;

use super::args::Args;
use super::stdio::log;

/// An access token from the daemon and how to present it.
pub(super) struct Token {
    pub(super) value: String,
    /// DPoP-bound: sent as `Authorization: DPoP …` with a proof the daemon signs.
    pub(super) dpop: bool,
}

impl From<TokenGetResult> for Token {
    fn from(mut t: TokenGetResult) -> Token {
        Token {
            dpop: t.token_type == TokenType::DPoP,
            // Taken out: the rest of the result zeroes its copy when dropped.
            value: std::mem::take(&mut t.access_token),
        }
    }
}

/// A server's refusal (401, 403, or a 400 saying `invalid_token`), for the daemon to
/// answer with a new token.
pub(super) struct Refusal {
    pub(super) status: u16,
    /// The `WWW-Authenticate` values, joined.
    pub(super) www_authenticate: Option<String>,
    /// The start of the body, for servers that explain themselves only there.
    pub(super) body: Option<String>,
    /// The token the server refused, if one was sent.
    pub(super) rejected_token: Option<String>,
}

/// How a challenge may log in: the proxy's flags, passed on to the daemon.
struct LoginOptions {
    interactive: bool,
    open_browser: bool,
    timeout_secs: Option<u64>,
    redirect_uri: Option<String>,
}

/// mcp-authd, asked for the tokens of one server (and account).
pub(super) struct TokenSource {
    socket: PathBuf,
    server: String,
    account: Option<String>,
    login: LoginOptions,
    /// The connection `token.get` and `token.dpop_proof` go through, kept between
    /// requests (challenges open their own: they may wait minutes for a browser login).
    kept: Mutex<Option<Client>>,
}

impl TokenSource {
    /// The daemon at `socket`, for the server and account `args` name.
    pub(super) fn new(socket: PathBuf, args: &Args) -> Self {
        TokenSource {
            socket,
            server: args.server.clone(),
            account: args.account.clone(),
            login: LoginOptions {
                interactive: !args.no_login,
                open_browser: !args.no_browser,
                timeout_secs: args.login_timeout,
                redirect_uri: args.callback.redirect_uri(),
            },
            kept: Mutex::new(None),
        }
    }

    /// A token from the daemon, or none (not logged in yet, or the daemon is away: the
    /// request goes without one, and a challenge will say what the server needs).
    pub(super) async fn token(&self) -> Option<Token> {
        let mut daemon = self.kept.lock().await;
        let params = TokenGetParams {
            server: self.server.clone(),
            account: self.account.clone(),
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

    /// The daemon's answer to a server's refusal: a new token (refreshed, stepped up, or
    /// from a browser login it runs, whose URL is logged while it waits), or why not.
    pub(super) async fn challenge(&self, refusal: Refusal) -> Result<Token, ClientError> {
        let mut client = Client::connect(&self.socket).await?;
        let params = ChallengeParams {
            server: self.server.clone(),
            status: refusal.status,
            www_authenticate: refusal.www_authenticate,
            body: refusal.body,
            rejected_token: refusal.rejected_token,
            interactive: Some(self.login.interactive),
            open_browser: Some(self.login.open_browser),
            timeout_secs: self.login.timeout_secs,
            account: self.account.clone(),
            redirect_uri: self.login.redirect_uri.clone(),
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

    /// A DPoP proof for one request (with the server's latest nonce, if it sent one);
    /// `None` when the daemon cannot sign, so the server's answer says what is wrong.
    pub(super) async fn dpop_proof(
        &self,
        method: &str,
        url: &str,
        token: &str,
        nonce: Option<String>,
    ) -> Option<String> {
        let params = DpopProofParams {
            server: self.server.clone(),
            method: method.to_string(),
            url: url.to_string(),
            access_token: Some(token.to_string()),
            ath: None,
            nonce,
            account: self.account.clone(),
        };
        let mut daemon = self.kept.lock().await;
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

    /// The config file's headers for the server, through the daemon (the one reader of
    /// the config); none when the daemon cannot be reached (the first request will say
    /// so) or is too old to know the method.
    pub(super) async fn config_headers(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let Ok(mut client) = Client::connect(&self.socket).await else {
            return Ok(BTreeMap::new());
        };
        let params = ServerHeadersParams {
            server: self.server.clone(),
        };
        match client
            .call::<_, ServerHeadersResult>(SERVER_HEADERS, &params)
            .await
        {
            Ok(r) => Ok(r.headers),
            Err(ClientError::Rpc(e)) if e.kind() == Some(ErrorKind::MethodNotFound) => {
                Ok(BTreeMap::new())
            }
            Err(e) => anyhow::bail!(
                "cannot read the configured headers for {}: {e}",
                self.server
            ),
        }
    }

    /// Bearer tokens go to the server only over TLS or loopback. Plain http to another
    /// host is for labs and only the daemon's config may allow it (`allow_insecure_http`):
    /// the daemon is asked before any request reaches the server, and every run says so
    /// on stderr.
    pub(super) async fn check_transport(&self) -> anyhow::Result<()> {
        check_transport(&self.socket, &self.server).await
    }
}

async fn check_transport(socket: &Path, server: &str) -> anyhow::Result<()> {
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex as StdMutex};

    use mcp_authd_ipc::{FrameReader, RpcError, write_frame};
    use serde_json::{Value, json};
    use tokio::io::BufReader;
    use tokio::net::UnixListener;

    use super::*;

    /// What the stand-in daemon answers: the method, its params, and which connection
    /// (from 1) the call came on.
    type Answer = dyn Fn(&str, &Value, usize) -> Result<Value, RpcError> + Send + Sync;

    /// A stand-in for mcp-authd on a real Unix socket in a private directory.
    struct FakeDaemon {
        _dir: tempfile::TempDir,
        socket: PathBuf,
        connections: Arc<AtomicUsize>,
    }

    impl FakeDaemon {
        fn start(
            answer: impl Fn(&str, &Value, usize) -> Result<Value, RpcError> + Send + Sync + 'static,
        ) -> FakeDaemon {
            let dir = tempfile::tempdir().unwrap();
            // The client trusts only a directory closed to others, as mcp-authd makes it.
            std::fs::set_permissions(
                dir.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o700),
            )
            .unwrap();
            let socket = dir.path().join("mcp-authd.sock");
            let listener = UnixListener::bind(&socket).unwrap();
            let connections = Arc::new(AtomicUsize::new(0));
            let answer: Arc<Answer> = Arc::new(answer);
            let counted = connections.clone();
            tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
                    let answer = answer.clone();
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut frames = FrameReader::new(BufReader::new(read));
                        while let Ok(Some(frame)) = frames.next_frame().await {
                            let request: Value = serde_json::from_slice(&frame).unwrap();
                            let method = request["method"].as_str().unwrap().to_string();
                            if method == TOKEN_CHALLENGE {
                                let pending = json!({"jsonrpc": "2.0", "method": LOGIN_PENDING,
                                    "params": {"server": "https://mcp.example", "authorization_url":
                                    "https://as.example/authorize", "timeout_secs": 5}});
                                write_frame(&mut write, &pending).await.unwrap();
                            }
                            let reply = match answer(&method, &request["params"], n) {
                                Ok(result) => {
                                    json!({"jsonrpc": "2.0", "id": request["id"], "result": result})
                                }
                                Err(e) => {
                                    json!({"jsonrpc": "2.0", "id": request["id"], "error": e})
                                }
                            };
                            if write_frame(&mut write, &reply).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            });
            FakeDaemon {
                _dir: dir,
                socket,
                connections,
            }
        }

        fn source(&self) -> TokenSource {
            source_at(self.socket.clone())
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }
    }

    fn source_at(socket: PathBuf) -> TokenSource {
        TokenSource {
            socket,
            server: "https://mcp.example/mcp".into(),
            account: Some("work".into()),
            login: LoginOptions {
                interactive: false,
                open_browser: true,
                timeout_secs: Some(7),
                redirect_uri: Some("http://127.0.0.1:8765/cb".into()),
            },
            kept: Mutex::new(None),
        }
    }

    fn token(value: &str, token_type: &str) -> Value {
        json!({"access_token": value, "token_type": token_type, "expires_at": 0,
               "expires_in": 60, "scopes": [], "grant": "g"})
    }

    #[tokio::test]
    async fn a_kept_connection_the_daemon_refuses_is_replaced_once() {
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let daemon = FakeDaemon::start(move |method, params, connection| {
            assert_eq!(method, TOKEN_GET);
            assert_eq!(params["server"], "https://mcp.example/mcp");
            assert_eq!(params["account"], "work");
            match (connection, counted.fetch_add(1, Ordering::SeqCst)) {
                (1, 0) => Ok(token("t1", "Bearer")),
                // The daemon's per-connection limit: a new connection is the cure.
                (1, _) => Err(RpcError::new(ErrorKind::LimitExceeded, "too many")),
                (2, _) => Ok(token("t2", "DPoP")),
                _ => Err(RpcError::new(ErrorKind::LimitExceeded, "still too many")),
            }
        });
        let source = daemon.source();
        let t = source.token().await.unwrap();
        assert_eq!((t.value.as_str(), t.dpop), ("t1", false));
        let t = source.token().await.unwrap();
        assert_eq!((t.value.as_str(), t.dpop), ("t2", true));
        assert_eq!(daemon.connections(), 2);
        // Refused on a connection just made: no token, and no loop of new connections.
        let source = daemon.source();
        assert!(source.token().await.is_none());
        assert_eq!(daemon.connections(), 3);
    }

    #[tokio::test]
    async fn a_daemon_that_is_away_gives_no_token_and_challenges_say_so() {
        let dir = tempfile::tempdir().unwrap();
        let source = source_at(dir.path().join("nobody.sock"));
        assert!(source.token().await.is_none());
        assert!(
            source
                .dpop_proof("POST", "https://mcp.example/mcp", "t", None)
                .await
                .is_none()
        );
        assert!(source.config_headers().await.unwrap().is_empty());
        let refusal = Refusal {
            status: 401,
            www_authenticate: None,
            body: None,
            rejected_token: None,
        };
        let e = source.challenge(refusal).await.err().unwrap();
        assert!(matches!(e, ClientError::NotRunning { .. }), "{e}");
        assert!(e.to_string().contains("mcp-authd is not running"), "{e}");
    }

    #[tokio::test]
    async fn a_challenge_carries_the_refusal_and_the_login_flags() {
        let seen = Arc::new(StdMutex::new(Vec::new()));
        let record = seen.clone();
        let daemon = FakeDaemon::start(move |method, params, _| {
            record.lock().unwrap().push(params.clone());
            match (method, params["status"].as_u64()) {
                (TOKEN_CHALLENGE, Some(401)) => Ok(token("new", "Bearer")),
                _ => Err(RpcError::authorization_required(
                    "https://mcp.example/mcp",
                    &[],
                    "a login is needed",
                )),
            }
        });
        let source = daemon.source();
        let t = source
            .challenge(Refusal {
                status: 401,
                www_authenticate: Some("Bearer error=\"invalid_token\"".into()),
                body: Some("expired".into()),
                rejected_token: Some("old".into()),
            })
            .await
            .unwrap();
        assert_eq!(t.value, "new");
        let params = seen.lock().unwrap()[0].clone();
        assert_eq!(params["status"], 401);
        assert_eq!(params["www_authenticate"], "Bearer error=\"invalid_token\"");
        assert_eq!(params["body"], "expired");
        assert_eq!(params["rejected_token"], "old");
        assert_eq!(params["interactive"], false);
        assert_eq!(params["open_browser"], true);
        assert_eq!(params["timeout_secs"], 7);
        assert_eq!(params["account"], "work");
        assert_eq!(params["redirect_uri"], "http://127.0.0.1:8765/cb");
        // The daemon's refusal comes back as it was sent, with its kind.
        let e = source
            .challenge(Refusal {
                status: 403,
                www_authenticate: None,
                body: None,
                rejected_token: None,
            })
            .await
            .err()
            .unwrap();
        let ClientError::Rpc(e) = e else {
            panic!("{e}")
        };
        assert_eq!(e.kind(), Some(ErrorKind::AuthorizationRequired));
        // Each challenge on a connection of its own: a login may hold one for minutes.
        assert_eq!(daemon.connections(), 2);
    }

    #[tokio::test]
    async fn proofs_carry_the_nonce_and_a_refusal_keeps_the_connection() {
        let daemon = FakeDaemon::start(|method, params, _| {
            assert_eq!(method, TOKEN_DPOP_PROOF);
            assert_eq!(params["access_token"], "t");
            match params["nonce"].as_str() {
                Some(nonce) => Ok(json!({"proof": format!("proof-with-{nonce}"), "grant": "g"})),
                None => Err(RpcError::new(ErrorKind::InvalidParams, "not DPoP-bound")),
            }
        });
        let source = daemon.source();
        let proof = source.dpop_proof("POST", "https://mcp.example/mcp", "t", Some("n1".into()));
        assert_eq!(proof.await.unwrap(), "proof-with-n1");
        assert!(
            source
                .dpop_proof("GET", "https://mcp.example/mcp", "t", None)
                .await
                .is_none()
        );
        assert!(
            source
                .dpop_proof("GET", "https://mcp.example/mcp", "t", Some("n2".into()))
                .await
                .is_some()
        );
        assert_eq!(daemon.connections(), 1);
    }

    #[tokio::test]
    async fn configured_headers_from_a_new_or_an_old_daemon() {
        let daemon = FakeDaemon::start(|method, _, connection| {
            assert_eq!(method, SERVER_HEADERS);
            match connection {
                1 => Ok(json!({"headers": {"X-Team": "blue"}})),
                2 => Err(RpcError::new(ErrorKind::MethodNotFound, "no such method")),
                _ => Err(RpcError::new(
                    ErrorKind::Internal,
                    "the config is unreadable",
                )),
            }
        });
        let source = daemon.source();
        let headers = source.config_headers().await.unwrap();
        assert_eq!(headers["X-Team"], "blue");
        // An older daemon, without the method: none configured.
        assert!(source.config_headers().await.unwrap().is_empty());
        let e = source.config_headers().await.unwrap_err().to_string();
        assert!(
            e.contains("cannot read the configured headers for https://mcp.example/mcp"),
            "{e}"
        );
        assert!(e.contains("the config is unreadable"), "{e}");
    }
}
