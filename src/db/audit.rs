//! The audit log: append-only (enforced by triggers in the schema), never holding a secret.

use serde::Serialize;
use sqlx::SqliteConnection;
use utoipa::ToSchema;

use super::{Db, DbError, now_nanos, sql};

/// One entry to append. Callers that change state pass it to the changing function, which writes
/// it in the same transaction; refusals and failed logins are recorded on their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub actor: String,
    pub via: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: Outcome,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Denied,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Denied => "denied",
            Outcome::Failed => "failed",
        }
    }
}

/// A stored entry.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema, sqlx::FromRow)]
pub struct AuditEntry {
    pub id: i64,
    pub time_nano: i64,
    pub actor: String,
    pub via: String,
    pub source: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
}

/// Which entries to list; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    /// An exact action, or a prefix ending in `.` (e.g. `user.`).
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    pub target: Option<String>,
    pub since_nano: Option<i64>,
    pub until_nano: Option<i64>,
    pub limit: u32,
}

pub(super) async fn insert_audit(
    conn: &mut SqliteConnection,
    record: &AuditRecord,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO audit_log (time_nano, actor, via, source, action, target, outcome, detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(now_nanos())
    .bind(&record.actor)
    .bind(&record.via)
    .bind(&record.source)
    .bind(&record.action)
    .bind(&record.target)
    .bind(record.outcome.as_str())
    .bind(&record.detail)
    .execute(conn)
    .await
    .map_err(sql("writing the audit log"))?;
    Ok(())
}

impl Db {
    /// Appends an entry that accompanies no change (a refusal, a failed login).
    pub async fn record_audit(&self, record: &AuditRecord) -> Result<(), DbError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(sql("writing the audit log"))?;
        insert_audit(&mut conn, record).await
    }

    /// Entries matching `filter`, newest first.
    pub async fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditEntry>, DbError> {
        let action_prefix = filter
            .action
            .as_ref()
            .filter(|a| a.ends_with('.'))
            .map(|a| format!("{}%", a.replace('%', "").replace('_', "\\_")));
        let action_exact = filter.action.as_ref().filter(|a| !a.ends_with('.'));
        sqlx::query_as::<_, AuditEntry>(
            "SELECT id, time_nano, actor, via, source, action, target, outcome, detail FROM audit_log \
             WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR action = ?2) \
             AND (?3 IS NULL OR action LIKE ?3 ESCAPE '\\') AND (?4 IS NULL OR outcome = ?4) \
             AND (?5 IS NULL OR target = ?5) AND (?6 IS NULL OR time_nano >= ?6) AND (?7 IS NULL OR time_nano < ?7) \
             ORDER BY id DESC LIMIT ?8",
        )
        .bind(&filter.actor)
        .bind(action_exact)
        .bind(action_prefix)
        .bind(filter.outcome.map(Outcome::as_str))
        .bind(&filter.target)
        .bind(filter.since_nano)
        .bind(filter.until_nano)
        .bind(filter.limit)
        .fetch_all(&self.pool)
        .await
        .map_err(sql("listing the audit log"))
    }
}
