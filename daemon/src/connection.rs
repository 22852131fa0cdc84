//! One client connection: frames in, requests dispatched concurrently, replies and
//! notifications out through a single writer.

use std::sync::Arc;

use interprocess::local_socket::tokio::Stream;
use mcp_authd_ipc::{
    ErrorKind, FrameError, FrameReader, Incoming, MAX_FRAME_BYTES, Notification, Request, Response,
    RpcError, write_frame, write_line,
};
use serde::Serialize;
use tokio::io::BufReader;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};

use crate::broker::Broker;
use crate::methods;
use crate::peer::Peer;

/// Requests one connection may have in flight; more are answered `limit_exceeded` at once.
const MAX_IN_FLIGHT: usize = 32;

/// A line the daemon sends.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Outgoing {
    Response(Response),
    Notification(Notification),
}

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
    loop {
        let frame = tokio::select! {
            frame = frames.next_frame() => frame,
            Some(message) = out_rx.recv() => {
                if write_frame(&mut write, &message).await.is_err() {
                    return;
                }
                continue;
            }
            _ = shutdown.changed() => break,
        };
        let line = match frame {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(FrameError::TooLarge) => {
                // The rest of that line cannot be told from the next request: answer, then close.
                let error = RpcError::new(
                    ErrorKind::InvalidRequest,
                    format!("line longer than {MAX_FRAME_BYTES} bytes; the connection is closed"),
                );
                let _ = write_frame(&mut write, &Response::err(None, error)).await;
                break;
            }
            Err(FrameError::Io(e)) => {
                tracing::debug!("connection read error: {e}");
                break;
            }
        };
        let reply = match Incoming::parse(&line) {
            Incoming::Invalid(id, error) => Response::err(id, error),
            Incoming::Request(request) => {
                // A token already in memory is answered right here: no task, no wait.
                if let Some(reply) = methods::token_get::from_memory(&broker, &request, &peer) {
                    if write_line(&mut write, reply).await.is_err() {
                        return;
                    }
                    continue;
                } else if let Ok(permit) = in_flight.clone().try_acquire_owned() {
                    tokio::spawn(run(
                        request,
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
                    Response::err(Some(request.id), error)
                }
            }
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
    request: Request,
    broker: Arc<Broker>,
    out: mpsc::Sender<Outgoing>,
    peer: Arc<Peer>,
    _permit: OwnedSemaphorePermit,
) {
    let id = request.id.clone();
    let method = request.method.clone();
    let reply = match methods::dispatch(&broker, request, out.clone(), &peer).await {
        Ok(result) => Response::ok(id, result),
        Err(error) => {
            tracing::debug!(%method, kind = ?error.kind(), "request failed: {}", error.message);
            Response::err(Some(id), error)
        }
    };
    let _ = out.send(Outgoing::Response(reply)).await;
}
