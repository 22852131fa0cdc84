//! How results are shown: JSON for programs, short text for people.

use std::time::{SystemTime, UNIX_EPOCH};

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error
  2  invalid command line
  3  mcp-authd is not running
  4  authorization required: run the `mcp-auth login …` command printed
  5  the browser login failed or timed out
  6  no such grant
  7  the MCP server or its authorization server failed or cannot be trusted";

pub fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("mcp-auth: cannot print JSON: {e}"),
    }
}

pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `3m 20s`, `2h 5m`, `4d 1h`; negative durations say `expired`.
pub fn duration(secs: i64) -> String {
    if secs <= 0 {
        return "expired".into();
    }
    let (d, h, m, s) = (
        secs / 86400,
        secs % 86400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

pub fn ago(then: Option<i64>) -> String {
    match then {
        None => "never".into(),
        Some(t) => format!("{} ago", duration((now() - t).max(1))),
    }
}
