//! The wire protocol of mcp-authd, shared by the daemon and every client.
//!
//! JSON-RPC 2.0, one JSON object per line, over a local socket (a Unix socket, or a named
//! pipe on Windows). `PROTOCOL.md` beside this crate is the normative description; this
//! crate is its Rust rendering plus a small async client.

pub mod audit;
mod client;
pub mod clients;
pub mod domain;
mod error;
mod framing;
pub mod hygiene;
mod message;
pub mod methods;
pub mod next_step;
#[cfg(feature = "http")]
pub mod outbound;
pub mod socket;
pub mod text;
pub mod transport;

pub use client::{Client, ClientError};
pub use error::{ErrorKind, RpcError};
pub use framing::{FrameError, FrameReader, MAX_FRAME_BYTES, write_frame, write_line};
pub use message::{Incoming, Notification, Reply, Request, RequestId, Response};

/// Version of the protocol spoken on the socket; bumped only for incompatible changes.
/// `status` reports it so clients can check before relying on newer methods.
pub const PROTOCOL_VERSION: u32 = 1;
