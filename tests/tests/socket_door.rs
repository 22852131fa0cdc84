//! The socket door: the audit log of token hand-outs, the per-connection and global
//! limits with their errors, and a second Unix user kept out.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use mcp_authd_ipc::Client;
use mcp_authd_ipc::clients::CLIENTS_PENDING;
use mcp_authd_ipc::methods::{
    ChallengeParams, TOKEN_CHALLENGE, TOKEN_GET, TokenGetParams, TokenGetResult,
};
use mcp_authd_tests::daemon::DaemonHome;
use mcp_authd_tests::planted::{other_user, shared_copy};
use mcp_authd_tests::tools::{on_path, required};
use mcp_authd_tests::{AsOptions, AuthServer, McpOptions, McpServer};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::time::Instant;

async fn read_reply(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
        .await
        .expect("a reply in time")
        .unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hand_out_is_audited_with_the_receiving_process() {
    let auth = AuthServer::start(AsOptions::default()).await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    let inspect = d.cli_ok(&["inspect", &url]);
    assert!(
        inspect.contains("No access token handed out yet"),
        "{inspect}"
    );

    let via_cli = d.cli_ok(&["token", &url]).trim().to_string();
    let mut client = Client::connect(d.socket()).await.unwrap();
    let params = TokenGetParams {
        server: url.clone(),
        ..Default::default()
    };
    let via_socket: TokenGetResult = client.call(TOKEN_GET, &params).await.unwrap();
    // A token given to retry with after a 401 is a hand-out too.
    let challenge = ChallengeParams {
        server: url.clone(),
        status: 401,
        www_authenticate: Some("Bearer error=\"invalid_token\"".into()),
        rejected_token: Some(via_socket.access_token.clone()),
        ..Default::default()
    };
    let via_challenge: TokenGetResult = client.call(TOKEN_CHALLENGE, &challenge).await.unwrap();
    assert_ne!(via_challenge.access_token, via_socket.access_token);

    let inspected: Value = serde_json::from_str(&d.cli_ok(&["inspect", &url, "--json"])).unwrap();
    let hand_outs = inspected["hand_outs"].as_array().expect("hand_outs");
    // This test process (token.get, then token.challenge) and the mcp-auth that ran
    // `token`: one row per process and grant within a write, with a count.
    let me = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
    let mine: Vec<&Value> = hand_outs
        .iter()
        .filter(|h| h["peer_pid"] == std::process::id())
        .collect();
    let my_count: u64 = mine.iter().map(|h| h["count"].as_u64().unwrap_or(1)).sum();
    assert_eq!(my_count, 2, "{inspected}");
    assert_eq!(
        hand_outs[0]["peer_pid"],
        std::process::id(),
        "newest first: {inspected}"
    );
    assert_eq!(hand_outs[0]["peer_exe"], me.display().to_string());
    // SAFETY: geteuid takes nothing and cannot fail.
    assert_eq!(hand_outs[0]["peer_uid"], unsafe { libc::geteuid() });
    let last = hand_outs.last().unwrap();
    assert!(
        last["peer_exe"]
            .as_str()
            .is_some_and(|e| e.ends_with("/mcp-auth")),
        "{inspected}"
    );
    assert_eq!(last["server"], url);
    let human = d.cli_ok(&["inspect", &url]);
    assert!(
        human.contains("Last access tokens handed out") && human.contains("mcp-auth"),
        "{human}"
    );
    d.stop();
    let db = home.database_bytes();
    for token in [
        &via_cli,
        &via_socket.access_token,
        &via_challenge.access_token,
    ] {
        assert!(!human.contains(token.as_str()) && !inspected.to_string().contains(token.as_str()));
        assert!(!db.windows(token.len()).any(|w| w == token.as_bytes()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_33rd_request_in_flight_gets_limit_exceeded_and_the_32_finish() {
    let auth = AuthServer::start(AsOptions {
        access_token_ttl_secs: 1,
        ..Default::default()
    })
    .await;
    let mcp = McpServer::start(&auth, McpOptions::default()).await;
    let url = mcp.url().to_string();
    // Refreshes only when asked: the test counts them.
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start(None);
    d.cli_ok(&["login", &url]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    // A slow refresh: the first request holds it, 31 more wait behind it, all in flight.
    auth.set_token_delay(Duration::from_millis(1500));
    let mut conn = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    let mut batch = String::new();
    for id in 1..=33 {
        batch.push_str(&format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"token.get\",\"params\":{{\"server\":\"{url}\"}}}}\n"
        ));
    }
    conn.get_mut().write_all(batch.as_bytes()).await.unwrap();
    let first = read_reply(&mut conn).await;
    assert_eq!(
        first["id"], 33,
        "the refused one is answered at once: {first}"
    );
    assert_eq!(first["error"]["data"]["kind"], "limit_exceeded");
    assert!(
        first["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32 requests already in flight"),
        "{first}"
    );
    for _ in 0..32 {
        let r = read_reply(&mut conn).await;
        assert!(r["result"]["access_token"].is_string(), "{r}");
    }
    assert_eq!(auth.counts().refreshes, 1, "one refresh served all 32");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_513th_connection_is_told_why_and_closed() {
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let status = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n";
    let mut open = Vec::new();
    for _ in 0..512 {
        let mut c = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
        c.get_mut().write_all(status).await.unwrap();
        assert!(read_reply(&mut c).await["result"].is_object());
        open.push(c);
    }
    let mut extra = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    // Its request races the refusal; the reason still arrives.
    let _ = extra.get_mut().write_all(status).await;
    let r = read_reply(&mut extra).await;
    assert_eq!(r["error"]["data"]["kind"], "limit_exceeded", "{r}");
    assert!(r["id"].is_null());
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("512 connections"),
        "{r}"
    );
    let mut rest = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read_line(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "then closed");

    // A freed slot serves again.
    drop(open.pop());
    let mut ok = false;
    for _ in 0..50 {
        let mut c = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
        let _ = c.get_mut().write_all(status).await;
        if read_reply(&mut c).await["result"].is_object() {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "a connection is served once one closed");
}

/// Another Unix user: the private directory keeps it from the socket; with the socket
/// opened up (mode 0666, directory 0711) its `mcp-auth` refuses on its own (the directory
/// is not its user's), and a raw client (socat) is refused by the daemon by peer
/// credentials. Needs root (useradd); skipped with a notice otherwise.
#[test]
fn another_user_is_refused() {
    let Some(other) = other_user() else { return };
    let (_tools, cli) = shared_copy("mcp-auth");

    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let as_other = || {
        Command::new(&cli)
            .uid(other)
            .gid(other)
            .arg("--socket")
            .arg(d.socket())
            .arg("status")
            .output()
            .expect("mcp-auth as the other user")
    };
    let out = as_other();
    assert_eq!(
        out.status.code(),
        Some(3),
        "the private directory keeps the other user out: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{out:?}"
    );

    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    std::fs::set_permissions(d.socket(), std::fs::Permissions::from_mode(0o666)).unwrap();
    let out = as_other();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        stderr.contains(&format!("belongs to uid 0, not to you (uid {other})")),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).is_empty());

    if let Some(socat) = required("socat", on_path("socat"), "the raw client of another user") {
        let mut raw = Command::new(socat)
            .uid(other)
            .gid(other)
            .arg("-t5")
            .arg("-")
            .arg(format!("UNIX-CONNECT:{}", d.socket().display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        raw.stdin
            .take()
            .unwrap()
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\"}\n")
            .unwrap();
        let out = raw.wait_with_output().unwrap();
        let reply = String::from_utf8_lossy(&out.stdout);
        assert!(
            reply.contains("permission denied: this mcp-authd serves only uid 0"),
            "{out:?}"
        );
        assert!(!reply.contains("\"result\""), "{reply}");
        assert!(
            home.log_text().contains("refused: only uid 0"),
            "{}",
            home.log_text()
        );
    }
    // Our own user still gets in, once the directory is private again.
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d.cli_ok(&["status"]);
}

/// Sockets that connect and say nothing (or half a line) cannot hold the 512 slots: they
/// are told why and closed after 10 s. A client that has sent requests may stay quiet
/// between them; it is closed only after 15 minutes idle.
///
/// The daemon runs in this process with the clock paused once it has started: its time
/// limits are tokio timers, so the 10 s and the 15 minutes pass as soon as nothing else is
/// ready, and the test checks on the same clock that none was cut short. Tokio moves a
/// paused clock to the next timer whenever the runtime would wait, even for I/O that is
/// about to arrive, so the checks are "not before" and the requests are ones the daemon
/// answers from memory (a request that waits on SQLite's thread could see a time limit
/// pass first).
#[tokio::test]
async fn silent_sockets_are_closed_and_cannot_exhaust_the_connection_slots() {
    // No background refresh: it would read SQLite while the clock is paused.
    let home = DaemonHome::new("file", "background_refresh_days = 0\n");
    let d = home.start_in_process().await;
    tokio::time::pause();
    // Answered from memory, with a result: the connection is served.
    let request = format!("{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"{CLIENTS_PENDING}\"}}\n");
    let served = |r: &Value| r["result"].is_array() || r["result"].is_object();
    // A long-lived client between two calls, and one that stops in the middle of a line.
    let mut quiet_client = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    let r = ask(&mut quiet_client, &request).await;
    assert!(served(&r), "{r}");
    // A request first: until then the first-request limit would apply, and it could pass
    // before the daemon has read the half line.
    let mut half_line = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    let r = ask(&mut half_line, &request).await;
    assert!(served(&r), "{r}");
    let half_line_started = Instant::now();
    half_line
        .get_mut()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":2,")
        .await
        .unwrap();
    let connected = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..510 {
        silent.push(BufReader::new(
            UnixStream::connect(d.socket()).await.unwrap(),
        ));
    }
    let mut refused = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    assert_eq!(
        next_line(&mut refused).await["error"]["data"]["kind"],
        "limit_exceeded",
        "the slots are all taken"
    );

    // Each silent socket is told why, then closed.
    let mut first = silent.pop().unwrap();
    let r = next_line(&mut first).await;
    assert_eq!(r["error"]["data"]["kind"], "limit_exceeded", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no request within 10 s"),
        "{r}"
    );
    assert!(connected.elapsed() >= REQUEST_TIMEOUT, "not before 10 s");
    drop(silent);
    let mut fresh = None;
    for _ in 0..100 {
        let mut c = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
        let _ = c.get_mut().write_all(request.as_bytes()).await;
        if served(&next_line(&mut c).await) {
            fresh = Some(c);
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(fresh.is_some(), "the slots are free again");

    let r = next_line(&mut half_line).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("a request line was not finished within 10 s"),
        "{r}"
    );
    assert!(half_line_started.elapsed() >= REQUEST_TIMEOUT);

    // Before the request: the daemon's idle time counts from when it read it, or later.
    let last_request = Instant::now();
    let r = ask(&mut quiet_client, &request).await;
    assert!(
        served(&r),
        "a client quiet between calls is still served: {r}"
    );
    assert!(
        last_request.duration_since(connected) < IDLE_TIMEOUT,
        "the test ran its steps within the idle limit ({:?})",
        last_request.duration_since(connected)
    );
    let r = next_line(&mut quiet_client).await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idle for 15 min with no request in flight; reconnect to send more"),
        "{r}"
    );
    assert!(last_request.elapsed() >= IDLE_TIMEOUT, "not before 15 min");
    let mut rest = String::new();
    assert_eq!(
        quiet_client.read_line(&mut rest).await.unwrap(),
        0,
        "then closed"
    );
    d.stop().await.expect("a graceful stop");
}

/// Sends one request line and returns the next line received, as JSON.
async fn ask(conn: &mut BufReader<UnixStream>, request: &str) -> Value {
    conn.get_mut().write_all(request.as_bytes()).await.unwrap();
    next_line(conn).await
}

/// The next line a socket receives, as JSON, however long the paused clock has to run
/// for it; a hang is the test runner's to report.
async fn next_line(reader: &mut BufReader<UnixStream>) -> Value {
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"))
}

/// The daemon's limits (daemon/src/connection.rs), as its messages state them.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A line over the 1 MiB cap, written slowly, in full, before the client reads: the
/// client's writes all succeed (no broken pipe), and it then reads the error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_line_gets_its_error_even_while_the_client_is_still_writing() {
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let mut c = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    c.get_mut()
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",\"params\":{\"x\":\"")
        .await
        .unwrap();
    let chunk = vec![b'x'; 64 * 1024];
    for i in 0..48 {
        c.get_mut()
            .write_all(&chunk)
            .await
            .unwrap_or_else(|e| panic!("write {i} of 48 failed: {e}"));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c.get_mut().write_all(b"\"}}\n").await.unwrap();
    let r = read_reply(&mut c).await;
    assert_eq!(r["error"]["data"]["kind"], "invalid_request", "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("longer than 1048576 bytes"),
        "{r}"
    );
    let mut rest = String::new();
    let n = tokio::time::timeout(Duration::from_secs(15), c.read_line(&mut rest))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "then closed");
}
