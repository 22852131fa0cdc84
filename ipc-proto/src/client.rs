//! A small async client: connect, call, read notifications until the answer arrives.

use std::path::{Path, PathBuf};

use interprocess::local_socket::tokio::{Stream, prelude::*};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::io::{BufReader, ReadHalf, WriteHalf};

use crate::framing::{FrameError, FrameReader, write_frame};
use crate::message::{Notification, Request, RequestId, Response};
use crate::{RpcError, socket};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens at the socket: the daemon is not running (or runs elsewhere).
    #[error(
        "mcp-authd is not running (no answer at {}: {source}); start it: mcp-authd (or install the user service: {})",
        path.display(),
        crate::next_step::SERVICE_INSTALL
    )]
    NotRunning {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Something listens at the socket path, but it is not known to be this user's daemon
    /// (see [`socket::Untrusted`]); nothing was sent to it.
    #[error("refusing to talk to {}: {source}", path.display())]
    Untrusted {
        path: PathBuf,
        source: socket::Untrusted,
    },
    #[error("lost the connection to mcp-authd: {0}")]
    Io(#[from] std::io::Error),
    #[error("mcp-authd sent something unexpected: {0}")]
    Protocol(String),
    #[error("{0}")]
    Rpc(RpcError),
}

impl From<FrameError> for ClientError {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Io(io) => ClientError::Io(io),
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

/// One connection to the daemon. Calls are sequential on a connection; open more
/// connections for parallel calls.
pub struct Client {
    reader: FrameReader<BufReader<ReadHalf<Stream>>>,
    writer: WriteHalf<Stream>,
    next_id: i64,
}

impl Client {
    /// Connects to the daemon at `path` (see [`socket::resolve`]). Before anything is sent,
    /// the socket's directory must be this user's and closed to others, and the listening
    /// process must run as this user ([`socket::check_directory`], [`socket::check_listener`]).
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let name = socket::to_name(path).map_err(|source| ClientError::NotRunning {
            path: path.to_path_buf(),
            source,
        })?;
        let stream = Stream::connect(name)
            .await
            .map_err(|source| ClientError::NotRunning {
                path: path.to_path_buf(),
                source,
            })?;
        #[cfg(unix)]
        socket::check_directory(path)
            .and_then(|()| socket::check_listener(path, &stream))
            .map_err(|source| ClientError::Untrusted {
                path: path.to_path_buf(),
                source,
            })?;
        let (recv, send) = tokio::io::split(stream);
        Ok(Client {
            reader: FrameReader::new(BufReader::new(recv)),
            writer: send,
            next_id: 1,
        })
    }

    /// Calls `method` and decodes its result.
    pub async fn call<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
    ) -> Result<R, ClientError> {
        self.call_with_notifications(method, params, |_| {}).await
    }

    /// Calls `method`, handing every notification that arrives before the answer to
    /// `on_notification` (e.g. `login.pending` with the URL to show the user).
    pub async fn call_with_notifications<P: Serialize, R: DeserializeOwned>(
        &mut self,
        method: &str,
        params: &P,
        mut on_notification: impl FnMut(Notification),
    ) -> Result<R, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let params =
            serde_json::to_value(params).map_err(|e| ClientError::Protocol(e.to_string()))?;
        write_frame(&mut self.writer, &Request::new(id, method, params)).await?;
        loop {
            let Some(frame) = self.reader.next_frame().await? else {
                return Err(ClientError::Protocol(
                    "the daemon closed the connection".into(),
                ));
            };
            let value: Value = serde_json::from_slice(&frame)
                .map_err(|e| ClientError::Protocol(format!("invalid JSON: {e}")))?;
            if value.get("id").is_none() {
                if let Ok(n) = serde_json::from_value::<Notification>(value) {
                    on_notification(n);
                }
                continue;
            }
            let response: Response = serde_json::from_value(value)
                .map_err(|e| ClientError::Protocol(format!("invalid response: {e}")))?;
            if response
                .id
                .as_ref()
                .is_some_and(|rid| *rid != RequestId::Number(id))
            {
                continue;
            }
            if let Some(error) = response.error {
                return Err(ClientError::Rpc(error));
            }
            let result = response.result.unwrap_or(Value::Null);
            return serde_json::from_value(result)
                .map_err(|e| ClientError::Protocol(format!("unexpected result: {e}")));
        }
    }
}
