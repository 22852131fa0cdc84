//! `grants.audit`: which processes were handed a grant's access tokens, and when.

use serde::{Deserialize, Serialize};

pub const GRANTS_AUDIT: &str = "grants.audit";

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AuditParams {
    /// A grant id or an MCP server URL.
    pub grant: String,
    /// Newest hand-outs to return (default 20, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditResult {
    pub grant: String,
    /// Newest first.
    pub hand_outs: Vec<HandOut>,
}

/// Access tokens handed out over the socket: one, or `count` identical ones (same server
/// and process) answered within a few milliseconds of each other, the last at `at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandOut {
    /// Unix seconds.
    pub at: i64,
    #[serde(default = "one")]
    pub count: u64,
    /// The server URL the caller asked for.
    pub server: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_uid: Option<u32>,
    /// The caller's executable, where the OS tells it (`/proc/<pid>/exe` on Linux).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_exe: Option<String>,
}

fn one() -> u64 {
    1
}
