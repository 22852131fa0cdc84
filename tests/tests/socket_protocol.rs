//! The socket protocol against the real daemon: framing errors, bad requests, isolation
//! between connections, socket permissions.

use std::time::Duration;

use mcp_authd_tests::daemon::DaemonHome;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

async fn roundtrip(reader: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    reader.get_mut().write_all(line).await.unwrap();
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut reply))
        .await
        .expect("a reply")
        .unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|e| panic!("reply is not JSON ({e}): {reply}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lines_get_errors_and_never_disturb_other_connections() {
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let mut good = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());
    let mut bad = BufReader::new(UnixStream::connect(d.socket()).await.unwrap());

    let r = roundtrip(&mut bad, b"this is not json\n").await;
    assert_eq!(r["error"]["code"], -32700);
    assert_eq!(r["error"]["data"]["kind"], "parse_error");
    assert!(r["id"].is_null());

    let r = roundtrip(
        &mut bad,
        b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"no.such\"}\n",
    )
    .await;
    assert_eq!(
        (r["id"].as_i64(), r["error"]["data"]["kind"].as_str()),
        (Some(5), Some("method_not_found"))
    );

    let r = roundtrip(
        &mut bad,
        b"{\"jsonrpc\":\"2.0\",\"id\":6,\"method\":\"token.get\",\"params\":{\"nope\":1}}\n",
    )
    .await;
    assert_eq!(r["error"]["data"]["kind"], "invalid_params");

    let r = roundtrip(&mut bad, b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"token.get\",\"params\":{\"server\":\"https://unknown.example/mcp\"}}\n").await;
    assert_eq!(r["error"]["code"], -32001);
    assert_eq!(r["error"]["data"]["kind"], "authorization_required");
    assert_eq!(
        r["error"]["data"]["command"],
        "mcp-auth login https://unknown.example/mcp"
    );

    // The connection survived all of that.
    let r = roundtrip(
        &mut bad,
        b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"status\"}\n",
    )
    .await;
    assert_eq!(r["result"]["protocol_version"], 1);

    // An oversized line: an error, then the connection is closed.
    let mut huge = vec![b'x'; 2 * 1024 * 1024];
    huge.push(b'\n');
    let writer = bad.get_mut();
    let _ = writer.write_all(&huge).await;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(5), bad.read_line(&mut reply))
        .await
        .expect("a reply")
        .unwrap();
    let r: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(r["error"]["data"]["kind"], "invalid_request");
    let mut rest = String::new();
    let n = tokio::time::timeout(Duration::from_secs(5), bad.read_line(&mut rest))
        .await
        .expect("closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "connection closed after the oversized line");

    // The other connection never noticed.
    let r = roundtrip(
        &mut good,
        b"{\"jsonrpc\":\"2.0\",\"id\":\"s\",\"method\":\"status\"}\n",
    )
    .await;
    assert_eq!(r["id"], "s");
    assert_eq!(r["result"]["secret_store"]["backend"], "file");
    assert!(
        r["result"]["secret_store"]["warning"]
            .as_str()
            .unwrap()
            .contains("plain file")
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private_and_a_second_daemon_refuses_to_take_it_over() {
    use std::os::unix::fs::PermissionsExt;
    let home = DaemonHome::new("file", "");
    let d = home.start(None);
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let data_mode = std::fs::metadata(home.path().join("state.db"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(data_mode, 0o600);

    // Another daemon (its own data directory) on the same socket: refused by the socket.
    let other_home = DaemonHome::new("file", "");
    let second = std::process::Command::new(mcp_authd_tests::daemon::bin("mcp-authd"))
        .arg("--socket")
        .arg(d.socket())
        .env("MCP_AUTHD_HOME", other_home.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{second:?}"
    );
    // The first daemon still serves, and a graceful stop removes the socket file.
    d.cli_ok(&["status"]);
    let socket = d.socket().to_path_buf();
    d.stop();
    assert!(!socket.exists(), "socket file removed on shutdown");
}
