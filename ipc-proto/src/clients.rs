//! Confirmation of new clients (`confirm_clients`, as `ssh-agent -c`): the requests that
//! wait for the user's answer, the answers, and the decisions remembered per grant and
//! program.

use serde::{Deserialize, Serialize};

/// Lists the requests waiting for the user's answer.
pub const CLIENTS_PENDING: &str = "clients.pending";
/// Answers one waiting request (`mcp-auth approve`).
pub const CLIENTS_ANSWER: &str = "clients.answer";
/// The remembered decisions of a grant (`mcp-auth inspect`).
pub const CLIENTS_LIST: &str = "clients.list";
/// Forgets one remembered decision (`mcp-auth forget-client`).
pub const CLIENTS_FORGET: &str = "clients.forget";
/// Notification on the connection whose `token.get` or `token.challenge` waits for the
/// user's answer; its params are a [`PendingRequest`].
pub const CLIENTS_CONFIRM_PENDING: &str = "clients.confirm_pending";

/// What the user answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    /// This connection (the process that asked, while it stays connected) may take the
    /// grant's tokens; the next connection asks again. Not stored.
    Once,
    /// The program may take the grant's tokens from now on, also after a restart.
    Always,
    /// The program may not take the grant's tokens; remembered, so it is not asked again.
    Deny,
}

impl Answer {
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Once => "once",
            Answer::Always => "always",
            Answer::Deny => "deny",
        }
    }

    /// The stored form of `always` and `deny`.
    pub fn parse(s: &str) -> Option<Answer> {
        match s {
            "once" => Some(Answer::Once),
            "always" => Some(Answer::Always),
            "deny" => Some(Answer::Deny),
            _ => None,
        }
    }
}

/// A program waiting for the user to allow it a grant's tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingRequest {
    /// What `clients.answer` takes.
    pub id: u64,
    pub grant: String,
    /// The grant's MCP server URL.
    pub server: String,
    /// The grant's account name (`--account`); absent for the default account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_name: Option<String>,
    /// The program asking: its executable, or the script an interpreter runs; absent
    /// when the OS does not tell (then `always` counts as `once`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<String>,
    /// The process connected to the socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// True when the process is the `mcp-auth` CLI and `program` is the CLI's parent.
    #[serde(default)]
    pub via_cli: bool,
    /// Unix seconds.
    pub asked_at: i64,
    /// Unix seconds; unanswered by then, the request fails with `confirmation_timeout`.
    pub expires_at: i64,
    /// Whether a desktop dialog asks too.
    #[serde(default)]
    pub dialog: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingList {
    pub requests: Vec<PendingRequest>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerParams {
    pub id: u64,
    pub answer: Answer,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AnswerResult {
    pub request: PendingRequest,
    pub answer: Answer,
    /// Whether the answer is stored (`always`, `deny` for a known program).
    pub remembered: bool,
}

/// A remembered decision.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientDecision {
    pub program: String,
    /// `always` or `deny`.
    pub decision: Answer,
    /// Unix seconds.
    pub decided_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClientsResult {
    pub grant: String,
    pub clients: Vec<ClientDecision>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetParams {
    /// A grant id or an MCP server URL.
    pub grant: String,
    pub program: String,
    /// As in `grants.get`: with a server URL, this account's grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ForgetResult {
    pub grant: String,
    /// The decision removed.
    pub forgotten: ClientDecision,
}
