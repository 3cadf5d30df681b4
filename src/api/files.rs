//! `/api/v1/containers/{id}/archive`, `/export` and `/changes`: files into and out of a
//! container (`cp`), its whole filesystem (`export`) and what changed (`diff`). The work is
//! the engine's archive module's; this layer streams it.

use axum::Json;
use axum::extract::{Path, Query, Request, State};
use axum::response::Response;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ErrorBody};
use super::stream::{ChannelReader, tar_response};
use crate::auth::{Action, Caller, Target};
use crate::engine::archive::{self, ArchiveError, Change, Owners, PathStat};
use crate::startup::AppState;

pub(super) fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(archive_get, archive_put))
        .routes(routes!(archive_stat))
        .routes(routes!(export))
        .routes(routes!(changes))
}

impl From<ArchiveError> for ApiError {
    fn from(e: ArchiveError) -> Self {
        match e {
            ArchiveError::NotFound { .. } => ApiError::Missing(e.to_string()),
            ArchiveError::Path { .. } | ArchiveError::Tar(_) => ApiError::BadRequest(e.to_string()),
            ArchiveError::Io(_) => ApiError::Internal(e.to_string()),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
struct PathQuery {
    /// A path inside the container (links resolve inside it).
    path: String,
    /// Keep the archive's owners (`cp -a`) instead of making root the owner.
    #[serde(default)]
    copy_uid_gid: bool,
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::Internal(format!("a copy task failed: {e}")))?
        .map_err(ApiError::from)
}

/// What a path in the container is (for `cp` to decide where a copy goes).
#[utoipa::path(get, path = "/containers/{id}/archive/stat", tag = "containers", params(PathQuery),
    responses((status = 200, body = PathStat), (status = 404, body = ErrorBody)))]
async fn archive_stat(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Json<PathStat>, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    let files = state.engine.files(&id, true).await?;
    Ok(Json(
        blocking(move || archive::stat(&files.root, std::path::Path::new(&q.path))).await?,
    ))
}

/// A path of the container as a tar (its own name at the top), running or not.
#[utoipa::path(get, path = "/containers/{id}/archive", tag = "containers", params(PathQuery),
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn archive_get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    let files = state.engine.files(&id, true).await?;
    let path = std::path::PathBuf::from(&q.path);
    // A missing path is refused before the answer starts, while it can still be a 404.
    let (files, path) = blocking(move || {
        archive::stat(&files.root, &path)?;
        Ok((files, path))
    })
    .await?;
    Ok(tar_response(move |out| {
        archive::write_tar(&files.root, &path, out).map_err(|e| e.to_string())
    }))
}

/// Unpacks a tar into a directory of the container, running or not.
#[utoipa::path(put, path = "/containers/{id}/archive", tag = "containers", params(PathQuery),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 200, description = "how many entries were written"), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn archive_put(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PathQuery>,
    request: Request,
) -> Result<Json<serde_json::Value>, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    let files = state.engine.files(&id, true).await?;
    let reader = ChannelReader::of(request.into_body());
    let owners = if q.copy_uid_gid {
        Owners::Keep
    } else {
        Owners::Root
    };
    let path = std::path::PathBuf::from(&q.path);
    let count = blocking(move || archive::extract_tar(&files.root, &path, reader, owners)).await?;
    Ok(Json(serde_json::json!({"entries": count})))
}

/// The container's filesystem (without its volumes) as a tar, as `docker export` gives it.
#[utoipa::path(get, path = "/containers/{id}/export", tag = "containers",
    responses((status = 200, content_type = "application/x-tar", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    caller
        .require(Action::ContainerExec, &Target::Container(id.clone()))
        .await?;
    let files = state.engine.files(&id, false).await?;
    Ok(tar_response(move |out| {
        archive::write_tar(&files.root, std::path::Path::new("/"), out).map_err(|e| e.to_string())
    }))
}

/// What changed in the container's filesystem against its image (`C`, `A`, `D`).
#[utoipa::path(get, path = "/containers/{id}/changes", tag = "containers",
    responses((status = 200, body = [Change]), (status = 404, body = ErrorBody)))]
async fn changes(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Vec<Change>>, ApiError> {
    caller
        .require(Action::ContainerRead, &Target::Container(id.clone()))
        .await?;
    Ok(Json(state.engine.changes(&id).await?))
}
