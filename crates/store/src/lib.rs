//! Gatehouse's mutable state, kept in SQLite (`state.db` in the data directory): managed API
//! keys, reviews of held statements and access requests, and the grants approvals gave
//! (the sessions index later).
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
const SCHEMA_VERSION: i64 = 3;

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
        if found < 3 {
            // Version 3: reviews and grants, so a restart neither forgets a pending review
            // nor ends a grant early. The ledger stays the record of each step; these rows
            // are what a restarted gateway decides from.
            let mut tx = pool.begin().await.map_err(open_err)?;
            for ddl in [
                "CREATE TABLE IF NOT EXISTS reviews (
                    id TEXT PRIMARY KEY,
                    resource TEXT NOT NULL,
                    requester TEXT NOT NULL,
                    session TEXT NOT NULL,
                    access_ms INTEGER,
                    statement TEXT NOT NULL,
                    rule TEXT,
                    holders TEXT NOT NULL,
                    reason TEXT NOT NULL,
                    approvers TEXT NOT NULL,
                    required INTEGER NOT NULL,
                    approvals TEXT NOT NULL,
                    denial TEXT,
                    state TEXT NOT NULL,
                    grant_until INTEGER,
                    requested_at INTEGER NOT NULL,
                    expires_at INTEGER NOT NULL,
                    request_index INTEGER NOT NULL,
                    request_leaf TEXT NOT NULL,
                    updated_at INTEGER NOT NULL
                )",
                "CREATE INDEX IF NOT EXISTS reviews_state ON reviews (state, requested_at)",
                "CREATE TABLE IF NOT EXISTS grants (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    resource TEXT NOT NULL,
                    requester TEXT NOT NULL,
                    rule TEXT,
                    access INTEGER NOT NULL,
                    until INTEGER NOT NULL,
                    review TEXT NOT NULL,
                    request_index INTEGER NOT NULL,
                    request_leaf TEXT NOT NULL
                )",
                "CREATE INDEX IF NOT EXISTS grants_until ON grants (until)",
                "PRAGMA user_version = 3",
            ] {
                sqlx::query(ddl).execute(&mut *tx).await.map_err(open_err)?;
            }
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

    /// Writes `review` as it now stands (replacing what was stored under its id) and adds
    /// `grants`, in one transaction: an approval and the grants it gives are stored
    /// together or not at all.
    pub async fn save_review(
        &self,
        review: &StoredReview,
        grants: &[StoredGrant],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT OR REPLACE INTO reviews (id, resource, requester, session, access_ms, statement,
                rule, holders, reason, approvers, required, approvals, denial, state, grant_until,
                requested_at, expires_at, request_index, request_leaf, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&review.id)
        .bind(&review.resource)
        .bind(&review.requester)
        .bind(&review.session)
        .bind(review.access_ms)
        .bind(&review.statement)
        .bind(&review.rule)
        .bind(list_text(&review.holders)?)
        .bind(&review.reason)
        .bind(list_text(&review.approvers)?)
        .bind(review.required)
        .bind(review.approvals.to_string())
        .bind(review.denial.as_ref().map(|d| d.to_string()))
        .bind(&review.state)
        .bind(review.grant_until)
        .bind(review.requested_at)
        .bind(review.expires_at)
        .bind(review.request_index)
        .bind(&review.request_leaf)
        .bind(review.updated_at)
        .execute(&mut *tx)
        .await?;
        for grant in grants {
            sqlx::query(
                "INSERT INTO grants (resource, requester, rule, access, until, review, request_index, request_leaf)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            )
            .bind(&grant.resource)
            .bind(&grant.requester)
            .bind(&grant.rule)
            .bind(grant.access)
            .bind(grant.until)
            .bind(&grant.review)
            .bind(grant.request_index)
            .bind(&grant.request_leaf)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The reviews a gateway starts with: every pending one, and those requested at or
    /// after `since` (unix ms) whatever their state; oldest first.
    pub async fn reviews(&self, since: i64) -> Result<Vec<StoredReview>, StoreError> {
        let rows = sqlx::query(
            "SELECT * FROM reviews WHERE state = 'pending' OR requested_at >= ?
             ORDER BY requested_at, id",
        )
        .bind(since)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(review_from_row).collect()
    }

    /// Grants still in force at `now` (unix ms), oldest first.
    pub async fn grants(&self, now: i64) -> Result<Vec<StoredGrant>, StoreError> {
        let rows = sqlx::query("SELECT * FROM grants WHERE until > ? ORDER BY seq")
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(StoredGrant {
                    resource: r.try_get("resource")?,
                    requester: r.try_get("requester")?,
                    rule: r.try_get("rule")?,
                    access: r.try_get("access")?,
                    until: r.try_get("until")?,
                    review: r.try_get("review")?,
                    request_index: r.try_get("request_index")?,
                    request_leaf: r.try_get("request_leaf")?,
                })
            })
            .collect()
    }

    /// Forgets decided reviews requested before `before` and grants that ran out by `now`
    /// (unix ms); returns how many rows went. The ledger keeps their history; the store
    /// only needs what can still change or still counts.
    pub async fn prune_reviews(&self, before: i64, now: i64) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let reviews =
            sqlx::query("DELETE FROM reviews WHERE state != 'pending' AND requested_at < ?")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let grants = sqlx::query("DELETE FROM grants WHERE until <= ?")
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(reviews + grants)
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A review as stored. The store keeps it in the approvals crate's terms without knowing
/// its rules: states are their names, verdicts the JSON the approvals crate gives, times
/// unix milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReview {
    pub id: String,
    pub resource: String,
    pub requester: String,
    /// The session that held the statement; empty for an access request.
    pub session: String,
    /// An access request: for how long.
    pub access_ms: Option<i64>,
    /// The statement as the client sent it (or what access was asked for).
    pub statement: String,
    pub rule: Option<String>,
    pub holders: Vec<String>,
    pub reason: String,
    pub approvers: Vec<String>,
    pub required: i64,
    /// Each approval (who, when, reason, grant), a JSON array.
    pub approvals: serde_json::Value,
    /// The denial, if any: who, when, why.
    pub denial: Option<serde_json::Value>,
    /// `pending`, `approved`, `denied`, `expired`, `cancelled` or `executed`.
    pub state: String,
    pub grant_until: Option<i64>,
    pub requested_at: i64,
    pub expires_at: i64,
    /// The `approval.request` entry: index and leaf hash (hex).
    pub request_index: i64,
    pub request_leaf: String,
    /// When this row was last written.
    pub updated_at: i64,
}

/// A grant as stored: statements `rule` holds (or, with `access`, connecting) from
/// `requester` on `resource` need no review until `until` (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredGrant {
    pub resource: String,
    pub requester: String,
    pub rule: Option<String>,
    pub access: bool,
    pub until: i64,
    /// The review that granted it, and its request entry.
    pub review: String,
    pub request_index: i64,
    pub request_leaf: String,
}

/// A list of names as the TEXT column holds it: a JSON array.
fn list_text(names: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(names).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn review_from_row(row: &sqlx::sqlite::SqliteRow) -> Result<StoredReview, StoreError> {
    let list = |column: &str| -> Result<Vec<String>, StoreError> {
        let text: String = row.try_get(column)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("review {column} {text:?}: {e}")))
    };
    let value = |text: String| -> Result<serde_json::Value, StoreError> {
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("review verdicts {text:?}: {e}")))
    };
    let denial: Option<String> = row.try_get("denial")?;
    Ok(StoredReview {
        id: row.try_get("id")?,
        resource: row.try_get("resource")?,
        requester: row.try_get("requester")?,
        session: row.try_get("session")?,
        access_ms: row.try_get("access_ms")?,
        statement: row.try_get("statement")?,
        rule: row.try_get("rule")?,
        holders: list("holders")?,
        reason: row.try_get("reason")?,
        approvers: list("approvers")?,
        required: row.try_get("required")?,
        approvals: value(row.try_get("approvals")?)?,
        denial: denial.map(value).transpose()?,
        state: row.try_get("state")?,
        grant_until: row.try_get("grant_until")?,
        requested_at: row.try_get("requested_at")?,
        expires_at: row.try_get("expires_at")?,
        request_index: row.try_get("request_index")?,
        request_leaf: row.try_get("request_leaf")?,
        updated_at: row.try_get("updated_at")?,
    })
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

    fn review(id: &str, state: &str, requested_at: i64) -> StoredReview {
        StoredReview {
            id: id.into(),
            resource: "pg".into(),
            requester: "alice".into(),
            session: "s-1".into(),
            access_ms: None,
            statement: "DROP TABLE t".into(),
            rule: Some("drops".into()),
            holders: vec!["drops".into(), "payroll".into()],
            reason: "dropping needs an approval".into(),
            approvers: vec!["dba".into()],
            required: 1,
            approvals: serde_json::json!([]),
            denial: None,
            state: state.into(),
            grant_until: None,
            requested_at,
            expires_at: requested_at + 600_000,
            request_index: 7,
            request_leaf: "ab".into(),
            updated_at: requested_at,
        }
    }

    #[tokio::test]
    async fn reviews_and_grants_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).await.unwrap();
        let pending = review("r-1", "pending", 1_000);
        store.save_review(&pending, &[]).await.unwrap();
        store
            .save_review(&review("r-old", "denied", 10), &[])
            .await
            .unwrap();
        // An approval for a duration: the review and its grant are written together.
        let mut approved = pending.clone();
        approved.state = "approved".into();
        approved.approvals = serde_json::json!([{"by": "bob", "at": 2_000, "reason": null}]);
        approved.grant_until = Some(9_000);
        approved.updated_at = 2_000;
        let grant = StoredGrant {
            resource: "pg".into(),
            requester: "alice".into(),
            rule: Some("drops".into()),
            access: false,
            until: 9_000,
            review: "r-1".into(),
            request_index: 7,
            request_leaf: "ab".into(),
        };
        store
            .save_review(&approved, std::slice::from_ref(&grant))
            .await
            .unwrap();
        store
            .save_review(&review("r-2", "pending", 3), &[])
            .await
            .unwrap();
        store.close().await;

        let store = Store::open_in(dir.path()).await.unwrap();
        // Pending ones whatever their age; decided ones only from `since`.
        let ids = |all: Vec<StoredReview>| all.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(ids(store.reviews(500).await.unwrap()), ["r-2", "r-1"]);
        assert_eq!(
            ids(store.reviews(0).await.unwrap()),
            ["r-2", "r-old", "r-1"]
        );
        let stored = store.reviews(500).await.unwrap().pop().unwrap();
        assert_eq!(stored, approved);
        assert_eq!(store.grants(8_999).await.unwrap(), vec![grant]);
        assert!(store.grants(9_000).await.unwrap().is_empty());

        // Pruning keeps pending reviews and grants in force.
        assert_eq!(store.prune_reviews(500, 5_000).await.unwrap(), 1);
        assert_eq!(ids(store.reviews(0).await.unwrap()), ["r-2", "r-1"]);
        assert_eq!(store.prune_reviews(500, 9_000).await.unwrap(), 1);
        assert!(store.grants(0).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_version_2_store_is_upgraded_with_its_keys() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_in(dir.path()).await.unwrap();
        store.insert_key(&key("a", 10), "ops").await.unwrap();
        // As a version 2 gateway left it.
        for ddl in [
            "DROP TABLE reviews",
            "DROP TABLE grants",
            "PRAGMA user_version = 2",
        ] {
            sqlx::query(ddl).execute(&store.pool).await.unwrap();
        }
        store.close().await;
        let store = Store::open_in(dir.path()).await.unwrap();
        let version: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&store.pool)
            .await
            .unwrap();
        assert_eq!(version, 3);
        assert_eq!(store.keys().await.unwrap(), vec![key("a", 10)]);
        store
            .save_review(&review("r-1", "pending", 1), &[])
            .await
            .unwrap();
        assert_eq!(store.reviews(0).await.unwrap().len(), 1);
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
