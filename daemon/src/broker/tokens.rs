//! Access tokens in memory, one slot per grant: the token, the refresh lock that makes
//! refreshes single-flight, the last-use stamp and the grant's DPoP key.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use mcp_authd_ipc::methods::TokenGetResult;
use mcp_authd_ipc::{ErrorKind, RpcError};

use super::Broker;
use crate::oauth::dpop::DpopKey;
use crate::oauth::token::{TokenType, Tokens, now};
use crate::secret::Secret;
use crate::store::{GrantRow, keys};

/// In-memory state of one grant. Readers take the current token under a short lock and
/// never wait for a refresh while it is still good; `refreshing` makes refreshes
/// single-flight: whoever holds it refreshes, the others wait and take the result.
#[derive(Default)]
pub(crate) struct GrantSlot {
    pub(super) access: Mutex<Option<AccessToken>>,
    pub(super) refreshing: Arc<tokio::sync::Mutex<()>>,
    pub(super) last_touch: AtomicI64,
    /// Set when the grant is revoked or logged out: a caller that queued behind its lock
    /// must not refresh it again.
    pub(super) forgotten: AtomicBool,
    /// The grant's DPoP key once known: `Some(None)` for a bearer grant, so that its
    /// refreshes never wait for the secret store (its refresh token may be in memory only,
    /// see `refresh_tokens`); `None` until read or saved.
    pub(super) dpop_key: Mutex<Option<Option<Arc<DpopKey>>>>,
}

impl GrantSlot {
    pub(super) fn current(&self) -> Option<AccessToken> {
        self.access
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn set(&self, token: Option<AccessToken>) {
        *self.access.lock().unwrap_or_else(|p| p.into_inner()) = token;
    }

    /// After its lock: refuses a grant forgotten while the caller waited.
    pub(super) fn check_not_forgotten(&self, grant: &GrantRow) -> Result<(), RpcError> {
        if self.forgotten.load(Ordering::Acquire) {
            return Err(RpcError::authorization_required(
                &grant.server_url,
                &[],
                "the grant was revoked or logged out meanwhile",
            ));
        }
        Ok(())
    }
}

/// An access token, held in memory only.
#[derive(Clone)]
pub struct AccessToken {
    pub token: Secret,
    pub expires_at: i64,
    /// Unix seconds when the authorization server issued it.
    pub issued_at: i64,
    /// When it arrived, on tokio's clock: the monotonic clock in production, and one a test
    /// running the daemon in its own process can pause, so the refresh schedule and the
    /// "just issued" rule move with it. Expiry stays unix time ([`now`]), the server's.
    pub obtained: Instant,
    pub token_type: TokenType,
}

impl AccessToken {
    pub fn new(token: Secret, expires_at: i64) -> AccessToken {
        AccessToken {
            token,
            expires_at,
            issued_at: now(),
            obtained: Instant::now(),
            token_type: TokenType::Bearer,
        }
    }

    /// The access token of a token response, presented as the response said.
    pub fn from_tokens(tokens: &Tokens) -> AccessToken {
        AccessToken {
            token_type: tokens.token_type.clone(),
            ..AccessToken::new(tokens.access_token.clone(), tokens.expires_at)
        }
    }

    /// When the background refresh should replace it: at 75 % of its lifetime or 5 minutes
    /// before expiry, whichever is sooner — but not before half its lifetime, so a token
    /// shorter-lived than 10 minutes is not refreshed again as soon as it arrives.
    pub fn refresh_due_at(&self) -> i64 {
        let lifetime = self.lifetime();
        let due = (self.issued_at + lifetime * 3 / 4).min(self.expires_at - 300);
        due.max(self.issued_at + lifetime / 2)
    }

    /// [`Self::refresh_due_at`] as a wait on the monotonic clock, to the millisecond: the
    /// refresh of a short-lived token must land before callers stop taking it (see
    /// [`Self::serves`]), and whole seconds would move it by up to one. Never due within
    /// [`MIN_REFRESH_AGE`] of arriving, so a server issuing tokens of a second or less is
    /// not asked again and again.
    pub fn refresh_due_in(&self) -> std::time::Duration {
        let offset =
            std::time::Duration::from_secs((self.refresh_due_at() - self.issued_at).max(0) as u64)
                .max(MIN_REFRESH_AGE);
        offset.saturating_sub(self.obtained.elapsed())
    }

    fn lifetime(&self) -> i64 {
        (self.expires_at - self.issued_at).max(0)
    }

    /// Good for a caller that needs `min_valid` more seconds: fresh while at least
    /// `min(min_valid, half its lifetime)` is left. A token shorter-lived than twice what
    /// callers ask for (20 s tokens, the default 60 s) is thus handed out for the first
    /// half of its life, while the background refresh renews it at half-life, instead of
    /// being refreshed for every caller. Just-issued tokens serve anyway (below).
    pub(super) fn serves(&self, min_valid: i64, now: i64) -> bool {
        self.expires_at - now >= min_valid.min(self.lifetime() / 2)
            || (self.expires_at > now && self.obtained.elapsed() < JUST_ISSUED)
    }
}

/// The earliest a token is renewed in the background after it arrived.
const MIN_REFRESH_AGE: std::time::Duration = std::time::Duration::from_secs(1);

/// A token the authorization server issued this recently is the best it will give: it is
/// handed out even when shorter-lived than asked, instead of refreshing again. This is what
/// makes every caller that queued behind a refresh share its result.
const JUST_ISSUED: std::time::Duration = std::time::Duration::from_secs(5);

impl Broker {
    pub(super) fn slot(&self, grant_id: &str) -> Arc<GrantSlot> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots.entry(grant_id.to_string()).or_default().clone()
    }

    pub(super) fn forget_slot(&self, grant_id: &str) {
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(grant_id);
    }

    /// Puts a fresh access token in memory (after a login).
    pub fn cache_access_token(&self, grant_id: &str, token: AccessToken) {
        self.slot(grant_id).set(Some(token));
        self.schedule_changed.notify_one();
    }

    /// A grant's DPoP key: from memory, else from the secret store; `None` for a grant
    /// whose tokens are not DPoP-bound.
    pub(super) async fn dpop_key(&self, grant_id: &str) -> Result<Option<Arc<DpopKey>>, RpcError> {
        let slot = self.slot(grant_id);
        if let Some(known) = slot
            .dpop_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Ok(known);
        }
        let key = match self.secrets.get(&keys::dpop_key(grant_id)).await? {
            Some(stored) => Some(Arc::new(DpopKey::from_secret(&stored).map_err(|e| {
                RpcError::new(ErrorKind::SecretStore, format!("grant {grant_id}: {e}"))
            })?)),
            None => None,
        };
        *slot.dpop_key.lock().unwrap_or_else(|p| p.into_inner()) = Some(key.clone());
        Ok(key)
    }

    /// Stores a login's DPoP key (or, with `None`, removes the one an earlier login left).
    pub(super) async fn save_dpop_key(
        &self,
        grant_id: &str,
        key: Option<DpopKey>,
    ) -> Result<(), RpcError> {
        let name = keys::dpop_key(grant_id);
        let key = match key {
            Some(key) => {
                self.secrets.set(&name, &key.to_secret()).await?;
                Some(Arc::new(key))
            }
            None => {
                self.secrets.delete(&name).await?;
                None
            }
        };
        *self
            .slot(grant_id)
            .dpop_key
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(key);
        Ok(())
    }

    /// The cached access token of a grant, if any (for display and revocation).
    pub fn cached_access_token(&self, grant_id: &str) -> Option<AccessToken> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(grant_id)
            .cloned()?;
        slot.current()
    }
}

pub(super) fn token_result(
    grant: String,
    scopes: Vec<String>,
    t: &AccessToken,
    now: i64,
) -> TokenGetResult {
    TokenGetResult {
        access_token: t.token.expose().to_string(),
        token_type: t.token_type.clone(),
        expires_at: t.expires_at,
        expires_in: t.expires_at - now,
        scopes,
        grant,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A token of `lifetime` seconds that arrived `age` ago, at unix time 1000 + age.
    fn token(lifetime: i64, age: std::time::Duration) -> (AccessToken, i64) {
        let mut t = AccessToken::new(Secret::new("t"), 0);
        t.issued_at = 1_000;
        t.expires_at = 1_000 + lifetime;
        t.obtained = Instant::now()
            .checked_sub(age)
            .expect("the clock is older than age");
        (t, 1_000 + age.as_secs() as i64)
    }

    #[test]
    fn a_short_token_serves_for_half_its_life_and_is_due_then() {
        let secs = std::time::Duration::from_secs;
        let (t, now) = token(20, secs(9));
        assert!(
            t.serves(60, now),
            "10+ s of 20 left: fresh for a 60 s caller"
        );
        assert!(!t.refresh_due_in().is_zero());
        assert!(t.refresh_due_in() <= secs(1), "{:?}", t.refresh_due_in());
        let (t, now) = token(20, secs(11));
        assert!(!t.serves(60, now), "9 s left is less than half");
        assert!(t.refresh_due_in().is_zero());
        assert!(t.serves(5, now), "a caller asking 5 s still takes it");

        let (t, now) = token(3600, secs(3000));
        assert!(
            t.serves(60, now),
            "an hour-long token serves until 60 s are left"
        );
        let (t, now) = token(3600, secs(3541));
        assert!(!t.serves(60, now));

        let (t, _) = token(0, secs(0));
        assert!(
            t.refresh_due_in() > std::time::Duration::from_millis(900),
            "never due right after arriving"
        );
    }

    /// A token's age is tokio's clock: paused, it moves only when the test moves it.
    #[tokio::test(start_paused = true)]
    async fn a_tokens_age_is_tokios_clock() {
        let secs = std::time::Duration::from_secs;
        let (t, _) = token(20, secs(0));
        assert_eq!(t.refresh_due_in(), secs(10), "due at half its life");
        // 5 s left of a 20 s token: too little for a caller asking 60 s, but it has just
        // arrived, so it is the best the server gives — until it is 5 s old.
        assert!(t.serves(60, 1_015));
        tokio::time::advance(secs(5)).await;
        assert!(!t.serves(60, 1_015), "5 s old: no longer just issued");
        assert_eq!(t.refresh_due_in(), secs(5));
        tokio::time::advance(secs(5)).await;
        assert!(t.refresh_due_in().is_zero());
    }
}
