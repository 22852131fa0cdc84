//! Logins in progress, one per (server, account), and the doors of `manual` logins for
//! `login.paste`.
//!
//! An entry is removed only by the login that put it there (compared by identity, never by
//! key alone), and a login's result is published under the same lock that removes its
//! entry: a caller that comes after the result starts a new login whose entry stays until
//! that login ends, and a caller that came before it gets the result.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::watch;

use crate::loopback::Inbox;

/// Which login: a server (its normalized URL) and an account of it (empty: the default).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoginKey {
    pub server: String,
    pub account: String,
}

impl LoginKey {
    pub fn new(server: &str, account: Option<&str>) -> LoginKey {
        LoginKey {
            server: server.to_string(),
            account: account.unwrap_or_default().to_string(),
        }
    }
}

/// A map from [`LoginKey`] whose entries carry the id of whoever inserted them.
struct Owned<V> {
    table: Mutex<Table<V>>,
}

struct Table<V> {
    last_id: u64,
    entries: HashMap<LoginKey, (u64, V)>,
}

impl<V> Default for Owned<V> {
    fn default() -> Self {
        Owned {
            table: Mutex::new(Table {
                last_id: 0,
                entries: HashMap::new(),
            }),
        }
    }
}

impl<V> Owned<V> {
    fn lock(&self) -> MutexGuard<'_, Table<V>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<V> Table<V> {
    /// Puts `value` under `key` (replacing what was there) and returns its new id.
    fn insert(&mut self, key: LoginKey, value: V) -> u64 {
        self.last_id += 1;
        self.entries.insert(key, (self.last_id, value));
        self.last_id
    }

    fn get(&self, key: &LoginKey) -> Option<&V> {
        self.entries.get(key).map(|(_, value)| value)
    }

    /// Removes the entry under `key` if it is still the one with `id`.
    fn remove_own(&mut self, key: &LoginKey, id: u64) {
        if self.entries.get(key).is_some_and(|(own, _)| *own == id) {
            self.entries.remove(key);
        }
    }
}

/// The logins in progress; `P` is what their callers see (the broker's `LoginProgress`).
pub struct Logins<P> {
    entries: std::sync::Arc<Owned<watch::Receiver<P>>>,
}

impl<P> Default for Logins<P> {
    fn default() -> Self {
        Logins {
            entries: Default::default(),
        }
    }
}

/// What [`Logins::join_or_start`] found.
pub enum Join<P> {
    /// A login for the key is running: its progress, up to its result.
    Joined(watch::Receiver<P>),
    /// None was: the caller runs this one.
    Started(Started<P>),
}

impl<P> Logins<P> {
    /// Joins the login running for `key`, or starts one (its progress beginning at
    /// `starting`) in the same step, under the map's lock.
    pub fn join_or_start(&self, key: LoginKey, starting: P) -> Join<P> {
        let mut table = self.entries.lock();
        if let Some(progress) = table.get(&key) {
            return Join::Joined(progress.clone());
        }
        let (tx, rx) = watch::channel(starting);
        let id = table.insert(key.clone(), rx);
        Join::Started(Started {
            entries: self.entries.clone(),
            key,
            id,
            tx,
        })
    }
}

/// The one login running for its key. Its entry goes when it [`finish`](Started::finish)es
/// or is dropped (a login task that ended without a result: its callers hear that).
pub struct Started<P> {
    entries: std::sync::Arc<Owned<watch::Receiver<P>>>,
    key: LoginKey,
    id: u64,
    tx: watch::Sender<P>,
}

impl<P> Started<P> {
    /// Progress as callers see it, from now on.
    pub fn subscribe(&self) -> watch::Receiver<P> {
        self.tx.subscribe()
    }

    /// Tells every caller how the login is getting on.
    pub fn report(&self, progress: P) {
        self.tx.send_replace(progress);
    }

    /// Publishes the login's result and removes its entry, in one step: no caller can
    /// find the entry with the result in it.
    pub fn finish(&self, result: P) {
        let mut table = self.entries.lock();
        self.tx.send_replace(result);
        table.remove_own(&self.key, self.id);
    }
}

impl<P> Drop for Started<P> {
    fn drop(&mut self) {
        self.entries.lock().remove_own(&self.key, self.id);
    }
}

/// The `manual` logins waiting for a pasted authorization response.
#[derive(Default)]
pub struct Pastes {
    entries: Owned<Inbox>,
}

impl Pastes {
    /// Opens `key`'s door while the returned guard lives.
    pub fn open(&self, key: LoginKey, inbox: Inbox) -> PasteDoor<'_> {
        let id = self.entries.lock().insert(key.clone(), inbox);
        PasteDoor {
            pastes: self,
            key,
            id,
        }
    }

    /// The door of the `manual` login waiting for `key`, if one is.
    pub fn find(&self, key: &LoginKey) -> Option<Inbox> {
        self.entries.lock().get(key).cloned()
    }
}

/// A `manual` login's door for `login.paste`, open while the login waits.
pub struct PasteDoor<'a> {
    pastes: &'a Pastes,
    key: LoginKey,
    id: u64,
}

impl Drop for PasteDoor<'_> {
    fn drop(&mut self) {
        self.pastes.entries.lock().remove_own(&self.key, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq)]
    enum Progress {
        Starting,
        Done(u32),
    }

    fn key() -> LoginKey {
        LoginKey::new("https://mcp.example/mcp", Some("work"))
    }

    fn started(logins: &Logins<Progress>) -> Started<Progress> {
        match logins.join_or_start(key(), Progress::Starting) {
            Join::Started(login) => login,
            Join::Joined(rx) => panic!("joined a login at {:?}", *rx.borrow()),
        }
    }

    /// The race of issue 13: a login publishes its result, a caller comes in before the
    /// finished login's task has let go of its entry and starts a second login; the first
    /// task's clean-up then must not remove the second login's entry, or a third caller
    /// starts a third login beside the second.
    #[test]
    fn a_login_started_after_a_result_keeps_its_entry() {
        let logins = Logins::default();
        let first = started(&logins);
        let mut first_caller = first.subscribe();
        first.finish(Progress::Done(1));
        assert_eq!(*first_caller.borrow_and_update(), Progress::Done(1));

        // Between the first login's result and the end of its task.
        let second = started(&logins);
        drop(first);

        match logins.join_or_start(key(), Progress::Starting) {
            Join::Joined(rx) => assert_eq!(*rx.borrow(), Progress::Starting),
            Join::Started(_) => panic!("a third login started while the second one runs"),
        }
        second.report(Progress::Starting);
        second.finish(Progress::Done(2));
        assert!(matches!(
            logins.join_or_start(key(), Progress::Starting),
            Join::Started(_)
        ));
    }

    /// A caller that joined before the result gets it; one that comes after starts anew.
    #[test]
    fn callers_before_the_result_get_it_and_later_ones_start_anew() {
        let logins = Logins::default();
        let login = started(&logins);
        let Join::Joined(mut joined) = logins.join_or_start(key(), Progress::Starting) else {
            panic!("a second login started beside the first");
        };
        login.finish(Progress::Done(7));
        assert_eq!(*joined.borrow_and_update(), Progress::Done(7));
        drop(started(&logins));
        // Another account of the same server has a login of its own.
        let other = LoginKey::new("https://mcp.example/mcp", None);
        assert!(matches!(
            logins.join_or_start(other, Progress::Starting),
            Join::Started(_)
        ));
    }

    /// A login task that ends without a result (it panicked, the runtime stopped) leaves
    /// no entry behind: its callers hear the channel close, the next caller starts anew.
    #[tokio::test]
    async fn a_login_ended_without_a_result_leaves_no_entry() {
        let logins = Logins::default();
        let login = started(&logins);
        let Join::Joined(mut joined) = logins.join_or_start(key(), Progress::Starting) else {
            panic!("a second login started beside the first");
        };
        drop(login);
        assert!(joined.changed().await.is_err());
        drop(started(&logins));
    }

    /// `login.paste` reaches the `manual` login of the account it names; a door is closed
    /// only by the login that opened it.
    #[tokio::test]
    async fn paste_doors_are_per_account_and_closed_by_their_own_login() {
        use crate::loopback::{LoopbackRedirect, RedirectHost};
        let state = crate::oauth::pkce::random_token();
        let redirect = LoopbackRedirect::bind(&RedirectHost::DEFAULT, 0, "/cb", &state)
            .await
            .unwrap();
        let pastes = Pastes::default();
        let work = key();
        let default = LoginKey::new("https://mcp.example/mcp", None);
        let door = pastes.open(work.clone(), redirect.inbox(false));
        assert!(pastes.find(&work).is_some());
        assert!(pastes.find(&default).is_none());
        let later = pastes.open(work.clone(), redirect.inbox(false));
        drop(door);
        assert!(
            pastes.find(&work).is_some(),
            "an older door closed a newer one"
        );
        drop(later);
        assert!(pastes.find(&work).is_none());
    }
}
