//! A listener another local user plants where a client looks for mcp-authd: it answers
//! any request with a token of its choosing and records what each connection sent.
//!
//! `mcp-authd-test-planted-listener SOCKET RECORD`: binds SOCKET (mode 0666), prints
//! `ready`, and for each connection appends `accepted` to RECORD, then, when the client
//! closes, `received <n> bytes`. Tests run it under another uid and read RECORD.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What a client that believed this listener would print as its token.
const PLANTED_REPLY: &str = r#"{"jsonrpc":"2.0","id":1,"result":{"access_token":"planted-token","token_type":"Bearer","expires_at":4102444800,"expires_in":3600,"scopes":[],"grant":"g_planted"}}"#;

fn main() {
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let (Some(socket), Some(record)) = (args.next(), args.next()) else {
        eprintln!("usage: mcp-authd-test-planted-listener SOCKET RECORD");
        std::process::exit(2);
    };
    let listener = UnixListener::bind(&socket).expect("bind the planted socket");
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666))
        .expect("open the planted socket to everyone");
    println!("ready");
    for conn in listener.incoming().flatten() {
        let record = record.clone();
        std::thread::spawn(move || serve(conn, &record));
    }
}

fn serve(conn: UnixStream, record: &Path) {
    append(record, "accepted");
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let mut writer = conn.try_clone().expect("clone the stream");
    let mut reader = BufReader::new(conn);
    let mut received = 0;
    loop {
        let mut line = Vec::new();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                received += n;
                let _ = writeln!(writer, "{PLANTED_REPLY}");
            }
        }
    }
    append(record, &format!("received {received} bytes"));
}

fn append(record: &Path, line: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(record)
        .expect("open the record");
    // One write per line: connections are served by threads at once, and `writeln!` would
    // write the text and its newline apart, interleaving two lines.
    file.write_all(format!("{line}\n").as_bytes())
        .expect("write the record");
}
