//! Gatehouse's mutable state, kept in SQLite (`state.db` in the data directory): managed API
//! keys today; approvals, grants and the sessions index later.
//!
//! The ledger is the record of what happened; the store is what the gateway consults to
//! decide (is this key valid now?). The gateway and the CLI open the same file at once, so
//! the database runs in WAL mode with a busy timeout: a `keys revoke` from the CLI takes
//! effect for the next sign-in without a restart.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use gatehouse_config::IdentityKind;
use serde::Serialize;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

/// The store's file name inside the data directory.
pub const STATE_FILE: &str = "state.db";

/// The schema this build writes; older files are upgraded on open, newer ones refused.
const SCHEMA_VERSION: i64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("state store: {0}")]
    Query(#[from] sqlx::Error),
    #[error(
        "state store {path}: schema version {found} is newer than this gateway's ({SCHEMA_VERSION}); upgrade the gateway"
    )]
    TooNew { path: String, found: i64 },
    #[error("no API key with id {0}")]
    NoSuchKey(String),
    #[error("API key {id} was already revoked (at {at}, unix time)")]
    AlreadyRevoked { id: String, at: i64 },
    #[error("state store: a stored row is unreadable: {0}")]
    Corrupt(String),
}

/// A managed API key as stored: everything but the key itself, of which only a hash is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ManagedKey {
    /// Public id, also the middle part of the key text; recorded in the ledger.
    pub id: String,
    /// The identity the key signs in as (the user name clients give).
    pub name: String,
    pub kind: IdentityKind,
    pub groups: Vec<String>,
    /// `sha256:<hex>` of the whole key text.
    #[serde(skip)]
    pub key_hash: String,
    /// Unix seconds.
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub revoked_reason: Option<String>,
}

/// A change to a managed key, waiting in the store until the gateway has appended it to the
/// ledger (an outbox: the CLI cannot write to a ledger a running gateway holds, and a
/// change made while no gateway runs is recorded by the next one).
#[derive(Debug, Clone, PartialEq)]
pub struct KeyEvent {
    /// Order of the changes; also lets an auditor spot a change recorded twice (after a
    /// crash between the ledger append and the mark).
    pub seq: i64,
    /// Unix seconds.
    pub at: i64,
    /// `key.created` or `key.revoked`.
    pub kind: String,
    pub key_id: String,
    pub detail: serde_json::Value,
}

async fn add_event(
    tx: &mut sqlx::SqliteConnection,
    at: i64,
    kind: &str,
    key_id: &str,
    detail: &serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO key_events (at, kind, key_id, detail) VALUES (?, ?, ?, ?)")
        .bind(at)
        .bind(kind)
        .bind(key_id)
        .bind(detail.to_string())
        .execute(tx)
        .await?;
    Ok(())
}

/// A handle on the state database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

impl Store {
    /// Opens (creating if missing) the store in `data_dir`.
    pub async fn open_in(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open(&data_dir.join(STATE_FILE)).await
    }

    /// Opens (creating if missing) the store at `path` and brings its schema up to date.
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        let shown = path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: shown.clone(),
            source,
        };
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // The CLI and the gateway write the same file; wait for the other's lock rather
            // than fail a sign-in.
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&pool)
            .await
            .map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::TooNew { path: shown, found });
        }
        if found < 1 {
            let mut tx = pool.begin().await.map_err(open_err)?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS api_keys (
                    id TEXT PRIMARY KEY,
                    name TEXT NOT NULL,
                    kind TEXT NOT NULL,
                    groups TEXT NOT NULL,
                    key_hash TEXT NOT NULL,
                    created_at INTEGER NOT NULL,
                    expires_at INTEGER,
                    revoked_at INTEGER,
                    revoked_reason TEXT
                )",
            )
            .execute(&mut *tx)
            .await
            .map_err(open_err)?;
            sqlx::query("PRAGMA user_version = 1")
                .execute(&mut *tx)
                .await
                .map_err(open_err)?;
            tx.commit().await.map_err(open_err)?;
        }
        if found < 2 {
            // Version 2: an outbox of key changes for the gateway to put in the ledger.
            let mut tx = pool.begin().await.map_err(open_err)?;
            sqlx::query(
                "CREATE TABLE IF NOT EXISTS key_events (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    at INTEGER NOT NULL,
                    kind TEXT NOT NULL,
                    key_id TEXT NOT NULL,
                    detail TEXT NOT NULL,
                    recorded INTEGER NOT NULL DEFAULT 0
                )",
            )
            .execute(&mut *tx)
            .await
            .map_err(open_err)?;
            sqlx::query("PRAGMA user_version = 2")
                .execute(&mut *tx)
                .await
                .map_err(open_err)?;
            tx.commit().await.map_err(open_err)?;
        }
        Ok(Store { pool })
    }

    /// Stores a new key, and a `key.created` event for the ledger. `by` says who made it.
    pub async fn insert_key(&self, key: &ManagedKey, by: &str) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO api_keys (id, name, kind, groups, key_hash, created_at, expires_at, revoked_at, revoked_reason)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(key.kind.as_str())
        .bind(serde_json::to_string(&key.groups).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        .bind(&key.key_hash)
        .bind(key.created_at)
        .bind(key.expires_at)
        .bind(key.revoked_at)
        .bind(&key.revoked_reason)
        .execute(&mut *tx)
        .await?;
        let detail = serde_json::json!({
            "name": key.name,
            "kind": key.kind.as_str(),
            "groups": key.groups,
            "expires_at": key.expires_at,
            "by": by,
        });
        add_event(&mut tx, key.created_at, "key.created", &key.id, &detail).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The key with `id`, if any.
    pub async fn key(&self, id: &str) -> Result<Option<ManagedKey>, StoreError> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| from_row(&r)).transpose()
    }

    /// Every key, oldest first.
    pub async fn keys(&self) -> Result<Vec<ManagedKey>, StoreError> {
        let rows = sqlx::query("SELECT * FROM api_keys ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(from_row).collect()
    }

    /// Revokes key `id` at `now` (unix seconds), with a `key.revoked` event for the ledger;
    /// returns the key as it is now stored.
    pub async fn revoke_key(
        &self,
        id: &str,
        reason: Option<&str>,
        now: i64,
        by: &str,
    ) -> Result<ManagedKey, StoreError> {
        let Some(key) = self.key(id).await? else {
            return Err(StoreError::NoSuchKey(id.to_string()));
        };
        if let Some(at) = key.revoked_at {
            return Err(StoreError::AlreadyRevoked {
                id: id.to_string(),
                at,
            });
        }
        let mut tx = self.pool.begin().await?;
        let changed = sqlx::query(
            "UPDATE api_keys SET revoked_at = ?, revoked_reason = ? WHERE id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(reason)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if changed == 1 {
            let detail = serde_json::json!({"name": key.name, "reason": reason, "by": by});
            add_event(&mut tx, now, "key.revoked", id, &detail).await?;
        }
        tx.commit().await?;
        self.key(id)
            .await?
            .ok_or_else(|| StoreError::NoSuchKey(id.to_string()))
    }

    /// Key changes not yet in the ledger, oldest first.
    pub async fn pending_key_events(&self) -> Result<Vec<KeyEvent>, StoreError> {
        let rows = sqlx::query("SELECT * FROM key_events WHERE recorded = 0 ORDER BY seq")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let detail: String = r.try_get("detail")?;
                Ok(KeyEvent {
                    seq: r.try_get("seq")?,
                    at: r.try_get("at")?,
                    kind: r.try_get("kind")?,
                    key_id: r.try_get("key_id")?,
                    detail: serde_json::from_str(&detail)
                        .map_err(|e| StoreError::Corrupt(format!("key event detail: {e}")))?,
                })
            })
            .collect()
    }

    /// Marks a key change as recorded in the ledger.
    pub async fn mark_key_event_recorded(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE key_events SET recorded = 1 WHERE seq = ?")
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

fn from_row(row: &sqlx::sqlite::SqliteRow) -> Result<ManagedKey, StoreError> {
    let kind: String = row.try_get("kind")?;
    let groups: String = row.try_get("groups")?;
    Ok(ManagedKey {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        kind: IdentityKind::from_str(&kind).map_err(StoreError::Corrupt)?,
        groups: serde_json::from_str(&groups)
            .map_err(|e| StoreError::Corrupt(format!("groups {groups:?}: {e}")))?,
        key_hash: row.try_get("key_hash")?,
        created_at: row.try_get("created_at")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        revoked_reason: row.try_get("revoked_reason")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, created_at: i64) -> ManagedKey {
        ManagedKey {
            id: id.into(),
            name: "agent:reporting".into(),
            kind: IdentityKind::Agent,
            groups: vec!["analysts".into()],
            key_hash: format!("sha256:{id}"),
            created_at,
            expires_at: Some(created_at + 3600),
            revoked_at: None,
            revoked_reason: None,
        }
    }

    #[tokio::test]
    async fn keys_round_trip_and_revoke_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).await.unwrap();
        store.insert_key(&key("b", 20), "ops").await.unwrap();
        store.insert_key(&key("a", 10), "ops").await.unwrap();
        let all = store.keys().await.unwrap();
        assert_eq!(all, vec![key("a", 10), key("b", 20)]);
        assert_eq!(store.key("zz").await.unwrap(), None);

        let revoked = store
            .revoke_key("a", Some("left"), 99, "ops")
            .await
            .unwrap();
        assert_eq!(revoked.revoked_at, Some(99));
        assert_eq!(revoked.revoked_reason.as_deref(), Some("left"));
        let again = store.revoke_key("a", None, 100, "ops").await.unwrap_err();
        assert!(again.to_string().contains("already revoked"), "{again}");
        let missing = store.revoke_key("zz", None, 100, "ops").await.unwrap_err();
        assert_eq!(missing.to_string(), "no API key with id zz");

        // Every change waits in the outbox, in order, until marked recorded.
        let events = store.pending_key_events().await.unwrap();
        let summary: Vec<(&str, &str)> = events
            .iter()
            .map(|e| (e.kind.as_str(), e.key_id.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("key.created", "b"),
                ("key.created", "a"),
                ("key.revoked", "a")
            ]
        );
        assert_eq!(events[2].detail["reason"], "left");
        assert_eq!(events[0].detail["by"], "ops");
        assert!(events[0].detail.get("key_hash").is_none());
        store.mark_key_event_recorded(events[0].seq).await.unwrap();
        assert_eq!(store.pending_key_events().await.unwrap().len(), 2);
        store.close().await;

        // A second handle on the same file sees it all.
        let reopened = Store::open_in(dir.path()).await.unwrap();
        assert_eq!(
            reopened.key("a").await.unwrap().unwrap().revoked_at,
            Some(99)
        );
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).await.unwrap();
        sqlx::query("PRAGMA user_version = 7")
            .execute(&store.pool)
            .await
            .unwrap();
        store.close().await;
        let err = Store::open_in(dir.path()).await.unwrap_err().to_string();
        assert!(err.contains("schema version 7 is newer"), "{err}");
    }
}
