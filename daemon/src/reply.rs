//! What a request sends back on its connection: its response, and notifications while it
//! runs (`login.pending`, `clients.confirm`). Its own module so that the methods, which
//! send them, and the connection, which writes them, need not import each other.

use mcp_authd_ipc::{Notification, Response};
use serde::Serialize;
use tokio::sync::mpsc;

/// A line the daemon sends.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Outgoing {
    Response(Response),
    Notification(Notification),
}

/// Where a method sends notifications for its caller's connection.
pub type Notifier = mpsc::Sender<Outgoing>;
