//! The daemon's shared state and its one owner: grants in memory, one refresh in flight
//! per grant, client credentials, logins in progress. Its fields are private: the rest of
//! the daemon calls methods named for what they do.
//!
//! - [`tokens`]: access tokens in memory, one slot per grant;
//! - [`grants`]: `token.get` (one freshness check for memory and refresh), the hand-out,
//!   lookups, grant info, forgetting a grant;
//! - [`refresh`]: single-flight refresh and the stop gate;
//! - [`clients`]: client credentials, transport policy, quirks;
//! - [`revoke`]: revocation at the authorization server, then here;
//! - [`reload`]: the config file read again, put in force when valid;
//! - [`doctor`]: the database and the clock, as only the daemon can check them;
//! - [`step_up_limit`]: the step-up cap.

mod clients;
mod doctor;
mod dpop_proof;
mod grants;
mod logins;
mod refresh;
mod reload;
mod revoke;
mod step_up_limit;
#[cfg(test)]
mod tests;
mod tokens;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mcp_authd_ipc::methods::{GrantInfo, LoginPending, StatusResult};
use mcp_authd_ipc::next_step::{DOCTOR, STATUS};
use mcp_authd_ipc::{ErrorKind, PROTOCOL_VERSION, RpcError};
use tokio::sync::OwnedMutexGuard;

use crate::config::{Config, Paths};
use crate::oauth::OAuthError;
use crate::oauth::dpop::Nonces;
use crate::oauth::http::Http;
use crate::secret::Secret;
use crate::store::{Db, SecretStore, WriteBehind, keys};
use refresh::RefreshGate;
use step_up_limit::StepUpLimiter;
use tokens::GrantSlot;

pub use grants::{NewLogin, Obtained, Recipient};
pub use logins::{Join, LoginKey, Logins, Pastes, Started};
// For the scheduler's tests, which plan with grants and tokens made by hand.
#[cfg(test)]
pub use grants::new_grant_row;
#[cfg(test)]
pub use tokens::AccessToken;

/// The daemon's shared state. Every field is private: callers use the methods below and
/// in the submodules, each named for what it does.
pub struct Broker {
    db: Db,
    audit: crate::audit::AuditLog,
    secrets: Arc<SecretStore>,
    /// Refresh tokens, through the secret store: a rotated one the store did not take in
    /// time is kept here and written again (see `store::write_behind`).
    refresh_tokens: Arc<WriteBehind>,
    http: Http,
    /// Swapped whole by a reload (SIGHUP, `config.reload`); read through [`Broker::config`].
    config: std::sync::RwLock<Arc<Config>>,
    paths: Paths,
    socket: String,
    started: Instant,
    slots: Mutex<HashMap<String, Arc<GrantSlot>>>,
    /// By (server URL, account name): one login per account of a server at a time.
    logins: Logins<LoginProgress>,
    /// `manual` logins waiting for a pasted authorization response, keyed as `logins`.
    pastes: Pastes,
    step_ups: StepUpLimiter,
    /// Wakes the background refresh when a grant gets a new token (a login).
    schedule_changed: tokio::sync::Notify,
    /// `confirm_clients`: which programs may have which grants' tokens.
    confirm: Arc<crate::confirm::Confirmations>,
    refreshes: RefreshGate,
    /// The latest DPoP nonce each server origin asked for (RFC 9449 §8, §9).
    dpop_nonces: Nonces,
}

/// The grant's refresh lock, held: no refresh of it runs, none starts, until it is dropped.
/// `revoke`, `logout` and a login that replaces the grant's tokens hold it, so that a
/// refresh in flight cannot write a rotated token after them (or revoke the older one).
pub struct GrantLock {
    slot: Arc<GrantSlot>,
    _held: OwnedMutexGuard<()>,
}

/// A login as seen by the callers waiting on it.
#[derive(Clone)]
pub enum LoginProgress {
    Starting,
    Pending(LoginPending),
    Done(Box<Result<GrantInfo, RpcError>>),
}

impl Broker {
    pub fn new(
        db: Db,
        audit: crate::audit::AuditLog,
        secrets: Arc<SecretStore>,
        http: Http,
        config: Config,
        paths: Paths,
        socket: String,
    ) -> Broker {
        let confirm = Arc::new(crate::confirm::Confirmations::new(&config, db.clone()));
        Broker {
            db,
            audit,
            refresh_tokens: WriteBehind::new(secrets.clone()),
            secrets,
            http,
            confirm,
            config: std::sync::RwLock::new(Arc::new(config)),
            paths,
            socket,
            started: Instant::now(),
            slots: Mutex::new(HashMap::new()),
            logins: Logins::default(),
            pastes: Pastes::default(),
            step_ups: StepUpLimiter::default(),
            schedule_changed: tokio::sync::Notify::new(),
            refreshes: RefreshGate::default(),
            dpop_nonces: Nonces::default(),
        }
    }

    /// Takes a grant's refresh lock (waiting for a refresh in flight to finish).
    pub async fn lock_grant(&self, grant_id: &str) -> GrantLock {
        let slot = self.slot(grant_id);
        let held = slot.refreshing.clone().lock_owned().await;
        GrantLock { slot, _held: held }
    }

    /// Stopping: no refresh starts from now on; callers that need one get an error.
    pub fn stop_refreshing(&self) {
        self.refreshes.close();
    }

    /// Waits, up to `limit`, for the refreshes in flight and for their rotated refresh
    /// tokens to reach the secret store; says in the log which grants it could not save.
    pub async fn drain(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        if tokio::time::timeout_at(deadline, self.refreshes.drained())
            .await
            .is_err()
        {
            tracing::error!(
                "refreshes still in flight at the end of the stop's grace are abandoned; their grants may need a new login"
            );
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        for key in self.refresh_tokens.flush(left).await {
            tracing::error!(
                "the secret store never took {key}; the grant will need a new login (run: {DOCTOR})"
            );
        }
    }

    /// The config in force; a reload swaps it whole, so keep the `Arc` for one decision.
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts a reloaded config in force (see [`Broker::reload_config`]).
    fn replace_config(&self, config: Config) {
        self.confirm.configure(&config);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
    }

    /// The HTTP client every request to a server goes through (limits, trusted CAs).
    pub fn http(&self) -> &Http {
        &self.http
    }

    /// What a grant without a browser reads and sends through (see `machine`): lent, so
    /// that `machine` needs no broker.
    pub(crate) fn machine_reach(&self) -> crate::machine::Reach<'_> {
        crate::machine::Reach {
            http: &self.http,
            secrets: &self.secrets,
        }
    }

    /// The DPoP nonces servers asked for, by origin (RFC 9449 §8, §9).
    pub fn dpop_nonces(&self) -> &Nonces {
        &self.dpop_nonces
    }

    /// The nonce for a DPoP proof to `url`: the one the caller got from the server
    /// (remembered for the next proof), else the last one remembered for its origin.
    fn dpop_nonce_for(&self, url: &str, given: Option<&str>) -> Option<String> {
        match given {
            Some(nonce) => {
                self.dpop_nonces.remember(url, nonce);
                Some(nonce.to_string())
            }
            None => self.dpop_nonces.get(url),
        }
    }

    /// The logins in progress, by (server URL, account name); kept and used by `login`.
    pub(crate) fn logins(&self) -> &Logins<LoginProgress> {
        &self.logins
    }

    /// The `manual` logins waiting for a pasted response, keyed as `logins`; kept and used
    /// by `login`.
    pub(crate) fn pastes(&self) -> &Pastes {
        &self.pastes
    }

    /// Resolves when a grant got a new token (a login): the background refresh plans
    /// again.
    pub fn schedule_changed(&self) -> tokio::sync::futures::Notified<'_> {
        self.schedule_changed.notified()
    }

    /// Whether `confirm_clients` is on for any server.
    pub fn confirms_clients(&self) -> bool {
        self.confirm.is_enabled()
    }

    /// `confirm_clients`' slow path for one hand-out: `peer` may have `grant`'s tokens if
    /// the config in force does not ask for its server, memory allows it, or the user
    /// says so now (see `confirm`).
    pub async fn confirm(
        &self,
        grant: &crate::store::GrantRow,
        peer: &crate::peer::Peer,
        notifier: &crate::reply::Notifier,
    ) -> Result<(), RpcError> {
        self.confirm
            .check(&self.config(), grant, peer, notifier)
            .await
    }

    /// Reads the decisions `confirm_clients` stored (at start).
    pub async fn load_confirmations(&self) -> Result<(), crate::store::DbError> {
        self.confirm.load().await
    }

    /// Answers a waiting `confirm_clients` question; `always` and `deny` are stored.
    pub async fn answer_confirmation(
        &self,
        id: u64,
        answer: mcp_authd_ipc::clients::Answer,
    ) -> Result<mcp_authd_ipc::clients::AnswerResult, RpcError> {
        self.confirm.answer(id, answer).await
    }

    /// The `confirm_clients` questions waiting for an answer.
    pub fn pending_confirmations(&self) -> Vec<mcp_authd_ipc::clients::PendingRequest> {
        self.confirm.pending()
    }

    /// The programs `confirm_clients` decided on for a grant.
    pub fn client_decisions(&self, grant_id: &str) -> Vec<mcp_authd_ipc::clients::ClientDecision> {
        self.confirm.decisions(grant_id)
    }

    /// Forgets the decision on `program` for a grant (`None`: there was none).
    pub async fn forget_client(
        &self,
        grant_id: &str,
        program: &str,
    ) -> Result<Option<mcp_authd_ipc::clients::ClientDecision>, RpcError> {
        self.confirm.forget(grant_id, program).await
    }

    /// A secret the daemon keeps for itself by its key (`store::keys`): the config file's
    /// named secrets, the IdP's tokens.
    pub async fn stored_secret(
        &self,
        key: &str,
    ) -> Result<Option<Secret>, crate::store::SecretStoreError> {
        self.secrets.get(key).await
    }

    /// Keeps a secret of the daemon's own under its key (see [`Self::stored_secret`]).
    pub async fn store_secret(
        &self,
        key: &str,
        value: &Secret,
    ) -> Result<(), crate::store::SecretStoreError> {
        self.secrets.set(key, value).await
    }

    /// Removes a secret of the daemon's own (see [`Self::stored_secret`]).
    pub async fn delete_secret(&self, key: &str) -> Result<(), crate::store::SecretStoreError> {
        self.secrets.delete(key).await
    }

    /// Which secret store is in use (`keychain`, `file`, …).
    pub fn secret_store_backend(&self) -> mcp_authd_ipc::methods::SecretBackend {
        self.secrets.status().backend
    }

    /// The recent hand-outs of a grant, newest first, after every one answered so far is
    /// written.
    pub async fn hand_outs(
        &self,
        grant_id: &str,
        limit: u32,
    ) -> Result<Vec<mcp_authd_ipc::audit::HandOut>, RpcError> {
        self.audit.flush().await;
        Ok(self.db.hand_outs(grant_id, limit).await?)
    }

    pub async fn status(&self) -> Result<StatusResult, RpcError> {
        Ok(StatusResult {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol_version: PROTOCOL_VERSION,
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs(),
            socket: self.socket.clone(),
            data_dir: self.paths.data_dir.display().to_string(),
            config_file: self.paths.config_file.display().to_string(),
            database_schema: self.db.schema_version().await?,
            secret_store: {
                let mut store = self.secrets.status();
                store.refresh_tokens_not_stored = self
                    .refresh_tokens
                    .not_yet_stored()
                    .iter()
                    .filter_map(|key| keys::grant_of_refresh_token(key))
                    .map(str::to_string)
                    .collect();
                store
            },
            grants: self.db.count_grants().await? as u32,
        })
    }
}

/// A broker for unit tests: a real SQLite file and the file secret store under `dir`,
/// with `config` (its file `dir/config.toml`); the database handle beside it, for rows a
/// test plants.
#[cfg(test)]
pub async fn for_tests(dir: &std::path::Path, config: Config) -> (Broker, Db) {
    let db = Db::open(&dir.join("state.db")).await.unwrap();
    let secrets = Arc::new(SecretStore::file_for_tests(dir.join("secrets.json")));
    let (audit, _writer) = crate::audit::AuditLog::start(db.clone());
    let broker = Broker::new(
        db.clone(),
        audit,
        secrets,
        Http::new(None).unwrap(),
        config,
        Paths {
            data_dir: dir.to_path_buf(),
            config_file: dir.join("config.toml"),
        },
        "test.sock".into(),
    );
    (broker, db)
}

/// The config names a client that may not be used here (see [`Config::client`]).
pub fn config_error(server: &str, why: String) -> RpcError {
    RpcError::new(ErrorKind::ConfigInvalid, why).with_server(server)
}

pub fn server_error(server: &str, what: &str, e: &OAuthError) -> RpcError {
    RpcError::new(
        ErrorKind::ServerError,
        format!("{what}: {e}; retry later, and check the network and the clock: {DOCTOR}"),
    )
    .with_server(server)
}

impl From<crate::store::DbError> for RpcError {
    fn from(e: crate::store::DbError) -> Self {
        tracing::error!("{e}");
        RpcError::new(
            ErrorKind::Internal,
            format!("{e}; check the data directory, or run: {STATUS}"),
        )
    }
}

impl From<crate::store::SecretStoreError> for RpcError {
    fn from(e: crate::store::SecretStoreError) -> Self {
        tracing::error!("{e}");
        RpcError::new(
            ErrorKind::SecretStore,
            format!("{e}; unlock the keychain and retry; see: {DOCTOR}"),
        )
    }
}
