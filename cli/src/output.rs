//! How results are shown: JSON for programs, short text for people.

use std::time::{SystemTime, UNIX_EPOCH};

pub const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  success
  1  other error
  2  invalid command line
  3  mcp-authd is not running
  4  authorization required: run the `mcp-auth login …` command printed
  5  the login failed or timed out (browser, device or paste-back; a device login denied or expired)
  6  no such grant
  7  the MCP server or its authorization server failed or cannot be trusted
  8  confirm_clients: the user denied this program the token, or did not answer in time";

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

/// A length of time for people: `42 s`, `42 min`, `3 h 5 min`, `2 d 4 h` (the two
/// largest units at most, the smaller one only while it still matters).
pub fn span(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) if h < 10 => format!("{h} h {m} min"),
        (0, h, _) => format!("{h} h"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) if d < 10 => format!("{d} d {h} h"),
        (d, _, _) => format!("{d} d"),
    }
}

/// When something expires, seen at `now`: `in 42 min`, or `expired 3 h ago`.
pub fn until(at: i64, now: i64) -> String {
    if at > now {
        format!("in {}", span((at - now) as u64))
    } else if now - at < 1 {
        "expired just now".into()
    } else {
        format!("expired {} ago", span((now - at) as u64))
    }
}

/// When something last happened, seen at `now`: `never`, `just now`, `2 min ago`.
pub fn ago(then: Option<i64>, now: i64) -> String {
    match then {
        None => "never".into(),
        Some(t) if now - t < 5 => "just now".into(),
        Some(t) => format!("{} ago", span((now - t) as u64)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_use_at_most_two_units() {
        let cases = [
            (0, "0 s"),
            (59, "59 s"),
            (60, "1 min"),
            (42 * 60 + 30, "42 min"),
            (3600, "1 h"),
            (3 * 3600 + 5 * 60, "3 h 5 min"),
            (12 * 3600 + 5 * 60, "12 h"),
            (86_400, "1 d"),
            (2 * 86_400 + 4 * 3600 + 59, "2 d 4 h"),
            (40 * 86_400 + 4 * 3600, "40 d"),
        ];
        for (secs, want) in cases {
            assert_eq!(span(secs), want, "{secs}");
        }
    }

    #[test]
    fn expiry_reads_forwards_and_backwards() {
        assert_eq!(until(1_000 + 42 * 60, 1_000), "in 42 min");
        assert_eq!(until(1_000, 1_000 + 3 * 3600), "expired 3 h ago");
        assert_eq!(until(1_000, 1_000), "expired just now");
    }

    #[test]
    fn last_use() {
        assert_eq!(ago(None, 1_000), "never");
        assert_eq!(ago(Some(998), 1_000), "just now");
        assert_eq!(ago(Some(1_005), 1_000), "just now", "a clock step back");
        assert_eq!(ago(Some(1_000 - 120), 1_000), "2 min ago");
    }
}
