//! The `RefreshScheduler`: renews the access tokens of grants in use before they expire,
//! so a client asking for a token never waits for a refresh.
//!
//! A grant is in use when it was used (or logged in) within `background_refresh_days`.
//! Its token is renewed when due (see [`AccessToken::refresh_due_at`]), timed to the
//! millisecond on the monotonic clock; a grant with no token in memory — after a restart —
//! is renewed at once. Network and server errors back
//! off exponentially with jitter; `invalid_grant` marks the grant as needing login (in
//! `Broker::refresh`), which takes it out of the schedule.
//!
//! [`AccessToken::refresh_due_at`]: crate::broker::AccessToken::refresh_due_at

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mcp_authd_ipc::ErrorKind;
use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::broker::Broker;
use crate::oauth::token::now;
use crate::store::GrantRow;
use crate::store::db::{GrantState, GrantType};

/// The longest the scheduler sleeps: new grants and config are picked up this often.
const MAX_SLEEP: Duration = Duration::from_secs(30);
/// The shortest: while another task's refresh of a due grant is in flight, look again
/// this soon rather than spin.
const MIN_SLEEP: Duration = Duration::from_millis(50);
const FIRST_BACKOFF_SECS: i64 = 5;
const MAX_BACKOFF_SECS: i64 = 600;

pub struct RefreshScheduler {
    broker: Arc<Broker>,
    /// Per grant: failures in a row, and no retry before this unix time.
    backoff: HashMap<String, (u32, i64)>,
}

impl RefreshScheduler {
    pub fn new(broker: Arc<Broker>) -> RefreshScheduler {
        RefreshScheduler {
            broker,
            backoff: HashMap::new(),
        }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        if self.broker.config().background_refresh_days == 0 {
            tracing::info!("background refresh is off (background_refresh_days = 0)");
            return;
        }
        loop {
            let wait = match self.tick().await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!("background refresh: {e}");
                    MAX_SLEEP
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait.max(MIN_SLEEP)) => {}
                _ = self.broker.schedule_changed() => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Refreshes every grant that is due; returns the time until the next one is.
    async fn tick(&mut self) -> Result<Duration, crate::store::DbError> {
        let now = now();
        let window = self.broker.config().background_refresh_days as i64 * 86_400;
        let mut next = MAX_SLEEP;
        let mut due = JoinSet::new();
        for grant in self.broker.grants().await? {
            if !in_schedule(&grant, now, window) {
                self.backoff.remove(&grant.id);
                continue;
            }
            let not_before = self.backoff.get(&grant.id).map_or(0, |b| b.1);
            let backing_off = Duration::from_secs((not_before - now).max(0) as u64);
            let wait = self.broker.refresh_due_in(&grant.id).max(backing_off);
            if !wait.is_zero() {
                next = next.min(wait);
                continue;
            }
            let broker = self.broker.clone();
            due.spawn(async move {
                let result = broker.refresh_ahead(&grant).await;
                (grant, result)
            });
        }
        while let Some(done) = due.join_next().await {
            let Ok((grant, result)) = done else { continue };
            match result {
                Ok(_) => {
                    self.backoff.remove(&grant.id);
                    next = next.min(self.broker.refresh_due_in(&grant.id));
                }
                Err(e) if e.kind() == Some(ErrorKind::AuthorizationRequired) => {
                    tracing::warn!(grant = %grant.id, "background refresh stopped: {}", e.message);
                    self.backoff.remove(&grant.id);
                }
                Err(e) => {
                    let failures = self.backoff.get(&grant.id).map_or(0, |b| b.0) + 1;
                    let delay = backoff_secs(failures);
                    tracing::warn!(grant = %grant.id, failures, "background refresh failed, retrying in {delay} s: {}", e.message);
                    self.backoff
                        .insert(grant.id.clone(), (failures, now + delay));
                    next = next.min(Duration::from_secs(delay as u64));
                }
            }
        }
        Ok(next)
    }
}

fn in_schedule(g: &GrantRow, now: i64, window: i64) -> bool {
    g.state == GrantState::Active
        && (g.has_refresh_token || g.grant_type != GrantType::AuthorizationCode)
        && g.last_used_at.unwrap_or(g.created_at).max(g.created_at) >= now - window
}

/// 5 s, 10 s, 20 s … up to 10 minutes, each with ±25 % jitter so many daemons (or
/// grants) do not retry in lockstep.
fn backoff_secs(failures: u32) -> i64 {
    let base = FIRST_BACKOFF_SECS
        .saturating_mul(1 << failures.saturating_sub(1).min(20))
        .min(MAX_BACKOFF_SECS);
    let jitter = rand::rng().random_range(-(base / 4)..=(base / 4));
    (base + jitter).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::AccessToken;
    use crate::secret::Secret;

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        for _ in 0..100 {
            let first = backoff_secs(1);
            assert!((4..=6).contains(&first), "{first}");
            let third = backoff_secs(3);
            assert!((15..=25).contains(&third), "{third}");
            let capped = backoff_secs(40);
            assert!((450..=750).contains(&capped), "{capped}");
        }
    }

    #[test]
    fn only_active_grants_used_within_the_window_are_scheduled() {
        let mut g = crate::broker::new_grant_row("g".into(), "s", "r", "i", "reg", "");
        g.has_refresh_token = true;
        g.created_at = 0;
        let day = 86_400;
        g.last_used_at = Some(10 * day);
        assert!(in_schedule(&g, 12 * day, 7 * day));
        assert!(!in_schedule(&g, 18 * day, 7 * day), "unused for 8 days");
        g.has_refresh_token = false;
        assert!(
            !in_schedule(&g, 12 * day, 7 * day),
            "nothing to refresh with"
        );
        g.grant_type = "jwt_bearer".into();
        assert!(
            in_schedule(&g, 12 * day, 7 * day),
            "a grant without a browser renews by granting again"
        );
        g.state = GrantState::NeedsLogin;
        assert!(
            !in_schedule(&g, 12 * day, 7 * day),
            "a refused grant is not retried in the background"
        );
        g.grant_type = "authorization_code".into();
        g.has_refresh_token = true;
        assert!(!in_schedule(&g, 12 * day, 7 * day), "needs a login");
    }

    #[test]
    fn due_at_three_quarters_or_five_minutes_before_never_before_half() {
        let token = |lifetime: i64| {
            let mut t = AccessToken::new(Secret::new("t"), 0);
            t.issued_at = 1_000;
            t.expires_at = 1_000 + lifetime;
            t
        };
        assert_eq!(
            token(3600).refresh_due_at(),
            1_000 + 2700,
            "75 % of an hour"
        );
        assert_eq!(token(900).refresh_due_at(), 1_000 + 600, "5 minutes before");
        assert_eq!(
            token(20).refresh_due_at(),
            1_000 + 10,
            "half of a short token"
        );
    }
}
