//! Refresh tokens on their way to the secret store. A rotated refresh token is the only
//! copy of the grant once the authorization server has answered: if the keychain does not
//! take it in time (an unlock prompt nobody answered yet), it stays here, is used for the
//! next refresh, and is written again with backoff until the keychain confirms it.
//!
//! One writer task per key, one write in flight at a time: a keychain call that timed out
//! still runs in its thread, and a second write of a newer value beside it could land
//! first and be overwritten by the older one. The writer always writes the newest value
//! (or deletion) asked for, so a delete after a set can never be undone by the set.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::{SecretStore, SecretStoreError};
use crate::secret::Secret;

/// How long a caller waits for the keychain to confirm a write before going on with the
/// value kept in memory (the keychain's own timeout for one call).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

#[derive(Clone)]
enum Wanted {
    Set(Secret),
    Deleted,
}

/// A key whose newest value the store has not confirmed yet.
struct Pending {
    wanted: Wanted,
    /// Bumped by every write asked for; the writer confirms up to the one it wrote.
    generation: u64,
    /// The last failed attempt: the generation it tried, and why.
    failed: Option<(u64, String)>,
}

/// Why a write is not confirmed (yet): it is kept in memory and retried.
#[derive(Debug, thiserror::Error)]
#[error("{0}; kept in memory and written again until the secret store takes it")]
pub struct NotYetStored(pub String);

pub struct WriteBehind {
    store: Arc<SecretStore>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Woken whenever a write succeeds or fails.
    progress: Notify,
    confirm_timeout: Duration,
}

impl WriteBehind {
    pub fn new(store: Arc<SecretStore>) -> Arc<WriteBehind> {
        Self::with_timeout(store, CONFIRM_TIMEOUT)
    }

    fn with_timeout(store: Arc<SecretStore>, confirm_timeout: Duration) -> Arc<WriteBehind> {
        Arc::new(WriteBehind {
            store,
            pending: Mutex::new(HashMap::new()),
            progress: Notify::new(),
            confirm_timeout,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The newest value of `key`: the one on its way to the store, else the stored one.
    pub async fn get(&self, key: &str) -> Result<Option<Secret>, SecretStoreError> {
        if let Some(p) = self.lock().get(key) {
            return Ok(match &p.wanted {
                Wanted::Set(v) => Some(v.clone()),
                Wanted::Deleted => None,
            });
        }
        self.store.get(key).await
    }

    /// Stores `value` under `key`. `Err` when the store did not confirm it in time: the
    /// value is then kept here (see [`WriteBehind::get`]) and written again until it is.
    pub async fn set(self: &Arc<Self>, key: &str, value: &Secret) -> Result<(), NotYetStored> {
        self.put(key, Wanted::Set(value.clone())).await
    }

    /// Deletes `key`, after any write of it still on its way.
    pub async fn delete(self: &Arc<Self>, key: &str) -> Result<(), NotYetStored> {
        self.put(key, Wanted::Deleted).await
    }

    /// Keys whose newest value the store has not confirmed yet.
    pub fn not_yet_stored(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.lock().keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Waits up to `limit` for every pending write; returns the keys still not stored.
    pub async fn flush(&self, limit: Duration) -> Vec<String> {
        let _ = tokio::time::timeout(limit, async {
            loop {
                let progress = self.progress.notified();
                if self.lock().is_empty() {
                    return;
                }
                progress.await;
            }
        })
        .await;
        self.not_yet_stored()
    }

    async fn put(self: &Arc<Self>, key: &str, wanted: Wanted) -> Result<(), NotYetStored> {
        let (generation, start_writer) = {
            let mut pending = self.lock();
            match pending.get_mut(key) {
                Some(p) => {
                    p.wanted = wanted;
                    p.generation += 1;
                    (p.generation, false)
                }
                None => {
                    pending.insert(
                        key.to_string(),
                        Pending {
                            wanted,
                            generation: 1,
                            failed: None,
                        },
                    );
                    (1, true)
                }
            }
        };
        if start_writer {
            tokio::spawn(self.clone().write(key.to_string()));
        }
        self.confirmed(key, generation).await
    }

    /// Waits until the writer stored generation `generation` of `key` (or a newer one),
    /// failed at it, or the confirm timeout passed.
    async fn confirmed(&self, key: &str, generation: u64) -> Result<(), NotYetStored> {
        let wait = async {
            loop {
                let progress = self.progress.notified();
                match self.lock().get(key) {
                    None => return Ok(()),
                    Some(p) if p.generation > generation => return Ok(()),
                    Some(Pending {
                        failed: Some((tried, why)),
                        ..
                    }) if *tried >= generation => return Err(NotYetStored(why.clone())),
                    Some(_) => {}
                }
                progress.await;
            }
        };
        match tokio::time::timeout(self.confirm_timeout, wait).await {
            Ok(result) => result,
            Err(_) => Err(NotYetStored(format!(
                "the secret store did not answer within {} s",
                self.confirm_timeout.as_secs()
            ))),
        }
    }

    /// The one writer of `key`: writes the newest wanted value until the store has it.
    async fn write(self: Arc<Self>, key: String) {
        let mut retry = FIRST_RETRY;
        loop {
            let Some((wanted, generation)) = self
                .lock()
                .get(&key)
                .map(|p| (p.wanted.clone(), p.generation))
            else {
                return;
            };
            let result = match &wanted {
                Wanted::Set(value) => self.store.set_patiently(&key, value).await,
                Wanted::Deleted => self.store.delete_patiently(&key).await,
            };
            let done = {
                let mut pending = self.lock();
                match &result {
                    Ok(())
                        if pending
                            .get(&key)
                            .is_some_and(|p| p.generation == generation) =>
                    {
                        pending.remove(&key);
                        true
                    }
                    // A newer value was asked for meanwhile: write that one next.
                    Ok(()) => false,
                    Err(e) => {
                        if let Some(p) = pending.get_mut(&key) {
                            p.failed = Some((generation, e.to_string()));
                        }
                        false
                    }
                }
            };
            self.progress.notify_waiters();
            match result {
                Ok(()) if done => {
                    tracing::debug!(key = %key, "secret stored");
                    return;
                }
                Ok(()) => retry = FIRST_RETRY,
                Err(e) => {
                    tracing::warn!(
                        key = %key,
                        "the secret store did not take a secret ({e}); kept in memory, trying again in {} s",
                        retry.as_secs()
                    );
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(MAX_RETRY);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &tempfile::TempDir) -> Arc<SecretStore> {
        Arc::new(SecretStore::file_for_tests(dir.path().join("secrets.json")))
    }

    // The confirm timeouts and the retry backoff are tokio timers: with the clock paused
    // they pass as soon as nothing else can run, instead of in real time.

    #[tokio::test(start_paused = true)]
    async fn a_stalled_write_keeps_the_newest_value_in_memory_until_it_is_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let tokens = WriteBehind::with_timeout(store.clone(), Duration::from_millis(200));
        tokens.set("k", &Secret::new("rt1")).await.unwrap();

        let stall = store.stall_for_tests().await;
        let err = tokens.set("k", &Secret::new("rt2")).await.unwrap_err();
        assert!(err.to_string().contains("did not answer"), "{err}");
        assert_eq!(tokens.get("k").await.unwrap().unwrap().expose(), "rt2");
        assert_eq!(tokens.not_yet_stored(), vec!["k".to_string()]);
        // A newer rotation while the first write is still stuck.
        assert!(tokens.set("k", &Secret::new("rt3")).await.is_err());
        assert_eq!(tokens.get("k").await.unwrap().unwrap().expose(), "rt3");
        drop(stall);

        assert!(tokens.flush(Duration::from_secs(5)).await.is_empty());
        assert_eq!(store.get("k").await.unwrap().unwrap().expose(), "rt3");
        assert!(tokens.not_yet_stored().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_delete_after_a_stalled_write_wins() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(&dir);
        let tokens = WriteBehind::with_timeout(store.clone(), Duration::from_millis(200));
        let stall = store.stall_for_tests().await;
        assert!(tokens.set("k", &Secret::new("rt")).await.is_err());
        assert!(tokens.delete("k").await.is_err());
        assert!(
            tokens.get("k").await.unwrap().is_none(),
            "deleted in memory"
        );
        drop(stall);
        assert!(tokens.flush(Duration::from_secs(5)).await.is_empty());
        assert!(store.get("k").await.unwrap().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_store_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secrets.json");
        let store = store(&dir);
        std::fs::write(&path, b"{damaged").unwrap();
        let tokens = WriteBehind::with_timeout(store.clone(), Duration::from_secs(2));
        let asked = tokio::time::Instant::now();
        let err = tokens.set("k", &Secret::new("rt")).await.unwrap_err();
        assert!(err.to_string().contains("cannot be used"), "{err}");
        std::fs::remove_file(&path).unwrap();
        assert!(tokens.flush(Duration::from_secs(5)).await.is_empty());
        assert!(asked.elapsed() >= FIRST_RETRY, "retried after the backoff");
        assert_eq!(store.get("k").await.unwrap().unwrap().expose(), "rt");
    }
}
