//! The step-up cap (SEP-2350): re-authorizations for more scope, counted per server, so
//! that a server that keeps challenging cannot drive the user through a loop of logins.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

// Tokio's clock, the monotonic one in production: a test can pause it to pass the window.
use tokio::time::Instant;

use mcp_authd_ipc::text::{MAX_QUOTED_CHARS, printable};

use super::Broker;

/// Step-ups are counted over this window.
const STEP_UP_WINDOW: Duration = Duration::from_secs(600);

/// Re-authorizations per server within the window, whatever scopes they ask for.
const MAX_STEP_UPS_PER_SERVER: usize = 3;

/// Remembers recent step-up authorizations per server. A second step-up for the same
/// scope set means the first one did not satisfy the server: asking the user again would
/// not either, so it is refused.
#[derive(Default)]
pub struct StepUpLimiter {
    recent: Mutex<HashMap<String, Vec<StepUp>>>,
}

/// When a step-up was done, and for which scopes (sorted).
type StepUp = (Instant, Vec<String>);

impl StepUpLimiter {
    /// Records a step-up for `scopes` at `server`, or says why it is refused.
    fn admit(&self, server: &str, scopes: &[String]) -> Result<(), String> {
        let mut sorted = scopes.to_vec();
        sorted.sort();
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = recent.entry(server.to_string()).or_default();
        attempts.retain(|(at, _)| at.elapsed() < STEP_UP_WINDOW);
        if attempts.iter().any(|(_, s)| *s == sorted) {
            return Err(format!(
                "a login with scope {} was already done and the server still refuses",
                printable(&sorted.join(" "), MAX_QUOTED_CHARS)
            ));
        }
        if attempts.len() >= MAX_STEP_UPS_PER_SERVER {
            return Err(format!(
                "{} step-up logins in the last {} minutes",
                attempts.len(),
                STEP_UP_WINDOW.as_secs() / 60
            ));
        }
        attempts.push((Instant::now(), sorted));
        Ok(())
    }
}

impl Broker {
    /// Counts a step-up login for `scopes` at `server` (a server, or a server and an
    /// account), or says why none may start.
    pub fn admit_step_up(&self, server: &str, scopes: &[String]) -> Result<(), String> {
        self.step_ups.admit(server, scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn a_step_up_for_the_same_scopes_is_not_repeated() {
        let l = StepUpLimiter::default();
        assert!(l.admit("s", &v("a b")).is_ok());
        assert!(l.admit("s", &v("b a")).is_err());
        assert!(l.admit("other", &v("a b")).is_ok());
    }

    #[test]
    fn step_ups_per_server_are_capped() {
        let l = StepUpLimiter::default();
        for i in 0..MAX_STEP_UPS_PER_SERVER {
            assert!(l.admit("s", &[format!("s{i}")]).is_ok());
        }
        let e = l.admit("s", &v("new")).unwrap_err();
        assert!(e.contains("step-up logins"), "{e}");
    }

    /// The window is tokio's clock: paused, its ten minutes pass when the test says.
    #[tokio::test(start_paused = true)]
    async fn step_ups_are_admitted_again_once_the_window_has_passed() {
        let l = StepUpLimiter::default();
        for i in 0..MAX_STEP_UPS_PER_SERVER {
            assert!(l.admit("s", &[format!("s{i}")]).is_ok());
        }
        tokio::time::advance(STEP_UP_WINDOW.saturating_sub(Duration::from_secs(1))).await;
        assert!(l.admit("s", &v("new")).is_err(), "still within the window");
        assert!(l.admit("s", &v("s0")).is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(l.admit("s", &v("s0")).is_ok(), "the window has passed");
    }
}
