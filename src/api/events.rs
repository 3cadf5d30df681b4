//! `/api/v1/events`: the event log (container create/start/die/stop/destroy/pause/unpause/
//! rename, image push and delete, daemon start) as NDJSON, a time range or followed live.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use crate::auth::{Action, Caller, Target};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(events))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct EventsQuery {
    /// Events at or after this time (RFC 3339 or unix seconds).
    pub since: Option<String>,
    /// Events before this time; without it the stream stays open for new events.
    pub until: Option<String>,
    /// Only events of this type (`container`, `image`, `daemon`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
}

fn nanos(what: &str, text: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000_000));
    }
    let time = humantime::parse_rfc3339_weak(text).map_err(|e| {
        ApiError::BadRequest(format!(
            "{what} {text:?} is not a time: give RFC 3339 or unix seconds ({e})"
        ))
    })?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64))
}

/// The event log as NDJSON, oldest first; followed live unless `until` is given.
#[utoipa::path(get, path = "/events", tag = "system", params(EventsQuery),
    responses((status = 200, description = "NDJSON events", content_type = "application/x-ndjson"), (status = 400, body = ErrorBody)))]
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<EventsQuery>,
) -> Result<Response, ApiError> {
    caller.require(Action::SystemRead, &Target::System).await?;
    let since = q.since.as_deref().map(|t| nanos("since", t)).transpose()?;
    let until = q.until.as_deref().map(|t| nanos("until", t)).transpose()?;
    let follow = until.is_none();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    let db = state.db.clone();
    let kind = q.kind;
    tokio::spawn(async move {
        let mut last = 0;
        loop {
            let Ok(batch) = db.events_after(last, since, until, 500).await else {
                return;
            };
            let full = batch.len() == 500;
            for event in batch {
                last = event.id;
                if kind.as_deref().is_some_and(|k| k != event.kind) {
                    continue;
                }
                let line = format!(
                    "{}\n",
                    serde_json::to_string(&event).expect("events serialize")
                );
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if full {
                continue;
            }
            if !follow {
                return;
            }
            if tx.is_closed() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
        .into_response())
}
