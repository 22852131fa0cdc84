//! SQLite through sqlx: servers' metadata, registrations, grants. Never a secret.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use mcp_authd_ipc::audit::HandOut;
/// The words of the `state` and `kind` columns: the protocol's own enums, read through
/// their `From<String>` (`#[sqlx(try_from)]` below) and written with `as_str`, here only.
pub use mcp_authd_ipc::domain::{GrantState, GrantType, RegistrationKind};

use crate::oauth::discovery::AsMetadata;
use crate::peer::Peer;

mod client_decisions;

/// `at, count, server_url, peer_pid, peer_uid, peer_exe` of `token_hand_outs`.
type HandOutRow = (i64, i64, String, Option<i64>, Option<i64>, Option<String>);

/// Rows of the token hand-out log kept: each write of the audit log deletes older ones in
/// its transaction. A row counts one window's hand-outs of a grant to one connection.
const MAX_HAND_OUTS: i64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database error in {path}: {source}")]
    Sqlx { path: String, source: sqlx::Error },
    #[error("cannot upgrade the database schema in {path}: {source}")]
    Migrate {
        path: String,
        source: sqlx::migrate::MigrateError,
    },
    #[error("a stored record is damaged: {0}")]
    Corrupt(String),
}

#[derive(Clone)]
pub struct Db {
    pool: SqlitePool,
    path: String,
    lookups: Arc<GrantLookups>,
}

/// Token hand-outs, as the audit log keeps them: `count` identical ones, the last at `at`.
pub struct HandOutRecord {
    pub at: i64,
    pub count: u64,
    pub grant_id: String,
    pub server: String,
    pub peer: Arc<Peer>,
}

/// Remembered `find_grant` answers by key (`None`: no such grant).
type Answers = HashMap<String, Option<Arc<GrantRow>>>;

/// Spellings remembered at most. Callers choose the keys (any string is a lookup), so
/// without a bound one client could grow the map without end; when it is full it starts
/// over (the next lookups read the database once more), which keeps the common case — a
/// few servers asked for again and again — in memory.
const MAX_REMEMBERED_LOOKUPS: usize = 1024;

/// Answers of `find_grant` kept in memory: it runs on every `token.get`, and grants change
/// rarely. Every write to the grants table goes through this type's methods, which bump
/// the generation; a lookup made under an older generation is thrown away.
#[derive(Default)]
struct GrantLookups {
    generation: AtomicU64,
    answers: Mutex<(u64, Answers)>,
}

impl GrantLookups {
    fn get(&self, key: &str) -> Option<Option<Arc<GrantRow>>> {
        let answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.0 != self.generation.load(Ordering::Acquire) {
            return None;
        }
        answers.1.get(key).cloned()
    }

    /// Remembers an answer read under `generation` (unless grants changed since).
    fn put(&self, generation: u64, key: &str, answer: Option<Arc<GrantRow>>) {
        let mut answers = self.answers.lock().unwrap_or_else(|p| p.into_inner());
        if answers.0 != generation {
            if generation != self.generation.load(Ordering::Acquire) {
                return;
            }
            *answers = (generation, HashMap::new());
        }
        if answers.1.len() >= MAX_REMEMBERED_LOOKUPS && !answers.1.contains_key(key) {
            answers.1.clear();
        }
        answers.1.insert(key.to_string(), answer);
    }

    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegistrationRow {
    pub id: String,
    pub issuer: String,
    #[sqlx(try_from = "String")]
    pub kind: RegistrationKind,
    pub client_id: String,
    pub redirect_uri: Option<String>,
    pub token_endpoint_auth_method: String,
    pub has_client_secret: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub id: String,
    pub server_url: String,
    pub resource: String,
    pub issuer: String,
    pub registration_id: String,
    pub scopes: String,
    #[sqlx(try_from = "String")]
    pub state: GrantState,
    pub needs_login_reason: Option<String>,
    pub has_refresh_token: bool,
    pub access_expires_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    pub last_used_at: Option<i64>,
    pub last_refresh_at: Option<i64>,
    /// Who the grant is for, from the last id_token (display only; see `oauth::id_token`).
    pub account: Option<String>,
    /// The account name the user gave (`--account`); empty for the default account.
    pub account_name: String,
    /// The `login_hint` the account's last login sent, if any.
    pub login_hint: Option<String>,
    /// `authorization_code`, `client_credentials`, `jwt_bearer` or `enterprise`
    /// (`config::GrantKind`).
    #[sqlx(try_from = "String")]
    pub grant_type: GrantType,
}

impl GrantRow {
    /// The account name, `None` for the default account (as the protocol spells it).
    pub fn account_name(&self) -> Option<&str> {
        (!self.account_name.is_empty()).then_some(self.account_name.as_str())
    }

    pub fn scope_list(&self) -> Vec<String> {
        self.scopes
            .split_ascii_whitespace()
            .map(str::to_string)
            .collect()
    }
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

impl Db {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        let display = path.display().to_string();
        let sqlx_err = |source| DbError::Sqlx {
            path: display.clone(),
            source,
        };
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{display}"))
            .map_err(sqlx_err)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(sqlx_err)?;
        restrict_permissions(path);
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|source| DbError::Migrate {
                path: display.clone(),
                source,
            })?;
        Ok(Db {
            pool,
            path: display,
            lookups: Arc::default(),
        })
    }

    fn err(&self) -> impl Fn(sqlx::Error) -> DbError + '_ {
        |source| DbError::Sqlx {
            path: self.path.clone(),
            source,
        }
    }

    /// The schema version this build migrates to.
    pub fn expected_schema_version() -> i64 {
        MIGRATOR.migrations.last().map_or(0, |m| m.version)
    }

    /// `ok`, or the first problem SQLite's `PRAGMA quick_check` finds.
    pub async fn integrity(&self) -> Result<String, DbError> {
        sqlx::query_scalar("PRAGMA quick_check(1)")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())
    }

    pub async fn schema_version(&self) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM _sqlx_migrations")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())
    }

    pub async fn save_as_metadata(&self, m: &AsMetadata, now: i64) -> Result<(), DbError> {
        let json = serde_json::to_string(m).map_err(|e| DbError::Corrupt(e.to_string()))?;
        sqlx::query(
            "INSERT INTO authorization_servers (issuer, metadata, fetched_at) VALUES (?, ?, ?)
             ON CONFLICT (issuer) DO UPDATE SET metadata = excluded.metadata, fetched_at = excluded.fetched_at",
        )
        .bind(&m.issuer)
        .bind(json)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    pub async fn as_metadata(&self, issuer: &str) -> Result<Option<AsMetadata>, DbError> {
        let json: Option<String> =
            sqlx::query_scalar("SELECT metadata FROM authorization_servers WHERE issuer = ?")
                .bind(issuer)
                .fetch_optional(&self.pool)
                .await
                .map_err(self.err())?;
        json.map(|j| {
            serde_json::from_str(&j)
                .map_err(|e| DbError::Corrupt(format!("metadata of {issuer}: {e}")))
        })
        .transpose()
    }

    pub async fn registration(&self, id: &str) -> Result<Option<RegistrationRow>, DbError> {
        sqlx::query_as("SELECT * FROM registrations WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(self.err())
    }

    /// The newest registration of `kind` at `issuer` (for one `client_id` when given).
    pub async fn find_registration(
        &self,
        issuer: &str,
        kind: &RegistrationKind,
        client_id: Option<&str>,
    ) -> Result<Option<RegistrationRow>, DbError> {
        sqlx::query_as(
            "SELECT * FROM registrations WHERE issuer = ? AND kind = ? AND (? IS NULL OR client_id = ?)
             ORDER BY created_at DESC, rowid DESC LIMIT 1",
        )
        .bind(issuer)
        .bind(kind.as_str())
        .bind(client_id)
        .bind(client_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())
    }

    pub async fn insert_registration(&self, r: &RegistrationRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO registrations (id, issuer, kind, client_id, redirect_uri, token_endpoint_auth_method, has_client_secret, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&r.id)
        .bind(&r.issuer)
        .bind(r.kind.as_str())
        .bind(&r.client_id)
        .bind(&r.redirect_uri)
        .bind(&r.token_endpoint_auth_method)
        .bind(r.has_client_secret)
        .bind(r.created_at)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(())
    }

    /// `find_grant_as`'s remembered answer for what a caller asked, if it has one (no
    /// database access).
    pub fn remembered_grant(
        &self,
        asked: &str,
        account: Option<&str>,
    ) -> Option<Option<Arc<GrantRow>>> {
        match account {
            None => self.lookups.get(asked),
            Some(account) => self.lookups.get(&account_lookup(asked, account)),
        }
    }

    /// A grant by id, else the newest grant of the default account for a server URL or
    /// resource.
    #[cfg(test)]
    pub async fn find_grant(&self, key: &str) -> Result<Option<GrantRow>, DbError> {
        self.find_grant_as(key, key, None).await
    }

    /// `find_grant(key)`, remembered under `asked`, the caller's own spelling of `key`: the
    /// next lookup of the same words need not normalize them again. With `account`, a
    /// server URL or resource finds that account's grant and a grant id must be of it;
    /// without, a URL finds the default account's grant and an id any grant.
    pub async fn find_grant_as(
        &self,
        asked: &str,
        key: &str,
        account: Option<&str>,
    ) -> Result<Option<GrantRow>, DbError> {
        // A caller's words holding NUL are never remembered: NUL separates the account in
        // the remembered keys (account names cannot hold one), so they could collide.
        let remembered = match account {
            _ if asked.contains('\0') => None,
            None => Some(asked.to_string()),
            Some(account) => Some(account_lookup(asked, account)),
        };
        if let Some(answer) = remembered.as_deref().and_then(|k| self.lookups.get(k)) {
            return Ok(answer.map(|g| (*g).clone()));
        }
        let generation = self.lookups.generation.load(Ordering::Acquire);
        let answer: Option<GrantRow> = sqlx::query_as(
            "SELECT * FROM grants
             WHERE (id = ?1 AND (?2 IS NULL OR account_name = ?2))
                OR ((server_url = ?1 OR resource = ?1) AND account_name = COALESCE(?2, ''))
             ORDER BY (id = ?1) DESC, (server_url = ?1) DESC, updated_at DESC LIMIT 1",
        )
        .bind(key)
        .bind(account)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())?;
        if let Some(remembered) = remembered {
            self.lookups
                .put(generation, &remembered, answer.clone().map(Arc::new));
        }
        Ok(answer)
    }

    /// The grant of one account (`""`: the default one) for a resource at an issuer.
    pub async fn grant_by_key(
        &self,
        resource: &str,
        issuer: &str,
        account_name: &str,
    ) -> Result<Option<GrantRow>, DbError> {
        sqlx::query_as(
            "SELECT * FROM grants WHERE resource = ? AND issuer = ? AND account_name = ?",
        )
        .bind(resource)
        .bind(issuer)
        .bind(account_name)
        .fetch_optional(&self.pool)
        .await
        .map_err(self.err())
    }

    /// Every grant of one account (`""`: the default one) logged in through `server_url`
    /// (one per authorization server it used).
    pub async fn grants_of_server(
        &self,
        server_url: &str,
        account_name: &str,
    ) -> Result<Vec<GrantRow>, DbError> {
        sqlx::query_as(
            "SELECT * FROM grants WHERE server_url = ? AND account_name = ? ORDER BY updated_at DESC",
        )
        .bind(server_url)
        .bind(account_name)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())
    }

    /// The account names with a grant for a server URL or resource (`""`: the default
    /// account), sorted.
    pub async fn accounts_of_server(&self, server: &str) -> Result<Vec<String>, DbError> {
        sqlx::query_scalar(
            "SELECT DISTINCT account_name FROM grants WHERE server_url = ?1 OR resource = ?1
             ORDER BY account_name",
        )
        .bind(server)
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())
    }

    pub async fn list_grants(&self) -> Result<Vec<GrantRow>, DbError> {
        sqlx::query_as("SELECT * FROM grants ORDER BY server_url, created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(self.err())
    }

    pub async fn count_grants(&self) -> Result<i64, DbError> {
        sqlx::query_scalar("SELECT COUNT(*) FROM grants")
            .fetch_one(&self.pool)
            .await
            .map_err(self.err())
    }

    /// Writes a grant after a login (insert, or replace what the last login left).
    pub async fn upsert_grant(&self, g: &GrantRow) -> Result<(), DbError> {
        sqlx::query(
            "INSERT INTO grants (id, server_url, resource, issuer, registration_id, scopes, state, needs_login_reason,
                                 has_refresh_token, access_expires_at, created_at, updated_at, last_used_at, last_refresh_at, account,
                                 account_name, login_hint, grant_type)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET
                server_url = excluded.server_url, registration_id = excluded.registration_id, scopes = excluded.scopes,
                state = excluded.state, needs_login_reason = excluded.needs_login_reason,
                has_refresh_token = excluded.has_refresh_token, access_expires_at = excluded.access_expires_at,
                updated_at = excluded.updated_at, account = excluded.account, login_hint = excluded.login_hint,
                grant_type = excluded.grant_type",
        )
        .bind(&g.id)
        .bind(&g.server_url)
        .bind(&g.resource)
        .bind(&g.issuer)
        .bind(&g.registration_id)
        .bind(&g.scopes)
        .bind(g.state.as_str())
        .bind(&g.needs_login_reason)
        .bind(g.has_refresh_token)
        .bind(g.access_expires_at)
        .bind(g.created_at)
        .bind(g.updated_at)
        .bind(g.last_used_at)
        .bind(g.last_refresh_at)
        .bind(&g.account)
        .bind(&g.account_name)
        .bind(&g.login_hint)
        .bind(g.grant_type.as_str())
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        self.lookups.invalidate();
        Ok(())
    }

    /// Records that a refresh request is about to go out; returns the mark an earlier,
    /// interrupted refresh left, if any.
    pub async fn begin_refresh(&self, id: &str, now: i64) -> Result<Option<i64>, DbError> {
        let earlier: Option<Option<i64>> =
            sqlx::query_scalar("SELECT refresh_started_at FROM grants WHERE id = ?")
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(self.err())?;
        sqlx::query("UPDATE grants SET refresh_started_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        Ok(earlier.flatten())
    }

    /// A refresh (or the renewal of a grant without a browser) succeeded; the grant holds
    /// a refresh token or not as `has_refresh_token` says. `account` replaces the stored
    /// one only when the response named one.
    pub async fn record_refresh(
        &self,
        id: &str,
        expires_at: i64,
        scopes: &str,
        account: Option<&str>,
        has_refresh_token: bool,
        now: i64,
    ) -> Result<(), DbError> {
        sqlx::query(
            "UPDATE grants SET access_expires_at = ?, scopes = ?, has_refresh_token = ?, last_refresh_at = ?, updated_at = ?,
                               state = ?, needs_login_reason = NULL, refresh_started_at = NULL,
                               account = COALESCE(?, account)
             WHERE id = ?",
        )
        .bind(expires_at)
        .bind(scopes)
        .bind(has_refresh_token)
        .bind(now)
        .bind(now)
        .bind(GrantState::Active.as_str())
        .bind(account)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(self.err())?;
        self.lookups.invalidate();
        Ok(())
    }

    pub async fn mark_needs_login(&self, id: &str, reason: &str, now: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE grants SET state = ?, needs_login_reason = ?, access_expires_at = NULL, refresh_started_at = NULL, updated_at = ? WHERE id = ?")
            .bind(GrantState::NeedsLogin.as_str())
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        self.lookups.invalidate();
        Ok(())
    }

    pub async fn touch(&self, id: &str, now: i64) -> Result<(), DbError> {
        sqlx::query("UPDATE grants SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        self.lookups.invalidate();
        Ok(())
    }

    pub async fn delete_grant(&self, id: &str) -> Result<(), DbError> {
        sqlx::query("DELETE FROM grants WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(self.err())?;
        self.lookups.invalidate();
        Ok(())
    }

    /// Records access tokens handed out (never a token), in one transaction, and keeps
    /// the log bounded.
    pub async fn record_hand_outs(&self, batch: &[HandOutRecord]) -> Result<(), DbError> {
        let mut tx = self.pool.begin().await.map_err(self.err())?;
        let mut last = 0;
        for h in batch {
            last = sqlx::query(
                "INSERT INTO token_hand_outs (at, grant_id, server_url, peer_pid, peer_uid, peer_exe, count)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(h.at)
            .bind(&h.grant_id)
            .bind(&h.server)
            .bind(h.peer.pid.map(i64::from))
            .bind(h.peer.uid.map(i64::from))
            .bind(&h.peer.exe)
            .bind(h.count as i64)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?
            .last_insert_rowid();
        }
        sqlx::query("DELETE FROM token_hand_outs WHERE id <= ?")
            .bind(last - MAX_HAND_OUTS)
            .execute(&mut *tx)
            .await
            .map_err(self.err())?;
        tx.commit().await.map_err(self.err())
    }

    /// The newest hand-outs of a grant, newest first.
    pub async fn hand_outs(&self, grant_id: &str, limit: u32) -> Result<Vec<HandOut>, DbError> {
        let rows: Vec<HandOutRow> = sqlx::query_as(
            "SELECT at, count, server_url, peer_pid, peer_uid, peer_exe FROM token_hand_outs
             WHERE grant_id = ? ORDER BY id DESC LIMIT ?",
        )
        .bind(grant_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(self.err())?;
        Ok(rows
            .into_iter()
            .map(|(at, count, server, pid, uid, exe)| HandOut {
                at,
                count: count.max(1) as u64,
                server,
                peer_pid: pid.and_then(|p| u32::try_from(p).ok()),
                peer_uid: uid.and_then(|u| u32::try_from(u).ok()),
                peer_exe: exe,
            })
            .collect())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// The remembered-lookup key of `asked` for a named account: account names hold no NUL,
/// and keys of the default account are the caller's words, never holding one.
fn account_lookup(asked: &str, account: &str) -> String {
    format!("{account}\0{asked}")
}

/// The database file holds no secret, but who uses which server is still nobody else's business.
fn restrict_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for p in [
            path.to_path_buf(),
            path.with_extension("db-wal"),
            path.with_extension("db-shm"),
        ] {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: &str, server: &str) -> GrantRow {
        GrantRow {
            id: id.into(),
            server_url: server.into(),
            resource: server.into(),
            issuer: "https://as.example".into(),
            registration_id: "r_1".into(),
            scopes: "a b".into(),
            state: GrantState::Active,
            needs_login_reason: None,
            has_refresh_token: true,
            access_expires_at: Some(100),
            created_at: 1,
            updated_at: 1,
            last_used_at: None,
            last_refresh_at: None,
            account: Some("jane@example.com".into()),
            account_name: String::new(),
            login_hint: None,
            grant_type: GrantType::AuthorizationCode,
        }
    }

    #[tokio::test]
    async fn grants_round_trip_through_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).await.unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            MIGRATOR.migrations.last().unwrap().version
        );
        db.insert_registration(&RegistrationRow {
            id: "r_1".into(),
            issuer: "https://as.example".into(),
            kind: RegistrationKind::Dynamic,
            client_id: "c".into(),
            redirect_uri: Some("http://127.0.0.1:1/callback".into()),
            token_endpoint_auth_method: "none".into(),
            has_client_secret: false,
            created_at: 1,
        })
        .await
        .unwrap();
        db.upsert_grant(&grant("g_1", "https://h.example/mcp"))
            .await
            .unwrap();
        assert_eq!(
            db.find_grant("https://h.example/mcp")
                .await
                .unwrap()
                .unwrap()
                .id,
            "g_1"
        );
        assert_eq!(
            db.find_grant("g_1").await.unwrap().unwrap().scope_list(),
            vec!["a", "b"]
        );
        db.mark_needs_login("g_1", "refresh token rejected", 5)
            .await
            .unwrap();
        let g = db.find_grant("g_1").await.unwrap().unwrap();
        assert_eq!(g.state, GrantState::NeedsLogin);
        db.record_refresh("g_1", 200, "a", None, true, 6)
            .await
            .unwrap();
        let g = db.find_grant("g_1").await.unwrap().unwrap();
        assert_eq!(
            (&g.state, g.access_expires_at, g.scopes.as_str()),
            (&GrantState::Active, Some(200), "a")
        );
        assert_eq!(
            g.account.as_deref(),
            Some("jane@example.com"),
            "a refresh without an id_token keeps the account"
        );
        db.record_refresh("g_1", 201, "a", Some("jane2"), true, 7)
            .await
            .unwrap();
        let g = db.find_grant("g_1").await.unwrap().unwrap();
        assert_eq!(g.account.as_deref(), Some("jane2"));
        db.close().await;
        // Reopening keeps everything and does not re-run migrations.
        let db = Db::open(&dir.path().join("state.db")).await.unwrap();
        assert_eq!(db.count_grants().await.unwrap(), 1);
        db.delete_grant("g_1").await.unwrap();
        assert!(db.find_grant("g_1").await.unwrap().is_none());
    }

    fn registration(id: &str, kind: RegistrationKind) -> RegistrationRow {
        RegistrationRow {
            id: id.into(),
            issuer: "https://as.example".into(),
            kind,
            client_id: "https://app.example/client.json".into(),
            redirect_uri: None,
            token_endpoint_auth_method: "none".into(),
            has_client_secret: false,
            created_at: 1,
        }
    }

    /// A database made by the first release, with a grant in it, upgraded in place: the
    /// rebuilt registrations table keeps the grant and accepts the new kind.
    #[tokio::test]
    async fn upgrading_a_first_release_database_keeps_its_grants() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                .unwrap()
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            let mut first = sqlx::migrate!("./migrations");
            first.migrations = first.migrations[..1].to_vec().into();
            first.run(&pool).await.unwrap();
            let old = Db {
                pool: pool.clone(),
                path: path.display().to_string(),
                lookups: Arc::default(),
            };
            old.insert_registration(&registration("r_1", RegistrationKind::Dynamic))
                .await
                .unwrap();
            // The first release's own columns (today's upsert names later ones).
            sqlx::query(
                "INSERT INTO grants (id, server_url, resource, issuer, registration_id, scopes, state,
                                     has_refresh_token, created_at, updated_at)
                 VALUES ('g_1', 'https://h.example/mcp', 'https://h.example/mcp', 'https://as.example',
                         'r_1', 'a b', 'active', 1, 1, 1)",
            )
            .execute(&pool)
            .await
            .unwrap();
            assert!(
                old.insert_registration(&registration("r_2", RegistrationKind::MetadataDocument))
                    .await
                    .is_err(),
                "the first schema must refuse the new kind, or this test proves nothing"
            );
            pool.close().await;
        }
        let db = Db::open(&path).await.unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            MIGRATOR.migrations.last().unwrap().version
        );
        let g = db.find_grant("g_1").await.unwrap().unwrap();
        assert_eq!(
            (g.registration_id.as_str(), g.scopes.as_str()),
            ("r_1", "a b")
        );
        assert_eq!(g.account, None, "an upgraded grant names no account");
        assert_eq!(
            db.registration("r_1").await.unwrap().unwrap().kind,
            RegistrationKind::Dynamic
        );
        db.insert_registration(&registration("r_2", RegistrationKind::MetadataDocument))
            .await
            .unwrap();
        // Foreign keys are enforced again after the rebuild.
        let mut orphan = grant("g_2", "https://other.example/mcp");
        orphan.registration_id = "r_missing".into();
        assert!(db.upsert_grant(&orphan).await.is_err());
    }

    /// A database at schema 7 (one grant per resource and issuer), with a grant and a
    /// `confirm_clients` decision, upgraded: the grant is the default account's, keeps
    /// its decision, and other accounts of the same server can join it.
    #[tokio::test]
    async fn upgrading_to_accounts_keeps_grants_in_the_default_account() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
                .unwrap()
                .create_if_missing(true)
                .foreign_keys(true);
            let pool = SqlitePool::connect_with(options).await.unwrap();
            let mut seven = sqlx::migrate!("./migrations");
            seven.migrations = seven
                .migrations
                .iter()
                .filter(|m| m.version <= 7)
                .cloned()
                .collect::<Vec<_>>()
                .into();
            seven.run(&pool).await.unwrap();
            sqlx::raw_sql(
                "INSERT INTO registrations (id, issuer, kind, client_id, token_endpoint_auth_method, has_client_secret, created_at)
                     VALUES ('r_1', 'https://as.example', 'dynamic', 'c', 'none', 0, 1);
                 INSERT INTO grants (id, server_url, resource, issuer, registration_id, scopes, state,
                                     has_refresh_token, created_at, updated_at, account, refresh_started_at)
                     VALUES ('g_1', 'https://h.example/mcp', 'https://h.example/mcp', 'https://as.example',
                             'r_1', 'a b', 'active', 1, 1, 1, 'jane@example.com', 5);
                 INSERT INTO client_decisions (grant_id, program, decision, decided_at)
                     VALUES ('g_1', '/usr/bin/client', 'always', 2);",
            )
            .execute(&pool)
            .await
            .unwrap();
            pool.close().await;
        }
        let db = Db::open(&path).await.unwrap();
        assert_eq!(
            db.schema_version().await.unwrap(),
            Db::expected_schema_version()
        );
        let g = db
            .find_grant("https://h.example/mcp")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (g.id.as_str(), g.account_name.as_str(), g.account.as_deref()),
            ("g_1", "", Some("jane@example.com"))
        );
        assert_eq!(g.scopes, "a b");
        // 0009 runs after 0008's rebuild: the kept grant is a browser login's.
        assert_eq!(g.grant_type, GrantType::AuthorizationCode);
        let interrupted: Option<i64> =
            sqlx::query_scalar("SELECT refresh_started_at FROM grants WHERE id = 'g_1'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!(interrupted, Some(5), "every column is carried over");
        let decisions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM client_decisions")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(decisions, 1);

        // Another account of the same resource and issuer: a grant of its own.
        let mut work = grant("g_2", "https://h.example/mcp");
        work.account_name = "work".into();
        db.upsert_grant(&work).await.unwrap();
        assert_eq!(
            db.find_grant_as(
                "https://h.example/mcp",
                "https://h.example/mcp",
                Some("work")
            )
            .await
            .unwrap()
            .unwrap()
            .id,
            "g_2"
        );
        assert_eq!(
            db.find_grant("https://h.example/mcp")
                .await
                .unwrap()
                .unwrap()
                .id,
            "g_1"
        );
        assert_eq!(
            db.accounts_of_server("https://h.example/mcp")
                .await
                .unwrap(),
            ["", "work"]
        );
        // Still one grant per account: a second default one is refused.
        assert!(
            db.upsert_grant(&grant("g_3", "https://h.example/mcp"))
                .await
                .is_err()
        );
        // The grant id lookup checks the account when one is given.
        assert!(
            db.find_grant_as("g_1", "g_1", Some("work"))
                .await
                .unwrap()
                .is_none()
        );
        // Foreign keys still cascade after the rebuild.
        db.delete_grant("g_1").await.unwrap();
        let decisions: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM client_decisions")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(decisions, 0);
        let mut orphan = grant("g_4", "https://other.example/mcp");
        orphan.registration_id = "r_missing".into();
        assert!(db.upsert_grant(&orphan).await.is_err());
    }

    /// States and kinds are stored as the very words the schema's CHECKs (and every older
    /// database) hold: rows written by hand with those words read back as the enums, and
    /// rows written from the enums hold the words.
    #[tokio::test]
    async fn states_and_kinds_are_stored_as_the_same_words() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).await.unwrap();
        let stored = |sql: &'static str, id: String| {
            let pool = db.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(sql)
                    .bind(id)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        let kinds = [
            (RegistrationKind::Dynamic, "dynamic"),
            (RegistrationKind::PreRegistered, "pre-registered"),
            (RegistrationKind::MetadataDocument, "metadata-document"),
        ];
        for (i, (kind, word)) in kinds.into_iter().enumerate() {
            let id = format!("r_{i}");
            db.insert_registration(&registration(&id, kind.clone()))
                .await
                .unwrap();
            let sql = "SELECT kind FROM registrations WHERE id = ?";
            assert_eq!(stored(sql, id.clone()).await, word);
            let found = db
                .find_registration("https://as.example", &kind, None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!((found.id, found.kind), (id, kind));
        }
        let state = |id: &str| stored("SELECT state FROM grants WHERE id = ?", id.to_string());
        let mut g = grant("g_1", "https://h.example/mcp");
        g.registration_id = "r_0".into();
        db.upsert_grant(&g).await.unwrap();
        assert_eq!(state("g_1").await, "active");
        db.mark_needs_login("g_1", "why", 2).await.unwrap();
        assert_eq!(state("g_1").await, "needs_login");
        db.record_refresh("g_1", 9, "a", None, true, 3)
            .await
            .unwrap();
        assert_eq!(state("g_1").await, "active");
        g.state = GrantState::NeedsLogin;
        g.grant_type = GrantType::JwtBearer;
        db.upsert_grant(&g).await.unwrap();
        assert_eq!(state("g_1").await, "needs_login");
        let sql = "SELECT grant_type FROM grants WHERE id = ?";
        assert_eq!(stored(sql, "g_1".into()).await, "jwt_bearer");

        // As an older daemon wrote them.
        sqlx::raw_sql(
            "INSERT INTO registrations (id, issuer, kind, client_id, token_endpoint_auth_method, has_client_secret, created_at)
                 VALUES ('r_old', 'https://old.example', 'pre-registered', 'c', 'none', 0, 1);
             INSERT INTO grants (id, server_url, resource, issuer, registration_id, scopes, state,
                                 has_refresh_token, created_at, updated_at)
                 VALUES ('g_old', 'https://old.example/mcp', 'https://old.example/mcp',
                         'https://old.example', 'r_old', 'a', 'needs_login', 0, 1, 1),
                        ('g_old2', 'https://old2.example/mcp', 'https://old2.example/mcp',
                         'https://old.example', 'r_old', 'a', 'active', 0, 1, 1);
             UPDATE grants SET grant_type = 'enterprise' WHERE id = 'g_old2';",
        )
        .execute(&db.pool)
        .await
        .unwrap();
        let old = db.find_grant("g_old").await.unwrap().unwrap();
        assert_eq!(old.state, GrantState::NeedsLogin);
        assert_eq!(old.grant_type, GrantType::AuthorizationCode);
        let old2 = db.find_grant("g_old2").await.unwrap().unwrap();
        assert_eq!(
            (old2.state, old2.grant_type),
            (GrantState::Active, GrantType::Enterprise)
        );
        let reg = db.registration("r_old").await.unwrap().unwrap();
        assert_eq!(reg.kind, RegistrationKind::PreRegistered);
        // A word the schema does not allow is refused there, not stored as `Other`.
        let mut odd = grant("g_odd", "https://odd.example/mcp");
        odd.state = GrantState::from("suspended");
        assert!(db.upsert_grant(&odd).await.is_err());
    }

    #[tokio::test]
    async fn remembered_lookups_follow_every_write() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).await.unwrap();
        let key = "https://h.example/mcp";
        assert!(db.find_grant(key).await.unwrap().is_none());
        db.insert_registration(&registration("r_1", RegistrationKind::Dynamic))
            .await
            .unwrap();
        db.upsert_grant(&grant("g_1", key)).await.unwrap();
        assert_eq!(
            db.find_grant(key).await.unwrap().unwrap().id,
            "g_1",
            "not the remembered None"
        );
        db.mark_needs_login("g_1", "why", 2).await.unwrap();
        assert_eq!(
            db.find_grant(key).await.unwrap().unwrap().state,
            GrantState::NeedsLogin
        );
        db.record_refresh("g_1", 9, "a", None, true, 3)
            .await
            .unwrap();
        assert_eq!(
            db.find_grant(key).await.unwrap().unwrap().access_expires_at,
            Some(9)
        );
        db.delete_grant("g_1").await.unwrap();
        assert!(db.find_grant(key).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn remembered_lookups_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).await.unwrap();
        db.insert_registration(&registration("r_1", RegistrationKind::Dynamic))
            .await
            .unwrap();
        let key = "https://h.example/mcp";
        db.upsert_grant(&grant("g_1", key)).await.unwrap();
        // A client asking under ever new spellings (each one a lookup of its own).
        for i in 0..3 * MAX_REMEMBERED_LOOKUPS {
            let asked = format!("{key}?spelling={i}");
            assert!(
                db.find_grant_as(&asked, &asked, None)
                    .await
                    .unwrap()
                    .is_none()
            );
            let remembered = db.lookups.answers.lock().unwrap().1.len();
            assert!(remembered <= MAX_REMEMBERED_LOOKUPS, "{remembered}");
        }
        assert_eq!(db.find_grant(key).await.unwrap().unwrap().id, "g_1");
        assert!(
            db.remembered_grant(key, None).is_some(),
            "still remembered after the flood"
        );
    }

    #[tokio::test]
    async fn hand_outs_are_logged_newest_first_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.db")).await.unwrap();
        let peer = Peer {
            pid: Some(42),
            uid: Some(1000),
            exe: Some("/usr/bin/client".into()),
            ..Peer::default()
        };
        // An old log, written in one statement, then one more hand-out prunes it.
        let total = MAX_HAND_OUTS + 200;
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
             INSERT INTO token_hand_outs (at, grant_id, server_url) SELECT i, 'g_1', 'x' FROM n",
        )
        .bind(total - 1)
        .execute(&db.pool)
        .await
        .unwrap();
        db.record_hand_outs(&[HandOutRecord {
            at: total,
            count: 1,
            grant_id: "g_1".into(),
            server: "https://h.example/mcp".into(),
            peer: Arc::new(peer),
        }])
        .await
        .unwrap();
        let newest = db.hand_outs("g_1", 2).await.unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0].at, total);
        assert_eq!(newest[1].peer_exe, None);
        assert_eq!(newest[0].peer_exe.as_deref(), Some("/usr/bin/client"));
        assert_eq!(
            (newest[0].peer_pid, newest[0].peer_uid),
            (Some(42), Some(1000))
        );
        let kept: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM token_hand_outs")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(kept, MAX_HAND_OUTS);
    }
}
