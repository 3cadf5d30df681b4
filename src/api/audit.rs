//! `/api/v1/audit`: the audit log, filtered, as JSON or CSV (admins).

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::db::{AuditEntry, AuditFilter, Outcome};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct AuditQuery {
    pub actor: Option<String>,
    /// An action (`user.create`) or a prefix ending in `.` (`user.`).
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    pub target: Option<String>,
    /// RFC 3339 time or unix seconds.
    pub since: Option<String>,
    /// RFC 3339 time or unix seconds.
    pub until: Option<String>,
    /// At most this many entries (default 100, at most 10000).
    pub limit: Option<u32>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
        return Ok(None);
    };
    if let Ok(secs) = v.parse::<i64>() {
        return Ok(Some(secs.saturating_mul(1_000_000_000)));
    }
    let time = humantime::parse_rfc3339_weak(v).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid {name} {v:?}: {e} (use RFC 3339 or unix seconds)"
        ))
    })?;
    let nanos = time
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| ApiError::BadRequest(format!("invalid {name} {v:?}: before 1970")))?
        .as_nanos();
    Ok(Some(nanos.min(i64::MAX as u128) as i64))
}

/// Entries of the audit log, newest first.
#[utoipa::path(get, path = "/audit", tag = "audit", params(AuditQuery),
    responses((status = 200, body = Vec<AuditEntry>, description = "JSON, or text/csv with format=csv"), (status = 403, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<AuditQuery>,
) -> Result<Response, ApiError> {
    caller.require(Action::AuditRead, &Target::Audit).await?;
    let csv = match q.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid format {other:?}: use json or csv"
            )));
        }
    };
    let filter = AuditFilter {
        actor: q.actor,
        action: q.action,
        outcome: q.outcome,
        target: q.target,
        since_nano: parse_time("since", q.since.as_deref())?,
        until_nano: parse_time("until", q.until.as_deref())?,
        limit: q.limit.unwrap_or(100).clamp(1, 10_000),
    };
    let entries = state.db.list_audit(&filter).await?;
    if !csv {
        return Ok(Json(entries).into_response());
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"wharf-audit.csv\"",
            ),
        ],
        to_csv(&entries),
    )
        .into_response())
}

/// RFC 4180 CSV with a header row. Cells starting with `=`, `+`, `-` or `@` get a leading `'` so a
/// spreadsheet does not run them as formulas.
pub fn to_csv(entries: &[AuditEntry]) -> String {
    fn cell(value: &str) -> String {
        let value = if value.starts_with(['=', '+', '-', '@']) && value != "-" {
            format!("'{value}")
        } else {
            value.to_owned()
        };
        if value.contains([',', '"', '\n', '\r']) {
            format!("\"{}\"", value.replace('"', "\"\""))
        } else {
            value
        }
    }
    let mut out = String::from("id,time,actor,via,source,action,target,outcome,detail\r\n");
    for e in entries {
        let secs = (e.time_nano / 1_000_000_000).max(0) as u64;
        let time = humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        );
        let row = [
            e.id.to_string(),
            time.to_string(),
            e.actor.clone(),
            e.via.clone(),
            e.source.clone(),
            e.action.clone(),
            e.target.clone(),
            e.outcome.clone(),
            e.detail.clone(),
        ];
        out.push_str(&row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_defuses_formulas() {
        let e = AuditEntry {
            id: 1,
            time_nano: 1_700_000_000_000_000_000,
            actor: "alice".into(),
            via: "session".into(),
            source: "127.0.0.1".into(),
            action: "user.create".into(),
            target: "user:bob".into(),
            outcome: "ok".into(),
            detail: "=HYPERLINK(\"x\"), more".into(),
        };
        let csv = to_csv(&[e]);
        assert_eq!(
            csv,
            "id,time,actor,via,source,action,target,outcome,detail\r\n\
             1,2023-11-14T22:13:20Z,alice,session,127.0.0.1,user.create,user:bob,ok,\"'=HYPERLINK(\"\"x\"\"), more\"\r\n"
        );
    }
}
