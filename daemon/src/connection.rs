//! One client connection: frames in, requests dispatched concurrently, replies and
//! notifications out through a single writer.

use std::sync::Arc;
use std::time::Duration;

use interprocess::local_socket::tokio::Stream;
use mcp_authd_ipc::{
    ErrorKind, FrameError, FrameReader, Incoming, MAX_FRAME_BYTES, Request, RequestId, Response,
    RpcError, write_frame, write_line,
};
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::time::Instant;

use crate::broker::Broker;
use crate::methods::{self, Command};
use crate::peer::Peer;
use crate::reply::Outgoing;

/// Requests one connection may have in flight; more are answered `limit_exceeded` at once.
const MAX_IN_FLIGHT: usize = 32;

/// A connection must send its first request this soon after connecting, and every line
/// must end this soon after its first byte: a socket that says nothing (or half a line)
/// would otherwise hold one of the daemon's connection slots for ever.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection that has sent requests may then stay quiet this long with nothing in
/// flight (a long-lived client between calls); after that it is closed as leaked, and a
/// client reconnects for its next call.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// After a line over the size cap: how long, and how much, the daemon goes on reading and
/// dropping what the client still sends, so that a client that writes its whole line
/// before it reads gets the error instead of a broken pipe.
const OVERSIZED_DRAIN: Drain = Drain {
    quiet: Duration::from_secs(1),
    total: Duration::from_secs(10),
    max_bytes: 64 * MAX_FRAME_BYTES,
};

pub async fn serve(
    stream: Stream,
    broker: Arc<Broker>,
    mut shutdown: watch::Receiver<bool>,
    peer: Peer,
) {
    let peer = Arc::new(peer);
    let (read, mut write) = tokio::io::split(stream);
    let mut frames = FrameReader::new(BufReader::new(read));
    // Replies of requests that run in their own task, and their notifications; answers
    // from memory are written by this loop directly, with no task in between.
    let (out, mut out_rx) = mpsc::channel::<Outgoing>(64);
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let connected = Instant::now();
    // Since the last request or reply; `None` until the first request.
    let mut last_active: Option<Instant> = None;
    // One timer for the connection's life, moved only to an earlier time (or once it has
    // fired): a deadline that activity pushed later lets it fire early, and the loop then
    // looks again. A new timer per request cost the hot path a registration and a removal
    // in tokio's timer wheel each time.
    let sleep = tokio::time::sleep_until(connected + REQUEST_TIMEOUT);
    tokio::pin!(sleep);
    loop {
        let deadline = if let Some(started) = frames.line_started() {
            Some((started + REQUEST_TIMEOUT, TimeLimit::LineUnfinished))
        } else if in_flight.available_permits() < MAX_IN_FLIGHT {
            None
        } else if let Some(last) = last_active {
            Some((last + IDLE_TIMEOUT, TimeLimit::Idle))
        } else {
            Some((connected + REQUEST_TIMEOUT, TimeLimit::FirstRequest))
        };
        let wanted = deadline.map(|(at, _)| at);
        if sleep.is_elapsed() || wanted.is_some_and(|at| at < sleep.deadline()) {
            // A line may start while this waits: look again at least this often.
            let look_again = Instant::now() + REQUEST_TIMEOUT;
            sleep
                .as_mut()
                .reset(wanted.map_or(look_again, |at| at.min(look_again)));
        }
        let frame = tokio::select! {
            frame = frames.next_frame() => frame,
            Some(message) = out_rx.recv() => {
                if write_frame(&mut write, &message).await.is_err() {
                    return;
                }
                last_active = Some(Instant::now());
                continue;
            }
            () = &mut sleep => {
                if let Some((at, limit)) = deadline
                    && Instant::now() >= at
                {
                    let why = limit.why();
                    tracing::debug!("connection closed: {why}");
                    let error = RpcError::new(
                        ErrorKind::LimitExceeded,
                        format!("{why}; the connection is closed"),
                    );
                    let _ = tokio::time::timeout(
                        Duration::from_secs(1),
                        write_frame(&mut write, &Response::err(None, error)),
                    )
                    .await;
                    break;
                }
                continue;
            }
            _ = shutdown.changed() => break,
        };
        last_active = Some(Instant::now());
        let line = match frame {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(FrameError::TooLarge) => {
                // The rest of that line cannot be told from the next request: answer, then
                // close — after reading what the client still sends, for a moment, so that
                // it can finish writing and read the answer.
                let error = RpcError::new(
                    ErrorKind::InvalidRequest,
                    format!("line longer than {MAX_FRAME_BYTES} bytes; the connection is closed"),
                );
                let _ = write_frame(&mut write, &Response::err(None, error)).await;
                OVERSIZED_DRAIN.run(frames.get_mut()).await;
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!("connection read error: {e}");
                break;
            }
        };
        let reply = match Incoming::parse(&line) {
            Incoming::Invalid(id, error) => Response::err(id, error),
            Incoming::Request(Request {
                id, method, params, ..
            }) => match Command::parse(&method, params) {
                Err(error) => {
                    tracing::debug!(%method, kind = ?error.kind(), "request refused: {}", error.message);
                    Response::err(Some(id), error)
                }
                // A token already in memory is answered right here: no task, no wait.
                Ok(Command::TokenGet(p))
                    if let Some(reply) =
                        methods::token_get::from_memory(&broker, &id, &p, &peer) =>
                {
                    if write_line(&mut write, reply).await.is_err() {
                        return;
                    }
                    continue;
                }
                Ok(command) => {
                    if let Ok(permit) = in_flight.clone().try_acquire_owned() {
                        tokio::spawn(run(
                            id,
                            command,
                            broker.clone(),
                            out.clone(),
                            peer.clone(),
                            permit,
                        ));
                        continue;
                    } else {
                        let error = RpcError::new(
                            ErrorKind::LimitExceeded,
                            format!(
                                "{MAX_IN_FLIGHT} requests already in flight on this connection; wait for their replies (or open another connection), then retry"
                            ),
                        );
                        Response::err(Some(id), error)
                    }
                }
            },
        };
        if write_frame(&mut write, &reply).await.is_err() {
            return;
        }
    }
    // Requests still running finish and their replies go out before the connection
    // closes (a graceful stop waits for this).
    drop(out);
    while let Some(message) = out_rx.recv().await {
        if write_frame(&mut write, &message).await.is_err() {
            return;
        }
    }
}

/// A request that may wait (a refresh, a login, a disk write), in a task of its own: the
/// connection goes on reading while it runs, and its reply goes out through `out`.
async fn run(
    id: RequestId,
    command: Command,
    broker: Arc<Broker>,
    out: mpsc::Sender<Outgoing>,
    peer: Arc<Peer>,
    _permit: OwnedSemaphorePermit,
) {
    let method = command.name();
    let reply = match methods::dispatch(&broker, command, out.clone(), &peer).await {
        Ok(result) => Response::ok(id, result),
        Err(error) => {
            tracing::debug!(%method, kind = ?error.kind(), "request failed: {}", error.message);
            Response::err(Some(id), error)
        }
    };
    let _ = out.send(Outgoing::Response(reply)).await;
}

/// Which time limit of a connection applies while it waits for input.
#[derive(Clone, Copy)]
enum TimeLimit {
    FirstRequest,
    LineUnfinished,
    Idle,
}

impl TimeLimit {
    fn why(self) -> String {
        match self {
            TimeLimit::FirstRequest => format!(
                "no request within {} s of connecting",
                REQUEST_TIMEOUT.as_secs()
            ),
            TimeLimit::LineUnfinished => format!(
                "a request line was not finished within {} s",
                REQUEST_TIMEOUT.as_secs()
            ),
            TimeLimit::Idle => format!(
                "idle for {} min with no request in flight; reconnect to send more",
                IDLE_TIMEOUT.as_secs() / 60
            ),
        }
    }
}

/// Bounds of reading and dropping what a refused peer still sends.
pub(crate) struct Drain {
    /// Stop after this long without a byte.
    pub quiet: Duration,
    /// Stop after this long in all.
    pub total: Duration,
    pub max_bytes: usize,
}

impl Drain {
    /// Reads and drops input until the peer stops sending or closes, or a bound is hit.
    pub(crate) async fn run<R: AsyncRead + Unpin>(&self, reader: &mut R) {
        let _ = tokio::time::timeout(self.total, async {
            let mut sink = vec![0u8; 64 * 1024];
            let mut left = self.max_bytes;
            while left > 0 {
                let n = tokio::time::timeout(self.quiet, reader.read(&mut sink))
                    .await
                    .unwrap_or(Ok(0))?;
                if n == 0 {
                    break;
                }
                left = left.saturating_sub(n);
            }
            Ok::<_, std::io::Error>(())
        })
        .await;
    }
}
