//! The SQLite database: the only module that writes SQL.
//!
//! Owns the connection pool (WAL mode, foreign keys, busy timeout), the schema migrations in
//! `migrations/` (applied at start; a database from a newer wharf is refused, never downgraded),
//! and one typed function per query. Callers get [`DbError`]s, never `sqlx` types.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::migrate::{MigrateError, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use utoipa::ToSchema;

pub mod audit;
pub mod auth;
pub mod build;
pub mod containers;
pub mod images;
pub mod networks;
pub mod registry;

pub use audit::{AuditEntry, AuditFilter, AuditRecord, Outcome};
pub use auth::{AccountKind, ApiToken, Credentials, NewToken, RepositoryGrant, Session, User};
pub use containers::ContainerRow;
pub use images::{ImageSummary, LayerRecord, NewImage};
pub use registry::{
    NewRepoManifest, RefKind, Referrer, RepoManifest, RepositorySummary, TagDetail,
};

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// A handle on the daemon's database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    path: PathBuf,
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open database {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: sqlx::Error,
    },
    #[error("database {} was migrated by a newer wharf (it has migration {version}, which this wharf {} does not know); refusing to start", path.display(), crate::VERSION)]
    NewerSchema { path: PathBuf, version: i64 },
    #[error("cannot migrate database {}: {source}", path.display())]
    Migrate {
        path: PathBuf,
        #[source]
        source: MigrateError,
    },
    #[error("{what} not found")]
    NotFound { what: String },
    #[error("{what}")]
    Conflict { what: String },
    #[error("database error while {action}: {source}")]
    Sql {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

pub(crate) fn sql(action: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Sql { action, source }
}

impl Db {
    /// Opens (creating if needed) the database at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_owned(),
            source,
        };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(open_err)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .map_err(open_err)?;
        MIGRATOR.run(&pool).await.map_err(|source| match source {
            MigrateError::VersionMissing(version) => DbError::NewerSchema {
                path: path.to_owned(),
                version,
            },
            MigrateError::Execute(source) if is_not_a_database(&source) => DbError::Open {
                path: path.to_owned(),
                source,
            },
            source => DbError::Migrate {
                path: path.to_owned(),
                source,
            },
        })?;
        Ok(Db {
            pool,
            path: path.to_owned(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits for every connection to finish and closes the pool (checkpointing the WAL).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A trivial query, for health checks.
    pub async fn ping(&self) -> Result<(), DbError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(sql("checking the database"))?;
        Ok(())
    }

    /// The versions of the migrations applied to this database, in order.
    pub async fn applied_migrations(&self) -> Result<Vec<i64>, DbError> {
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&self.pool)
            .await
            .map_err(sql("listing applied migrations"))
    }

    /// This daemon's id: made once, when the database is new, and kept for its lifetime.
    pub async fn daemon_id(&self) -> Result<String, DbError> {
        let fresh = uuid::Uuid::new_v4().simple().to_string();
        sqlx::query("INSERT INTO settings (key, value) VALUES ('daemon_id', ?) ON CONFLICT (key) DO NOTHING")
            .bind(&fresh)
            .execute(&self.pool)
            .await
            .map_err(sql("storing the daemon id"))?;
        sqlx::query_scalar("SELECT value FROM settings WHERE key = 'daemon_id'")
            .fetch_one(&self.pool)
            .await
            .map_err(sql("reading the daemon id"))
    }

    /// Appends one event to the event log.
    /// Events after `after_id` (oldest first), within [since, until) in unix nanoseconds.
    pub async fn events_after(
        &self,
        after_id: i64,
        since_nano: Option<i64>,
        until_nano: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Event>, DbError> {
        let rows: Vec<(i64, i64, String, String, String, String)> = sqlx::query_as(
            "SELECT id, time_nano, type, action, actor_id, attributes FROM events \
             WHERE id > ?1 AND (?2 IS NULL OR time_nano >= ?2) AND (?3 IS NULL OR time_nano < ?3) \
             ORDER BY id LIMIT ?4",
        )
        .bind(after_id)
        .bind(since_nano)
        .bind(until_nano)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("reading events"))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, time_nano, kind, action, actor_id, attributes)| Event {
                    id,
                    time_nano,
                    kind,
                    action,
                    actor_id,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                },
            )
            .collect())
    }

    pub async fn record_event(&self, event: &NewEvent<'_>) -> Result<Event, DbError> {
        let time_nano = now_nanos();
        let attributes = serde_json::to_string(&event.attributes).expect("a string map serializes");
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO events (time_nano, type, action, actor_id, attributes) VALUES (?, ?, ?, ?, ?) RETURNING id",
        )
        .bind(time_nano)
        .bind(event.kind)
        .bind(event.action)
        .bind(event.actor_id)
        .bind(&attributes)
        .fetch_one(&self.pool)
        .await
        .map_err(sql("recording an event"))?;
        Ok(Event {
            id,
            time_nano,
            kind: event.kind.to_owned(),
            action: event.action.to_owned(),
            actor_id: event.actor_id.to_owned(),
            attributes: event.attributes.clone(),
        })
    }

    /// Drops the events recorded before `before_nano` (unix nanoseconds); how many.
    pub async fn prune_events(&self, before_nano: i64) -> Result<u64, DbError> {
        sqlx::query("DELETE FROM events WHERE time_nano < ?")
            .bind(before_nano)
            .execute(&self.pool)
            .await
            .map(|r| r.rows_affected())
            .map_err(sql("dropping old events"))
    }

    /// The most recent events, newest first.
    pub async fn recent_events(&self, limit: u32) -> Result<Vec<Event>, DbError> {
        let rows: Vec<(i64, i64, String, String, String, String)> = sqlx::query_as(
            "SELECT id, time_nano, type, action, actor_id, attributes FROM events ORDER BY id DESC LIMIT ?",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing events"))?;
        Ok(rows
            .into_iter()
            .map(
                |(id, time_nano, kind, action, actor_id, attributes)| Event {
                    id,
                    time_nano,
                    kind,
                    action,
                    actor_id,
                    attributes: serde_json::from_str(&attributes).unwrap_or_default(),
                },
            )
            .collect())
    }

    /// How many records of each kind the database holds.
    pub async fn counts(&self) -> Result<Counts, DbError> {
        let events: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
            .fetch_one(&self.pool)
            .await
            .map_err(sql("counting events"))?;
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
            .fetch_one(&self.pool)
            .await
            .map_err(sql("counting users"))?;
        Ok(Counts {
            events: events as u64,
            users: users as u64,
        })
    }
}

fn is_not_a_database(error: &sqlx::Error) -> bool {
    // SQLITE_NOTADB = 26
    matches!(error, sqlx::Error::Database(e) if e.code().as_deref() == Some("26"))
}

pub(crate) fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// An event to append; `kind` is the event type (`daemon`, `container`, …).
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub kind: &'a str,
    pub action: &'a str,
    pub actor_id: &'a str,
    pub attributes: BTreeMap<String, String>,
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Event {
    pub id: i64,
    pub time_nano: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub action: String,
    pub actor_id: String,
    pub attributes: BTreeMap<String, String>,
}

/// Record counts reported by `system/info`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct Counts {
    pub events: u64,
    /// Users and robots.
    pub users: u64,
}

#[cfg(test)]
mod event_tests {
    use super::*;

    #[tokio::test]
    async fn events_before_the_horizon_are_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("wharf.db")).await.unwrap();
        let event = NewEvent {
            kind: "container",
            action: "start",
            actor_id: "c1",
            attributes: BTreeMap::new(),
        };
        let old = db.record_event(&event).await.unwrap();
        let horizon = now_nanos();
        let new = db.record_event(&event).await.unwrap();
        assert_eq!(db.prune_events(horizon).await.unwrap(), 1);
        let left: Vec<i64> = db
            .recent_events(10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(left, [new.id]);
        assert_ne!(old.id, new.id);
    }
}
