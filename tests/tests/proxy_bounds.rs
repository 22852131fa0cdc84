//! `mcp-auth proxy` against an MCP server that sends too much: an SSE line that never
//! ends is a clear JSON-RPC error (not a buffer that grows until the machine runs out),
//! and a server that sends faster than the client reads stdout is held back (the proxy's
//! memory stays bounded) without losing a message. A client's line that never ends is
//! refused the same way, and the lines after it still go through; a client that sends
//! many requests at once has at most 256 at the server, the rest waiting in stdin.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcp_authd_tests::daemon::bin;
use mcp_authd_tests::procfs::rss_kib;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 server that answers every POST with an SSE stream made by `body`.
async fn sse_server(body: fn(TcpStream) -> tokio::task::JoinHandle<()>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // The request: head and body (small), read so nothing resets.
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                if !buf.starts_with(b"POST") {
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 405 No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n",
                    )
                    .await;
                let _ = body(conn).await;
            });
        }
    });
    url
}

fn proxy(url: &str) -> Child {
    Command::new(bin("mcp-auth"))
        .arg("--socket")
        .arg("/nonexistent/mcp-authd.sock")
        .args(["proxy", url])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the proxy")
}

const REQUEST: &str = r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{}}"#;

/// Sends the answer to [`REQUEST`] as an event, and ends the stream.
async fn answer_and_close(mut conn: TcpStream) {
    let _ = conn
        .write_all(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[]}}\n\n")
        .await;
    let _ = conn.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endless_sse_line_is_a_clear_error_not_unbounded_memory() {
    let url = sse_server(|mut conn| {
        tokio::spawn(async move {
            let _ = conn.write_all(b"data: ").await;
            let filler = vec![b'x'; 64 * 1024];
            // 64 MiB without a newline, then hold the stream open.
            for _ in 0..1024 {
                if conn.write_all(&filler).await.is_err() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_secs(120)).await;
        })
    })
    .await;
    let mut child = proxy(&url);
    writeln!(child.stdin.as_mut().unwrap(), "{REQUEST}").unwrap();
    let pid = child.id();
    let stdout = child.stdout.take().unwrap();
    let reply = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let reply = tokio::time::timeout(Duration::from_secs(60), reply)
        .await
        .expect("an answer, not a buffer growing for ever")
        .unwrap();
    let rss = rss_kib(pid);
    let message: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(message["id"], 1, "{message}");
    let text = message["error"]["message"].as_str().unwrap();
    assert!(
        text.contains("an event longer than 16777216 bytes"),
        "{text}"
    );
    assert!(rss < 128 * 1024, "the proxy holds {rss} KiB");
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
}

const FLOOD_MESSAGES: usize = 384;
const FLOOD_MESSAGE_BYTES: usize = 256 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_reads_slowly_holds_the_server_back_and_loses_nothing() {
    let url = sse_server(|mut conn| {
        tokio::spawn(async move {
            let payload = "y".repeat(FLOOD_MESSAGE_BYTES);
            for i in 0..FLOOD_MESSAGES {
                let event = format!(
                    "data: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{{\"n\":{i},\"data\":\"{payload}\"}}}}\n\n"
                );
                if conn.write_all(event.as_bytes()).await.is_err() {
                    return;
                }
            }
            answer_and_close(conn).await;
        })
    })
    .await;
    let mut child = proxy(&url);
    writeln!(child.stdin.as_mut().unwrap(), "{REQUEST}").unwrap();
    let pid = child.id();
    // The client reads nothing for a while: what the server sends meanwhile
    // (96 MiB in all) must not pile up in the proxy.
    let mut peak = 0;
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        peak = peak.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stdout = child.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        for (notifications, line) in BufReader::new(stdout).lines().enumerate() {
            let message: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if message["id"] == 1 {
                return (notifications, message);
            }
            assert_eq!(message["params"]["n"], notifications, "in order");
        }
        panic!("stdout ended before the answer");
    });
    let (notifications, answer) = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("everything arrives")
        .unwrap();
    assert_eq!(notifications, FLOOD_MESSAGES);
    assert!(answer["result"]["tools"].is_array(), "{answer}");
    eprintln!("proxy peak RSS while stdout was not read: {peak} KiB");
    assert!(
        peak < 48 * 1024,
        "the proxy buffered {peak} KiB while the client did not read"
    );
    drop(child.stdin.take());
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_of_stdin_over_the_cap_is_refused_and_the_next_one_goes_through() {
    let url = sse_server(|conn| tokio::spawn(answer_and_close(conn))).await;
    let mut child = proxy(&url);
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    // 64 MiB on one line (the cap is 16 MiB), then a request.
    let writer = std::thread::spawn(move || {
        let filler = vec![b'x'; 1024 * 1024];
        for _ in 0..64 {
            stdin.write_all(&filler).unwrap();
        }
        writeln!(stdin).unwrap();
        writeln!(stdin, "{REQUEST}").unwrap();
        stdin
    });
    let stdout = child.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let refused: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        let answer: Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        (refused, answer)
    });
    let (refused, answer) = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("an answer to each line")
        .unwrap();
    let rss = rss_kib(pid);
    assert_eq!(refused["id"], Value::Null, "{refused}");
    assert_eq!(refused["error"]["code"], -32600, "{refused}");
    let text = refused["error"]["message"].as_str().unwrap();
    assert!(text.contains("over 16777216 bytes"), "{text}");
    assert_eq!(answer["id"], 1, "{answer}");
    assert!(answer["result"]["tools"].is_array(), "{answer}");
    assert!(rss < 64 * 1024, "the proxy holds {rss} KiB");
    drop(writer.join().unwrap());
    let _ = child.wait();
}

/// What the holding server below shares: requests it has and has not answered yet, and
/// whether it may answer them.
#[derive(Clone)]
struct Held {
    open: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    release: tokio::sync::watch::Receiver<bool>,
}

/// Answers request 0 at once and holds every other until released.
async fn held(
    axum::extract::State(h): axum::extract::State<Held>,
    axum::Json(m): axum::Json<Value>,
) -> axum::Json<Value> {
    use std::sync::atomic::Ordering::SeqCst;
    h.open.fetch_add(1, SeqCst);
    if m["id"] != 0 {
        let _ = h.release.clone().wait_for(|go| *go).await;
    }
    h.open.fetch_sub(1, SeqCst);
    axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": m["id"], "result": {}}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_are_capped_and_the_rest_wait_their_turn() {
    use std::sync::atomic::Ordering::SeqCst;
    const REQUESTS: usize = 300;
    const CAP: usize = 256;
    let (release, released) = tokio::sync::watch::channel(false);
    let h = Held {
        open: Default::default(),
        release: released,
    };
    let app = axum::Router::new()
        .route("/mcp", axum::routing::post(held))
        .with_state(h.clone());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut child = proxy(&url);
    let mut stdin = child.stdin.take().unwrap();
    for id in 0..=REQUESTS {
        writeln!(
            stdin,
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/list","params":{{}}}}"#
        )
        .unwrap();
    }
    drop(stdin);
    // The cap is reached; what is past it waits in stdin, not at the server.
    let until = Instant::now() + Duration::from_secs(60);
    while h.open.load(SeqCst) < CAP {
        assert!(Instant::now() < until, "{} in flight", h.open.load(SeqCst));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.open.load(SeqCst), CAP, "requests in flight at once");
    release.send(true).unwrap();
    let stdout = child.stdout.take().unwrap();
    let read = tokio::task::spawn_blocking(move || {
        let mut ids: Vec<u64> = BufReader::new(stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<Value>(&l.unwrap()).unwrap()["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect();
        ids.sort_unstable();
        ids
    });
    let ids = tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .expect("every answer, then the end of stdout")
        .unwrap();
    assert_eq!(ids, (0..=REQUESTS as u64).collect::<Vec<_>>());
    let _ = child.wait();
}
