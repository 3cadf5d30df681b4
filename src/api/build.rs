//! `POST /api/v1/build`: a Dockerfile build of the context tar in the request body, its log
//! streamed back as NDJSON.

use axum::extract::{Query, Request, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::mpsc;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::auth::caller_audit;
use super::error::{ApiError, ErrorBody};
use super::images::{line, ndjson};
use super::stream::ChannelReader;
use crate::auth::{Action, Caller, Target};
use crate::builder::steps::{BuildRequest, Builder, Log};
use crate::domain::ImageRef;
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(build))
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct BuildQuery {
    /// Names for the image, comma-separated `name[:tag]`s.
    pub t: Option<String>,
    /// The Dockerfile's path in the context (default `Dockerfile`).
    pub dockerfile: Option<String>,
    /// `ARG` values as a JSON object of strings.
    pub buildargs: Option<String>,
    /// Run every step without the cache.
    #[serde(default)]
    pub nocache: bool,
    /// The stage to build up to.
    pub target: Option<String>,
}

/// Builds an image from the context tar in the body (which holds the Dockerfile). The answer
/// streams `{"stream": text}` lines (the steps and their output), then
/// `{"status":"built","digest":…,"tags":[…]}`, or `{"error": …}` naming the failed line.
#[utoipa::path(post, path = "/build", tag = "images", params(BuildQuery), request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, description = "NDJSON build log", content_type = "application/x-ndjson"), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody)))]
async fn build(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<BuildQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    let tags: Vec<String> =
        q.t.as_deref()
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
    for tag in &tags {
        ImageRef::parse(tag)?;
    }
    let target = if tags.is_empty() {
        "*".to_owned()
    } else {
        tags.join(",")
    };
    for tag in tags
        .iter()
        .map(String::as_str)
        .chain(tags.is_empty().then_some("*"))
    {
        caller
            .require(Action::ImageBuild, &Target::Image(tag.to_owned()))
            .await?;
    }
    let build_args = match &q.buildargs {
        Some(text) if !text.is_empty() => serde_json::from_str(text).map_err(|e| {
            ApiError::BadRequest(format!("buildargs must be a JSON object of strings: {e}"))
        })?,
        _ => Default::default(),
    };
    let request_body = BuildRequest {
        tags,
        dockerfile: q.dockerfile.clone(),
        build_args,
        no_cache: q.nocache,
        target: q.target.clone(),
    };
    let reader = ChannelReader::of(request.into_body());
    let (out_tx, out_rx) = mpsc::unbounded_channel();
    let (log_tx, mut log_rx) = mpsc::unbounded_channel::<serde_json::Value>();
    // The log's lines go out as they come. When the client goes away (the answer's stream is
    // dropped), this task ends and drops the log's receiver: the builder sees that within a
    // tenth of a second, even while a step prints nothing, and stops its container.
    let forward = out_tx.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                value = log_rx.recv() => {
                    let Some(value) = value else { break };
                    if forward.send(line(value)).is_err() {
                        break;
                    }
                }
                _ = forward.closed() => break,
            }
        }
    });
    tokio::spawn(async move {
        let layout = state.config.layout();
        let builder = Builder {
            engine: &state.engine,
            db: &state.db,
            layout: &layout,
            architecture: &state.host.architecture,
            insecure_registries: &state.config.insecure_registries,
            log: Log(log_tx),
        };
        let result = builder.build(reader, &request_body).await;
        drop(builder);
        let (outcome, detail) = match &result {
            Ok(built) => ("success", format!("{target} {}", built.digest)),
            Err(e) => ("failure", format!("{target}: {e}")),
        };
        let mut record = caller_audit(&caller, "image.build", &format!("image:{target}"), &detail);
        if outcome == "failure" {
            record.outcome = crate::db::Outcome::Failed;
        }
        let _ = state.db.record_audit(&record).await;
        // Give the log's last lines a moment to go out before the outcome.
        tokio::task::yield_now().await;
        let _ = out_tx.send(line(match result {
            Ok(built) => serde_json::json!({
                "status": "built",
                "digest": built.digest,
                "tags": built.tags,
                "layer_steps": built.layer_steps,
                "cached_steps": built.cached_steps,
            }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }));
    });
    Ok(ndjson(out_rx))
}
