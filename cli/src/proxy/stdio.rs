//! The MCP client's side of the proxy: JSON-RPC messages one per line on stdin, read with
//! a line cap; messages one per line on stdout, queued within a byte budget; diagnostics
//! on stderr. stdout carries protocol messages only.

use std::sync::Arc;

use mcp_authd_ipc::text::printable;
use mcp_authd_ipc::{FrameError, FrameReader};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinHandle;

/// Longest line taken from stdin: as long as the longest answer taken from a server, so
/// whatever a server sends can be sent back, and a client writing without a newline does
/// not make the proxy buffer without end.
pub(super) const STDIN_LINE_MAX: usize = 16 * 1024 * 1024;
/// Bytes of messages waiting for stdout at most: when the client reads slower than the
/// server sends, the proxy stops reading from the server instead of growing.
const STDOUT_BUDGET_BYTES: usize = 8 * 1024 * 1024;
/// Lines waiting for stdout at most, whatever their size (the budget bounds the bytes;
/// this bounds the count, so many tiny messages cannot grow the queue either).
const STDOUT_QUEUE_LINES: usize = 1024;

/// JSON-RPC error code for a line that is not JSON.
pub(super) const PARSE_ERROR: i64 = -32700;
/// JSON-RPC error code for a line that is not a valid request: here, one over the cap.
pub(super) const INVALID_REQUEST: i64 = -32600;

/// One line of stdin.
pub(super) enum Line {
    Message(Value),
    /// Not JSON: why.
    NotJson(String),
    /// Over [`STDIN_LINE_MAX`]: dropped, up to and with its newline.
    TooLong,
}

/// stdin, line by line, each line at most a cap long.
pub(super) struct Stdin<R> {
    /// Holds at most its capacity (8 KiB); a line being read is held by a [`FrameReader`]
    /// only up to the cap.
    reader: BufReader<R>,
    max: usize,
}

impl<R: AsyncRead + Unpin> Stdin<R> {
    pub(super) fn new(input: R) -> Self {
        Self::with_limit(input, STDIN_LINE_MAX)
    }

    fn with_limit(input: R, max: usize) -> Self {
        Stdin {
            reader: BufReader::new(input),
            max,
        }
    }

    /// The next line that is not blank, or `None` when stdin has ended.
    pub(super) async fn next(&mut self) -> std::io::Result<Option<Line>> {
        // A reader per line: after an overlong line, its part buffered so far goes with
        // it, and the rest of the line is skipped here, on the stream underneath.
        let mut frames = FrameReader::with_limit(&mut self.reader, self.max);
        let line = match frames.next_frame().await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(FrameError::Io(e)) => return Err(e),
            Err(FrameError::TooLarge) => {
                drop(frames);
                self.skip_line().await?;
                return Ok(Some(Line::TooLong));
            }
        };
        Ok(Some(match serde_json::from_slice(&line) {
            Ok(message) => Line::Message(message),
            Err(e) => Line::NotJson(e.to_string()),
        }))
    }

    /// Drops input up to and with the next newline (or to the end).
    async fn skip_line(&mut self) -> std::io::Result<()> {
        loop {
            let available = self.reader.fill_buf().await?;
            if available.is_empty() {
                return Ok(());
            }
            match available.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.reader.consume(at + 1);
                    return Ok(());
                }
                None => {
                    let all = available.len();
                    self.reader.consume(all);
                }
            }
        }
    }
}

/// The lines on their way to stdout, bounded in bytes (each holds its share of the
/// budget until it is written) and in count (the queue's capacity).
#[derive(Clone)]
pub(super) struct Stdout {
    lines: mpsc::Sender<(String, OwnedSemaphorePermit)>,
    budget: Arc<Semaphore>,
    budget_bytes: usize,
}

impl Stdout {
    /// A queue of lines for `sink`, and the task writing them; the task ends when every
    /// `Stdout` is dropped, or when the sink refuses a write (the client has gone).
    pub(super) fn spawn<W>(sink: W) -> (Stdout, JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Self::with_bounds(sink, STDOUT_BUDGET_BYTES, STDOUT_QUEUE_LINES)
    }

    fn with_bounds<W>(mut sink: W, budget_bytes: usize, queue: usize) -> (Stdout, JoinHandle<()>)
    where
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<(String, OwnedSemaphorePermit)>(queue);
        let writer = tokio::spawn(async move {
            // The permit goes when the line is written: its bytes leave the budget.
            while let Some((line, _permit)) = rx.recv().await {
                if sink.write_all(line.as_bytes()).await.is_err()
                    || sink.write_all(b"\n").await.is_err()
                    || sink.flush().await.is_err()
                {
                    break;
                }
            }
        });
        let out = Stdout {
            lines: tx,
            budget: Arc::new(Semaphore::new(budget_bytes)),
            budget_bytes,
        };
        (out, writer)
    }

    /// Queues a message, waiting while the budget is spent or the queue is full.
    pub(super) async fn emit(&self, message: &Value) {
        self.send(message.to_string()).await;
    }

    /// Queues a line, waiting while the budget is spent (a line bigger than the whole
    /// budget waits for all of it) or the queue is full.
    async fn send(&self, line: String) {
        let share = (line.len() + 1).min(self.budget_bytes) as u32;
        let Ok(permit) = self.budget.clone().acquire_many_owned(share).await else {
            return;
        };
        let _ = self.lines.send((line, permit)).await;
    }
}

/// A JSON-RPC error answer.
pub(super) fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// A line on stderr; what it quotes from a server has no control character left.
pub(super) fn log(message: &str) {
    eprintln!("mcp-auth proxy: {}", printable(message, 4000));
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;

    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<Line> {
        let mut stdin = Stdin::with_limit(input, max);
        let mut out = Vec::new();
        while let Some(line) = stdin.next().await.unwrap() {
            out.push(line);
        }
        out
    }

    #[tokio::test]
    async fn a_line_over_the_cap_is_dropped_and_the_next_one_read() {
        let mut input = b"{\"id\":1}\r\n\n   \n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 100));
        input.extend(b"\n{\"id\":2}\nnot json\n\xff\xfe\n{\"id\":3}");
        let read = lines(&input, 50).await;
        let kinds: Vec<String> = read
            .iter()
            .map(|l| match l {
                Line::Message(m) => m["id"].to_string(),
                Line::NotJson(_) => "not json".into(),
                Line::TooLong => "too long".into(),
            })
            .collect();
        assert_eq!(kinds, ["1", "too long", "2", "not json", "not json", "3"]);
        // Exactly at the cap is a line; the cap counts bytes before the newline.
        let at_cap = format!("[{}]\n", "1,".repeat(24) + "1");
        assert_eq!(at_cap.len(), 52);
        assert!(matches!(
            lines(at_cap.as_bytes(), 51).await[..],
            [Line::Message(_)]
        ));
        assert!(matches!(
            lines(at_cap.as_bytes(), 50).await[..],
            [Line::TooLong]
        ));
        // An overlong last line without a newline ends stdin cleanly.
        assert!(matches!(lines(&[b'x'; 80], 50).await[..], [Line::TooLong]));
    }

    #[tokio::test]
    async fn an_endless_line_is_not_buffered() {
        // The client writes 64 MiB without a newline; the proxy holds at most the cap.
        let (mut client, proxy_side) = tokio::io::duplex(64 * 1024);
        let writer = tokio::spawn(async move {
            let chunk = vec![b'x'; 1024 * 1024];
            for _ in 0..64 {
                client.write_all(&chunk).await.unwrap();
            }
            client.write_all(b"\n{\"id\":7}\n").await.unwrap();
        });
        let mut stdin = Stdin::with_limit(proxy_side, 1024 * 1024);
        assert!(matches!(stdin.next().await.unwrap(), Some(Line::TooLong)));
        let Some(Line::Message(m)) = stdin.next().await.unwrap() else {
            panic!("the line after the long one")
        };
        assert_eq!(m["id"], 7);
        assert!(stdin.next().await.unwrap().is_none());
        writer.await.unwrap();
    }

    #[tokio::test]
    async fn a_client_that_does_not_read_holds_senders_back_and_loses_nothing() {
        // The client's end of stdout: a pipe of 64 bytes that nobody reads yet.
        let (sink, mut client) = tokio::io::duplex(64);
        let (out, writer) = Stdout::with_bounds(sink, 1000, 4);
        let message = json!({"jsonrpc": "2.0", "method": "m", "params": "y".repeat(200)});
        let line_len = message.to_string().len() + 1;
        let queued = tokio::spawn({
            let out = out.clone();
            let message = message.clone();
            async move {
                for _ in 0..20 {
                    out.emit(&message).await;
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            !queued.is_finished(),
            "20 lines of {line_len} bytes fit no budget of 1000"
        );
        // The budget is spent, so the queue holds fewer lines than its capacity allows...
        assert!(out.budget.available_permits() < line_len);
        // ...and one more message (a line bigger than the whole budget) waits for all of it.
        let huge = json!({"big": "z".repeat(5000)});
        let big = tokio::spawn({
            let out = out.clone();
            async move { out.emit(&huge).await }
        });
        drop(out);
        let mut read = Vec::new();
        client.read_to_end(&mut read).await.unwrap();
        queued.await.unwrap();
        big.await.unwrap();
        writer.await.unwrap();
        let text = String::from_utf8(read).unwrap();
        let got: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // (The big line may overtake some of the 20: waiters are served in turn.)
        assert_eq!(got.len(), 21);
        assert_eq!(got.iter().filter(|m| **m == message).count(), 20);
        assert!(
            got.iter()
                .any(|m| m["big"].as_str().map(str::len) == Some(5000))
        );
    }

    #[test]
    fn parse_errors_answer_with_a_null_id() {
        let e = error_response(&Value::Null, PARSE_ERROR, "parse error");
        assert_eq!(e["id"], Value::Null);
        assert_eq!(e["error"]["code"], -32700);
    }
}
