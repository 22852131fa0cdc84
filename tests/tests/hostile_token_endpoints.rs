//! Misbehaving token endpoints and authorization callbacks. Each token endpoint case is a
//! raw HTTP server the test starts on 127.0.0.1 (discovery, registration and authorization
//! behave; only `/token` misbehaves); each callback case drives the daemon's loopback
//! redirect by hand. Every case ends with a clear error (or a bounded, believable token) in
//! bounded time, and a healthy grant beside it keeps working.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcp_authd_tests::daemon::{Daemon, DaemonHome, bin};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use url::Url;

const YEAR_AND_A_DAY: i64 = 366 * 24 * 3600;

/// A raw HTTP/1.1 server where every case lives under `/<case>/` and only `/token` differs.
async fn hostile_as() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let b = Arc::new(base.clone());
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            let b = b.clone();
            tokio::spawn(async move {
                let _ = serve(conn, &b).await;
            });
        }
    });
    base
}

async fn serve(mut conn: TcpStream, base: &str) -> std::io::Result<()> {
    // Read the head and any body, so closing never resets the client's request.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap_or(0))
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let target = head.split_whitespace().nth(1).unwrap_or("/").to_string();
    let request_body = String::from_utf8_lossy(&buf[head_end..]).to_string();
    let (status, mut extra, content_type, body) = route(base, &target, &request_body);
    if target.contains("skewed") {
        // A server whose clock is an hour ahead of this machine's.
        let ahead = std::time::SystemTime::now() + Duration::from_secs(3600);
        extra.push_str(&format!("Date: {}\r\n", httpdate::fmt_http_date(ahead)));
    }
    conn.write_all(
        format!(
            "HTTP/1.1 {status} X\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    conn.shutdown().await
}

/// Status, extra header lines, content type and body for a request target.
fn route(base: &str, target: &str, request_body: &str) -> (u16, String, &'static str, String) {
    let url = Url::parse(&format!("{base}{target}")).unwrap();
    let path = url.path();
    let case = path.split('/').nth(1).unwrap_or("");
    let json = |v: Value| (200, String::new(), "application/json", v.to_string());
    if path.ends_with("/mcp") {
        let extra = format!("WWW-Authenticate: Bearer resource_metadata=\"{base}/{case}/prm\"\r\n");
        return (401, extra, "application/json", "{}".into());
    }
    if path.ends_with("/prm") {
        return json(serde_json::json!({
            "resource": format!("{base}/{case}/mcp"),
            "authorization_servers": [format!("{base}/{case}")],
        }));
    }
    if path.ends_with("/.well-known/openid-configuration") {
        return json(serde_json::json!({
            "issuer": format!("{base}/{case}"),
            "authorization_endpoint": format!("{base}/{case}/authorize"),
            "token_endpoint": format!("{base}/{case}/token"),
            "registration_endpoint": format!("{base}/{case}/register"),
            "code_challenge_methods_supported": ["S256"],
            "response_types_supported": ["code"],
        }));
    }
    if path.ends_with("/register") {
        let mut reply = json(serde_json::json!({"client_id": format!("client-{case}")}));
        reply.0 = 201;
        return reply;
    }
    if path.ends_with("/authorize") {
        // Approves at once: back to the daemon's redirect with a code and its state.
        let q = |k: &str| {
            url.query_pairs()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        };
        let mut to = Url::parse(&q("redirect_uri")).unwrap();
        to.query_pairs_mut()
            .append_pair("code", "code-1")
            .append_pair("state", &q("state"));
        return (
            302,
            format!("Location: {to}\r\n"),
            "text/plain",
            String::new(),
        );
    }
    if !path.ends_with("/token") {
        return (404, String::new(), "text/plain", "not found".into());
    }
    let token = |extra: Value| {
        let mut v =
            serde_json::json!({"access_token": format!("at-{case}"), "token_type": "Bearer"});
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json(v)
    };
    match case {
        "noexpiry" => token(serde_json::json!({})),
        "skewed" => token(serde_json::json!({"expires_in": 7200})),
        "negative" => token(serde_json::json!({"expires_in": -5})),
        "zero" => token(serde_json::json!({"expires_in": 0})),
        "enormous" => token(serde_json::json!({"expires_in": i64::MAX})),
        "astronomic" => token(serde_json::json!({"expires_in": 1e300})),
        "notype" => json(serde_json::json!({"access_token": "at-notype", "expires_in": 3600})),
        "mac" => token(serde_json::json!({"token_type": "mac"})),
        // A DPoP-bound token though the AS advertised no DPoP and got no proof.
        "unasked-dpop" => token(serde_json::json!({"token_type": "DPoP"})),
        "badjson" => (
            200,
            String::new(),
            "application/json",
            "{\"access_token\": \"at".into(),
        ),
        "html" => (
            200,
            String::new(),
            "text/html",
            "<html><body>Please sign in</body></html>".into(),
        ),
        "form" => (
            200,
            String::new(),
            "application/x-www-form-urlencoded",
            "access_token=at-form&token_type=bearer".into(),
        ),
        // Servers that quote the request they refuse: the code, the code_verifier.
        "echojson" => (
            400,
            String::new(),
            "application/json",
            serde_json::json!({
                "error": "invalid_grant",
                "error_description": format!("cannot accept {request_body}"),
            })
            .to_string(),
        ),
        "echotext" => (
            400,
            String::new(),
            "text/plain",
            format!("rejected: {request_body}"),
        ),
        _ => (500, String::new(), "text/plain", "no such case".into()),
    }
}

/// A browser stand-in that only writes down the URLs it is asked to open, one per line.
fn recording_browser(home: &DaemonHome) -> (PathBuf, PathBuf) {
    let urls = home.path().join("opened-urls");
    let script = home.path().join("record-browser");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{}'\n", urls.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, urls)
}

/// Waits for the `n`th (1-based) URL the recording browser was given.
fn nth_opened(urls: &Path, n: usize) -> Url {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(urls).unwrap_or_default();
        if let Some(line) = text.lines().nth(n - 1) {
            return Url::parse(line).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no authorization URL #{n} opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn query(url: &Url, key: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.to_string())
        .unwrap_or_else(|| panic!("no {key} in {url}"))
}

fn grants(d: &Daemon) -> Vec<Value> {
    let list: Value = serde_json::from_str(&d.cli_ok(&["list", "--json"])).unwrap();
    list["grants"].as_array().unwrap().clone()
}

fn grant_of(d: &Daemon, server: &str) -> Option<Value> {
    grants(d).into_iter().find(|g| g["server"] == server)
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn healthy_still_works(d: &Daemon, mcp: &McpServer, auth: &AuthServer) {
    let token = d.cli_ok(&["token", mcp.url()]);
    assert!(auth.validate_access_token(token.trim(), mcp.url()).is_ok());
}

/// Token endpoints answering garbage: the login fails with exit code 7 and a message that
/// says what was wrong, in a few seconds, and creates no grant. Odd lifetimes are believed
/// only within bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_token_responses_fail_clearly_and_odd_lifetimes_are_bounded() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", mcp.url()]);
    let base = hostile_as().await;
    let d = Arc::new(d);

    let failing: [(&str, &str); 8] = [
        ("negative", "expires_in = -5"),
        ("zero", "expires_in = 0"),
        ("notype", "without `token_type`"),
        (
            "mac",
            "a `mac` token; only Bearer and DPoP tokens are supported",
        ),
        (
            "unasked-dpop",
            "a DPoP-bound token to a request that carried no DPoP proof",
        ),
        ("badjson", "a token response that is not the expected JSON"),
        (
            "html",
            "a `text/html` body where a JSON token response belongs",
        ),
        (
            "form",
            "a `application/x-www-form-urlencoded` body where a JSON token response belongs",
        ),
    ];
    for (case, expected) in failing {
        let (d2, url) = (d.clone(), format!("{base}/{case}/mcp"));
        let (out, took) = tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            (
                d2.cli(&["login", &url, "--timeout", "10"]),
                started.elapsed(),
            )
        })
        .await
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(7), "{case}: {out:?}");
        assert!(
            stderr.contains("cannot redeem the authorization code"),
            "{case}: {stderr}"
        );
        assert!(stderr.contains(expected), "{case}: {stderr}");
        assert!(took < Duration::from_secs(10), "{case}: took {took:?}");
        let d2 = d.clone();
        let server = format!("{base}/{case}/mcp");
        let grant = tokio::task::spawn_blocking(move || grant_of(&d2, &server))
            .await
            .unwrap();
        assert!(grant.is_none(), "{case}: a grant was kept: {grant:?}");
    }

    // An error body quoting the request: the reason stays, the code and the code_verifier
    // become `***` in the error and in the daemon's log.
    for case in ["echojson", "echotext"] {
        let (d2, url) = (d.clone(), format!("{base}/{case}/mcp"));
        let out = tokio::task::spawn_blocking(move || d2.cli(&["login", &url, "--timeout", "10"]))
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{case}: {out:?}");
        assert!(
            stderr.contains("grant_type=authorization_code")
                && stderr.contains("code=***")
                && stderr.contains("code_verifier=***"),
            "{case}: {stderr}"
        );
        for text in [stderr.to_string(), home.log_text()] {
            assert!(!text.contains("code-1"), "{case}: the code leaked: {text}");
            for (i, _) in text.match_indices("code_verifier=") {
                assert!(
                    text[i + "code_verifier=".len()..].starts_with("***"),
                    "{case}: the code_verifier leaked: {}",
                    &text[i..(i + 60).min(text.len())]
                );
            }
        }
    }

    // Missing: a short assumed lifetime (so the token is refreshed early, not trusted
    // forever). Enormous: capped at a year and a day instead of overflowing.
    let bounded: [(&str, i64, i64); 3] = [
        ("noexpiry", 250, 300),
        ("enormous", YEAR_AND_A_DAY - 60, YEAR_AND_A_DAY),
        ("astronomic", YEAR_AND_A_DAY - 60, YEAR_AND_A_DAY),
    ];
    for (case, min, max) in bounded {
        let (d2, url) = (d.clone(), format!("{base}/{case}/mcp"));
        let before = now();
        let (grant, token) = tokio::task::spawn_blocking(move || {
            d2.cli_ok(&["login", &url, "--timeout", "10"]);
            let token = d2.cli_ok(&["token", &url, "--min-valid", "1"]);
            (grant_of(&d2, &url).expect("a grant"), token)
        })
        .await
        .unwrap();
        assert_eq!(token.trim(), format!("at-{case}"));
        let expires_in = grant["access_token_expires_at"].as_i64().unwrap() - before;
        assert!(
            (min..=max + 5).contains(&expires_in),
            "{case}: believed a lifetime of {expires_in} s"
        );
    }
    let d2 = d.clone();
    tokio::task::spawn_blocking(move || healthy_still_works(&d2, &mcp, &auth))
        .await
        .unwrap();
}

/// The daemon's loopback redirect under attack: a response with a forged state is refused
/// and the login keeps waiting for the real one; the real one, replayed, is refused and
/// redeemed only once; an `error` response ends the login at once with the server's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_replayed_and_refused_callbacks() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let healthy = McpServer::start(&auth, McpOptions::default()).await;
    let target = McpServer::start(&auth, McpOptions::default()).await;
    let refused = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let (browser, urls) = recording_browser(&home);
    let d = Arc::new(home.start(Some(browser.to_str().unwrap())));
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap();

    // The healthy grant: its URL opened by the real browser stand-in.
    let (d2, url) = (d.clone(), healthy.url().to_string());
    let login = tokio::task::spawn_blocking(move || d2.cli(&["login", &url, "--timeout", "20"]));
    let opened = tokio::task::spawn_blocking({
        let urls = urls.clone();
        move || nth_opened(&urls, 1)
    })
    .await
    .unwrap();
    let browsed = std::process::Command::new(bin("mcp-authd-test-browser"))
        .arg(opened.as_str())
        .output()
        .unwrap();
    assert!(browsed.status.success(), "{browsed:?}");
    assert!(login.await.unwrap().status.success());

    // Forged state: 400, and the login still waits.
    let (d2, url) = (d.clone(), target.url().to_string());
    let started = Instant::now();
    let login = tokio::task::spawn_blocking(move || d2.cli(&["login", &url, "--timeout", "20"]));
    let opened = tokio::task::spawn_blocking({
        let urls = urls.clone();
        move || nth_opened(&urls, 2)
    })
    .await
    .unwrap();
    let approved = http.get(opened.as_str()).send().await.unwrap();
    assert_eq!(approved.status(), 302);
    let callback = Url::parse(approved.headers()["location"].to_str().unwrap()).unwrap();
    let mut forged = callback.clone();
    forged
        .query_pairs_mut()
        .clear()
        .append_pair("code", &query(&callback, "code"))
        .append_pair("state", "forged-state");
    let answer = http.get(forged.as_str()).send().await.unwrap();
    assert_eq!(answer.status(), 400, "a forged state is refused");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !login.is_finished(),
        "the login keeps waiting after a forged state"
    );
    assert_eq!(auth.counts().code_exchanges, 1, "nothing redeemed");
    let (d2, h) = (d.clone(), healthy.url().to_string());
    let token = tokio::task::spawn_blocking(move || d2.cli_ok(&["token", &h]))
        .await
        .unwrap();
    assert!(
        auth.validate_access_token(token.trim(), healthy.url())
            .is_ok()
    );

    // The real response completes the login.
    let answer = http.get(callback.as_str()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    let out = login.await.unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(auth.counts().code_exchanges, 2);

    // Replayed: refused (the redirect listener is gone or says it was used), never redeemed.
    if let Ok(answer) = http.get(callback.as_str()).send().await {
        assert_ne!(answer.status(), 200, "a replayed response is refused");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        auth.counts().code_exchanges,
        2,
        "a replay is never redeemed"
    );
    let (d2, t) = (d.clone(), target.url().to_string());
    let token = tokio::task::spawn_blocking(move || d2.cli_ok(&["token", &t]))
        .await
        .unwrap();
    assert!(
        auth.validate_access_token(token.trim(), target.url())
            .is_ok()
    );

    // An error response: the login ends at once with the server's reason, exit code 5.
    let (d2, url) = (d.clone(), refused.url().to_string());
    let started = Instant::now();
    let login = tokio::task::spawn_blocking(move || d2.cli(&["login", &url, "--timeout", "20"]));
    let opened = tokio::task::spawn_blocking({
        let urls = urls.clone();
        move || nth_opened(&urls, 3)
    })
    .await
    .unwrap();
    let mut error = Url::parse(&query(&opened, "redirect_uri")).unwrap();
    error
        .query_pairs_mut()
        .append_pair("error", "access_denied")
        .append_pair("error_description", "the user said no")
        .append_pair("state", &query(&opened, "state"))
        // RFC 9207: error responses name the issuer too (this one advertises it).
        .append_pair("iss", auth.issuer());
    let answer = http.get(error.as_str()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert!(
        answer
            .text()
            .await
            .unwrap()
            .contains("Sign-in was not completed")
    );
    let out = login.await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert!(
        stderr.contains("the authorization server refused: access_denied (the user said no)"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "ends at once");
    assert_eq!(auth.counts().code_exchanges, 2);

    let (d2, h) = (d.clone(), healthy.url().to_string());
    let (grants, token) =
        tokio::task::spawn_blocking(move || (grants(&d2), d2.cli_ok(&["token", &h])))
            .await
            .unwrap();
    assert_eq!(
        grants.len(),
        2,
        "no grant for the refused login: {grants:?}"
    );
    assert!(
        auth.validate_access_token(token.trim(), healthy.url())
            .is_ok()
    );
}

/// `mcp-auth doctor` compares this machine's clock with the `Date` header of the
/// authorization servers the grants use: one an hour ahead is reported with the fix, and
/// the healthy one beside it is within a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_an_authorization_server_an_hour_ahead() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let base = hostile_as().await;
    let (healthy, issuer) = (mcp.url().to_string(), auth.issuer().to_string());
    let report: Value = tokio::task::spawn_blocking(move || {
        d.cli_ok(&["login", &healthy]);
        d.cli_ok(&["login", &format!("{base}/skewed/mcp"), "--timeout", "10"]);
        let out = d.cli(&["doctor", "--json"]);
        serde_json::from_slice(&out.stdout).unwrap()
    })
    .await
    .unwrap();
    let clock: Vec<&Value> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["check"] == "clock")
        .collect();
    assert_eq!(clock.len(), 2, "{report}");
    let skewed = clock
        .iter()
        .find(|c| c["detail"].as_str().unwrap().contains("/skewed"))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(skewed["status"], "warn", "{skewed}");
    let detail = skewed["detail"].as_str().unwrap();
    let secs: i64 = detail
        .strip_prefix("this clock is ")
        .and_then(|d| d.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{detail}"));
    assert!((3590..=3610).contains(&secs), "{detail}");
    assert!(detail.contains(" s behind "), "{detail}");
    assert!(
        skewed["fix"]
            .as_str()
            .unwrap()
            .contains("timedatectl set-ntp true")
    );
    let fine = clock
        .iter()
        .find(|c| c["detail"].as_str().unwrap().contains(&issuer))
        .unwrap();
    assert_eq!(fine["status"], "ok", "{fine}");
}
